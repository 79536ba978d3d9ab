//! `nn.Embedding` with PyTorch's `padding_idx`: the padding row is used in the forward pass
//! but receives no gradient.

use candle_core::Tensor;

use super::params::{Init, ParamBuilder};
use crate::error::Result;

#[derive(Clone)]
pub struct Embedding {
    weight: Tensor,
    padding_idx: Option<u32>,
}

impl Embedding {
    pub fn new(
        vb: &ParamBuilder,
        num: usize,
        dim: usize,
        std: f64,
        padding_idx: Option<u32>,
    ) -> Result<Self> {
        let init = Init::Normal {
            std,
            zero_row: padding_idx.map(|p| p as usize),
        };
        let weight = vb.get((num, dim), "weight", init)?;
        Ok(Embedding {
            weight,
            padding_idx,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// ids (...) u32 -> (..., dim)
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let dim = self.weight.dim(1)?;
        let flat = ids.flatten_all()?;
        let mut rows = self.weight.index_select(&flat, 0)?; // (n, dim)
        if let Some(pad) = self.padding_idx.filter(|_| self.weight.track_op()) {
            // Same values, but padding positions take the detached copy: no gradient to that row.
            let keep = flat.ne(pad)?.unsqueeze(1)?.broadcast_as(rows.shape())?;
            rows = keep.where_cond(&rows, &rows.detach())?;
        }
        let mut out_dims = ids.dims().to_vec();
        out_dims.push(dim);
        Ok(rows.reshape(out_dims)?)
    }
}
