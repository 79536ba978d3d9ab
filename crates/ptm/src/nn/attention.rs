//! Scaled dot-product attention and the masks it takes.

use candle_core::{DType, Tensor};

use super::dropout::{Mode, dropout};
use super::ops::softmax_last_dim;
use crate::error::Result;

/// softmax(Q Kᵀ · scale + mask) V.
///
/// q (batch, heads, q_len, head_dim), k and v (batch, heads, k_len, head_dim), `mask` an
/// additive bias broadcastable to (batch, heads, q_len, k_len) (0 where attending, a large
/// negative number where not). Dropout on the attention probabilities in train mode.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    dropout_p: f64,
    mode: Mode,
) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?; // (b, h, q, k)
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = dropout(&softmax_last_dim(&scores)?, dropout_p, mode)?;
    Ok(probs.matmul(v)?) // (b, h, q, head_dim)
}

/// The additive padding bias from an attention mask (batch, seq) of 1 (token) and 0 (padding):
/// (batch, 1, 1, seq), 0 or the dtype's minimum, as transformers builds it.
pub fn padding_mask_bias(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = attention_mask.dims2()?;
    let min = match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.389_531_4e38,
        DType::F64 => f64::MIN,
        _ => f64::from(f32::MIN),
    };
    // keep · (-min) + min: exactly 0 for tokens, min for padding.
    let bias = attention_mask.to_dtype(dtype)?.affine(-min, min)?;
    Ok(bias.reshape((b, 1, 1, s))?)
}

/// Splits (batch, seq, heads · head_dim) into (batch, heads, seq, head_dim).
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    Ok(x.reshape((b, s, heads, d / heads))?.transpose(1, 2)?.contiguous()?)
}

/// Merges (batch, heads, seq, head_dim) back into (batch, seq, heads · head_dim).
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, s, h * d))?)
}
