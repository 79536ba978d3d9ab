//! Scaled dot-product attention and the masks it takes.

use candle_core::{D, DType, Tensor};

use std::sync::Arc;

use super::dropout::{Mode, dropout};
use super::fused_attention::{FusedAttention, MaskBias};
use super::ops::softmax_last_dim;
use crate::error::Result;

/// softmax(Q Kᵀ · scale + mask) V.
///
/// q (batch, heads, q_len, head_dim), k and v (batch, heads, k_len, head_dim), `mask` an
/// additive bias broadcastable to (batch, heads, q_len, k_len) (0 where attending, a large
/// negative number where not). Dropout on the attention probabilities in train mode.
/// A query that may attend to no key at all (a left-padding position under a causal mask)
/// gets a zero output, as PyTorch's `scaled_dot_product_attention` (transformers' default)
/// gives it.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    dropout_p: f64,
    mode: Mode,
) -> Result<Tensor> {
    if let Some(out) = fused(q, k, v, mask, scale, dropout_p, mode)? {
        return Ok(out);
    }
    let scores = (q.matmul(&k.t()?)? * scale)?; // (b, h, q, k)
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let mut probs = dropout(&softmax_last_dim(&scores)?, dropout_p, mode)?;
    if let Some(m) = mask {
        // Visible keys have bias exactly 0, hidden ones the dtype's minimum.
        let any_visible = m.max_keepdim(D::Minus1)?.ge(-1.0)?; // (b, 1, q, 1)
        if any_visible.flatten_all()?.min(0)?.to_scalar::<u8>()? == 0 {
            probs = probs.broadcast_mul(&any_visible.to_dtype(probs.dtype())?)?;
        }
    }
    Ok(probs.matmul(v)?) // (b, h, q, head_dim)
}

/// The fused CPU kernel for f32 (`fused_attention`), or None where it does not apply.
fn fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    dropout_p: f64,
    mode: Mode,
) -> Result<Option<Tensor>> {
    if !(super::kernels::fusable(q) && super::kernels::fusable(k) && super::kernels::fusable(v)) {
        return Ok(None);
    }
    let (b, h, q_len, _) = q.dims4()?;
    let k_len = k.dim(2)?;
    let mask = match mask {
        Some(m) => match MaskBias::new(m, b, q_len, k_len)? {
            Some(m) => Some(m),
            None => return Ok(None),
        },
        None => None,
    };
    let dropout = match mode {
        // The same draws, in the same order, as `dropout` on the (b, h, q, k) probabilities.
        Mode::Train(rng) if dropout_p > 0.0 => {
            Some(Arc::new(rng.mask(b * h * q_len * k_len, dropout_p)))
        }
        _ => None,
    };
    let op = FusedAttention {
        scale: scale as f32,
        mask,
        dropout,
    };
    Ok(Some(q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        op,
    )?))
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
    Ok(x.reshape((b, s, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Merges (batch, heads, seq, head_dim) back into (batch, seq, heads · head_dim).
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, s, h * d))?)
}

/// Keys and values of the positions already processed, per layer, so a decoder computes each
/// new token's attention without recomputing the prefix.
#[derive(Clone, Default)]
pub struct KvCache {
    /// Per layer: keys and values (batch, heads, seq, head_dim).
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
        }
    }

    /// Positions cached so far.
    pub fn seq_len(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.dim(2).unwrap_or(0))
            .unwrap_or(0)
    }

    /// Appends this step's keys and values for `layer`; returns all of them.
    pub fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if layer >= self.layers.len() {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Keeps, in order, the batch rows `rows` (beam search reorders its beams this way).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for entry in self.layers.iter_mut().flatten() {
            *entry = (
                entry.0.index_select(rows, 0)?,
                entry.1.index_select(rows, 0)?,
            );
        }
        Ok(())
    }
}

/// The additive causal + padding bias (batch, 1, q_len, past + q_len): query i (at absolute
/// position past + i) sees key j when j <= past + i and key j is not padding.
/// `attention_mask` (batch, past + q_len) holds 1 for tokens and 0 for padding.
pub fn causal_mask_bias(
    batch: usize,
    q_len: usize,
    past: usize,
    attention_mask: Option<&Tensor>,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let k_len = past + q_len;
    let keep: Vec<u32> = match attention_mask {
        Some(m) => {
            let (b, k) = m.dims2()?;
            if b != batch || k != k_len {
                return Err(crate::Error::invalid(format!(
                    "attention mask is {b} x {k}, expected {batch} x {k_len} (cached + new positions)"
                )));
            }
            m.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?
        }
        None => vec![1; batch * k_len],
    };
    // The dtype's most negative value, as transformers uses (f16's is far above f32::MIN).
    let min = if dtype == DType::F16 {
        -65504.0
    } else {
        f32::MIN
    };
    let mut bias = vec![0f32; batch * q_len * k_len];
    for b in 0..batch {
        for i in 0..q_len {
            let row = &mut bias[(b * q_len + i) * k_len..][..k_len];
            for (j, v) in row.iter_mut().enumerate() {
                if j > past + i || keep[b * k_len + j] == 0 {
                    *v = min;
                }
            }
        }
    }
    Ok(Tensor::from_vec(bias, (batch, 1, q_len, k_len), device)?.to_dtype(dtype)?)
}
