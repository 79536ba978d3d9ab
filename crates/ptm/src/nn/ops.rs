//! Differentiable elementwise and reduction ops that candle-nn only has as fused kernels
//! without a backward. They are composites of candle ops with known gradients; keep callers
//! on these functions so faster fused versions can replace them in one place.

use candle_core::{D, Tensor};

use crate::error::Result;

/// Softmax over the last dimension (fused on CPU for f32).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if super::kernels::fusable(x) {
        return Ok(x.contiguous()?.apply_op1(super::kernels::SoftmaxLastDim)?);
    }
    // Subtracting the row max changes nothing mathematically, so its gradient is not needed.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// log(softmax(x)) over the last dimension, computed stably.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// The exact (erf) GELU (fused on CPU for f32).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if super::kernels::fusable(x) {
        return Ok(x
            .contiguous()?
            .apply_op1(super::kernels::Gelu { tanh: false })?);
    }
    Ok(x.gelu_erf()?)
}

/// The tanh-approximated GELU (fused on CPU for f32; candle's `gelu` elsewhere).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if super::kernels::fusable(x) {
        return Ok(x
            .contiguous()?
            .apply_op1(super::kernels::Gelu { tanh: true })?);
    }
    Ok(x.gelu()?)
}

pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

/// `None` when every value of `t` is finite, else a description of what is not ("3
/// non-finite values (the first, NaN, at index 17)"). The common case costs one pass and one sum
/// (x * 0 is 0 for every finite x and NaN otherwise); the values are read only on failure.
pub fn first_non_finite(t: &Tensor) -> Result<Option<String>> {
    let zero = t
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    if zero == 0.0 {
        return Ok(None);
    }
    let values = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    let bad: Vec<(usize, f32)> = values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_finite())
        .collect();
    Ok(bad.first().map(|&(i, v)| {
        let what = if v.is_nan() {
            "NaN".to_string()
        } else {
            format!("{v}")
        };
        match bad.len() {
            1 => format!("a non-finite value ({what} at index {i})"),
            n => format!("{n} non-finite values (the first, {what}, at index {i})"),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn softmax_matches_definition_and_has_a_gradient() {
        let x = Var::new(&[[1.0f32, 2.0, 3.0], [-1.0, 0.0, 1000.0]], &Device::Cpu).unwrap();
        let y = softmax_last_dim(x.as_tensor()).unwrap();
        let v = y.to_vec2::<f32>().unwrap();
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|a| a.exp()).collect();
        let s: f32 = e.iter().sum();
        for (got, want) in v[0].iter().zip(e.iter().map(|a| a / s)) {
            assert!((got - want).abs() < 1e-6);
        }
        assert!((v[1][2] - 1.0).abs() < 1e-6);
        // d/dx of y[0][0]: y0 (1 - y0), -y0 y1, -y0 y2
        let g = y
            .narrow(0, 0, 1)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let y0 = v[0].clone();
        assert!((gx[0][0] - y0[0] * (1.0 - y0[0])).abs() < 1e-6);
        assert!((gx[0][1] + y0[0] * y0[1]).abs() < 1e-6);
    }

    #[test]
    fn log_softmax_is_log_of_softmax() {
        let x = Tensor::new(&[[0.5f32, -2.0, 4.0]], &Device::Cpu).unwrap();
        let a = log_softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        let b = softmax_last_dim(&x)
            .unwrap()
            .log()
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (p, q) in a[0].iter().zip(&b[0]) {
            assert!((p - q).abs() < 1e-5);
        }
    }
}
