//! Sliding-window perplexity of a text under a causal LM, for texts longer than the model's
//! positions.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::models::traits::CausalLm;
use crate::nn::Mode;

/// Sliding-window perplexity, as the transformers documentation computes it: windows of
/// `max_length` tokens advancing by `stride`, each scoring only the tokens it adds.
pub fn perplexity(
    model: &dyn CausalLm,
    ids: &[u32],
    max_length: usize,
    stride: usize,
) -> Result<(f64, usize)> {
    if ids.len() < 2 {
        return Err(Error::invalid(
            "perplexity needs a text of at least two tokens",
        ));
    }
    if max_length < 2 || max_length > model.max_positions() {
        return Err(Error::invalid(format!(
            "the window length must be in 2..={} (the model's positions), got {max_length}",
            model.max_positions()
        )));
    }
    if stride == 0 || stride > max_length {
        return Err(Error::invalid(format!(
            "stride must be in 1..={max_length}, got {stride}"
        )));
    }
    let device = model.device();
    let (mut nll_sum, mut counted, mut prev_end) = (0f64, 0usize, 0usize);
    let mut begin = 0;
    while begin < ids.len() {
        let end = (begin + max_length).min(ids.len());
        let target_len = end - prev_end;
        let window = &ids[begin..end];
        let labels: Vec<i64> = window
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if i + target_len < window.len() {
                    -100
                } else {
                    i64::from(t)
                }
            })
            .collect();
        let n = window.len();
        let input = Tensor::from_vec(window.to_vec(), (1, n), &device)?;
        let labels_t = Tensor::from_vec(labels.clone(), (1, n), &device)?;
        // Weighted as the documentation does: valid labels minus one for the shift.
        let scored = labels
            .iter()
            .filter(|l| **l != -100)
            .count()
            .saturating_sub(1);
        if scored > 0 {
            let loss = model
                .causal_lm_loss(&input, &labels_t, Mode::Eval)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            crate::pipelines::check_finite(
                || format!("perplexity: the loss of the window at tokens {begin}..{end}"),
                &[loss],
            )?;
            nll_sum += loss * scored as f64;
            counted += scored;
        }
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    Ok(((nll_sum / counted as f64).exp(), counted))
}
