//! LayerNorm over the last dimension, differentiable (candle-nn's is a fused op without a
//! backward); fused with its backward on CPU for f32 (`kernels::LayerNormLastDim`).

use candle_core::{D, Tensor};

use super::params::{Init, ParamBuilder};
use crate::error::Result;

#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `weight` and `bias` under `vb` (HF's `LayerNorm` module names).
    pub fn new(vb: &ParamBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(dim, "weight", Init::Ones)?;
        let bias = vb.get(dim, "bias", Init::Zeros)?;
        Ok(LayerNorm { weight, bias, eps })
    }

    /// Like [`LayerNorm::new`] for a task head that the checkpoint may lack.
    pub fn new_head(vb: &ParamBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_or_init(dim, "weight", Init::Ones)?;
        let bias = vb.get_or_init(dim, "bias", Init::Zeros)?;
        Ok(LayerNorm { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// (x - mean) / sqrt(var + eps) · weight + bias, with the biased variance as PyTorch uses.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    use super::kernels::{LayerNormLastDim, fusable};
    if fusable(x) && fusable(weight) && fusable(bias) {
        let op = LayerNormLastDim { eps: eps as f32 };
        return Ok(x
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?);
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(weight)?.broadcast_add(bias)?)
}
