//! Losses with PyTorch's reductions and conventions (mean over counted elements, ignore_index).

use candle_core::{DType, Tensor};

use super::ops::log_softmax_last_dim;
use crate::error::{Error, Result};

/// The label value that cross-entropy skips, as in PyTorch and transformers.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` (n, classes) against `labels` (n) of class indices; labels
/// equal to `ignore_index` do not count. With no counted label the result is NaN, as in PyTorch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, ignore_index: i64) -> Result<Tensor> {
    weighted_cross_entropy(logits, labels, ignore_index, None)
}

/// Cross-entropy with a weight per class, as PyTorch's `weight=`: each row counts with its
/// label's weight and the mean divides by the sum of those weights.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    ignore_index: i64,
    class_weights: Option<&[f32]>,
) -> Result<Tensor> {
    let (n, classes) = logits.dims2()?;
    if let Some(w) = class_weights.filter(|w| w.len() != classes) {
        return Err(Error::invalid(format!(
            "{} class weights for {classes} classes",
            w.len()
        )));
    }
    let labels_host = labels
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    if labels_host.len() != n {
        return Err(Error::invalid(format!(
            "cross_entropy: {n} rows of logits but {} labels",
            labels_host.len()
        )));
    }
    let mut index = Vec::with_capacity(n);
    let mut weight = Vec::with_capacity(n);
    for &l in &labels_host {
        if l == ignore_index {
            index.push(0u32);
            weight.push(0f32);
        } else if (0..classes as i64).contains(&l) {
            index.push(l as u32);
            weight.push(class_weights.map_or(1.0, |w| w[l as usize]));
        } else {
            return Err(Error::invalid(format!("label {l} is outside 0..{classes}")));
        }
    }
    let counted: f32 = weight.iter().sum();
    let device = logits.device();
    if super::kernels::fusable(logits) {
        let labels = index
            .iter()
            .zip(&weight)
            .map(|(&l, &w)| (w != 0.0).then_some(l))
            .collect();
        let op = super::kernels::RowCrossEntropy {
            labels: std::sync::Arc::new(labels),
        };
        let losses = logits.contiguous()?.apply_op1(op)?; // (n), 0 where ignored
        let weight = Tensor::from_vec(weight, n, device)?;
        return Ok(((losses * weight)?.sum_all()? * (1.0 / f64::from(counted)))?);
    }
    let index = Tensor::from_vec(index, (n, 1), device)?;
    let weight = Tensor::from_vec(weight, n, device)?.to_dtype(logits.dtype())?;
    let picked = log_softmax_last_dim(logits)?
        .gather(&index, 1)?
        .squeeze(1)?; // (n)
    Ok(((picked * weight)?.sum_all()? * (-1.0 / f64::from(counted)))?)
}

/// Mean squared error.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((pred - target)?.sqr()?.mean_all()?)
}

/// Mean binary cross-entropy on logits, in the stable form max(x, 0) - x·y + log(1 + e^-|x|).
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let pos = logits.relu()?;
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((pos - (logits * target)?)? + softplus)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_skips_ignored_labels() {
        let d = Device::Cpu;
        let logits =
            Tensor::new(&[[2.0f32, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.5]], &d).unwrap();
        let labels = Tensor::new(&[0i64, IGNORE_INDEX, 1], &d).unwrap();
        let got = cross_entropy(&logits, &labels, IGNORE_INDEX)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lse = |r: [f32; 3]| r.iter().map(|v| v.exp()).sum::<f32>().ln();
        let want = ((lse([2.0, 0.0, -1.0]) - 2.0) + (lse([1.0, 3.0, 0.5]) - 3.0)) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let bad = Tensor::new(&[3i64, 0, 0], &d).unwrap();
        assert!(
            cross_entropy(&logits, &bad, IGNORE_INDEX)
                .unwrap_err()
                .to_string()
                .contains("label 3")
        );
    }

    #[test]
    fn bce_matches_the_naive_formula() {
        let d = Device::Cpu;
        let x = Tensor::new(&[0.3f32, -2.0, 5.0], &d).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 0.0], &d).unwrap();
        let got = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        let want = -((s(0.3)).ln() + (1.0 - s(-2.0)).ln() + (1.0 - s(5.0)).ln()) / 3.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
