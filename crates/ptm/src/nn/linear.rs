//! `nn.Linear`: y = x Wᵀ + b with W stored (out, in), as in PyTorch checkpoints.

use candle_core::Tensor;

use super::params::{Init, ParamBuilder};
use crate::error::Result;

#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `weight` (out, in) and `bias` (out) under `vb`, initialised as HF does: Normal(0, std)
    /// and zeros.
    pub fn new(vb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight", Init::normal(std))?;
        let bias = vb.get(out_dim, "bias", Init::Zeros)?;
        Ok(Linear { weight, bias: Some(bias) })
    }

    /// Like [`Linear::new`] for a task head that the checkpoint may lack.
    pub fn new_head(vb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = vb.get_or_init((out_dim, in_dim), "weight", Init::normal(std))?;
        let bias = vb.get_or_init(out_dim, "bias", Init::Zeros)?;
        Ok(Linear { weight, bias: Some(bias) })
    }

    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// (..., in) -> (..., out), as one GEMM over all leading dimensions.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let (in_dim, lead) = match dims.split_last() {
            Some((last, lead)) => (*last, lead),
            None => return Err(crate::error::Error::invalid("Linear::forward on a scalar")),
        };
        let rows: usize = lead.iter().product();
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?; // (rows, out)
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(self.weight.dim(0)?);
        Ok(y.reshape(out_dims)?)
    }
}
