//! Fused CPU kernels for f32, as candle custom ops with a backward: one pass over memory
//! instead of the five or six of the composite versions, which around candle's fast GEMM is
//! where inference time goes. Other devices and dtypes use the composite versions in `ops`;
//! tests check each kernel against its composite and by finite differences.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Whether `x` can take the fused path.
pub(crate) fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The contiguous f32 data of a kernel input.
pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused kernel input is not contiguous"),
    }
}

/// Rows per parallel task: enough work per task that scheduling stays cheap.
fn rows_per_task(cols: usize) -> usize {
    (16 * 1024 / cols.max(1)).max(1)
}

/// Softmax over the last dimension.
pub(crate) struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "ptm-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let cols = layout.dims().last().copied().unwrap_or(1);
        let mut y = vec![0f32; x.len()];
        let chunk = rows_per_task(cols) * cols;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(yc, xc)| {
                yc.copy_from_slice(xc);
                yc.chunks_mut(cols).for_each(softmax_in_place);
            });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// dx = y ⊙ (g − Σ g⊙y)
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * g.broadcast_sub(&dot)?)?))
    }
}

/// erf for f32 as a rational function of x² (the approximation Eigen and XLA use), clamped
/// to ±4 where erf is 1 to f32 precision; absolute error below 1e-6, and branch-free so
/// loops over it vectorise.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for a in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + a;
    }
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    for b in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + b;
    }
    p / q
}

/// e^x for x ≤ 88 without a libm call, so loops over it vectorise (libm's expf is a call per
/// element): Cephes' expf, range reduction by ln 2, a degree-6 polynomial and the exponent
/// built in the bits; within 2 ulp of `f32::exp`, and exactly 0 where e^x is below f32's
/// normal range (x < -87.3), as a masked score needs.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55;
    let xc = x.clamp(LO, 88.0);
    // n = floor(x / ln 2 + 1/2), without floorf: truncate, then step down for negatives.
    let t = xc * std::f32::consts::LOG2_E + 0.5;
    let mut n = t as i32 as f32;
    n -= (n > t) as i32 as f32;
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5e-1,
    ] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    let scaled = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < LO { 0.0 } else { scaled }
}

/// Σ f(x) over `xs` in eight interleaved partial sums: one f32 accumulator is a serial chain
/// that LLVM may not reorder, eight are a vector register.
#[inline(always)]
pub(crate) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest value of `xs` (−∞ when empty), eight lanes at a time.
#[inline(always)]
pub(crate) fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// Softmax of one row in place: the exponentials in one vectorised pass, then their sum.
#[inline]
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = lane_max(row);
    row.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let inv = 1.0 / lane_sum(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// tanh from [`exp_f32`], absolute error below 1e-6 (1 beyond ±9, as in f32).
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let e = exp_f32(2.0 * x.clamp(-9.0, 9.0));
    (e - 1.0) / (e + 1.0)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

fn map_f32(
    storage: &CpuStorage,
    layout: &Layout,
    f: impl Fn(f32) -> f32 + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = f32_slice(storage, layout)?;
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = f(v);
            }
        });
    Ok((CpuStorage::F32(y), layout.shape().clone()))
}

/// GELU: exact, x · Φ(x) = x/2 · (1 + erf(x/√2)) (transformers' `gelu`), or its tanh
/// approximation, x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³))) (`gelu_new`, `gelu_pytorch_tanh`,
/// `gelu_fast`; GPT-2's activation).
pub(crate) struct Gelu {
    pub tanh: bool,
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        if self.tanh {
            "ptm-gelu-tanh"
        } else {
            "ptm-gelu-erf"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // One instantiation per GELU, so each loop inlines its function and vectorises.
        if self.tanh {
            map_f32(storage, layout, gelu_tanh)
        } else {
            map_f32(storage, layout, gelu_erf)
        }
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(gelu_grad(x, g, self.tanh)?))
    }
}

/// g · GELU'(z), elementwise.
fn gelu_grad(z: &Tensor, g: &Tensor, tanh: bool) -> candle_core::Result<Tensor> {
    let (z, g) = (z.contiguous()?, g.contiguous()?);
    if tanh {
        z.apply_op2_no_bwd(
            &g,
            &ElementwiseGrad {
                name: "ptm-gelu-tanh-grad",
                grad: gelu_tanh_grad,
            },
        )
    } else {
        z.apply_op2_no_bwd(
            &g,
            &ElementwiseGrad {
                name: "ptm-gelu-erf-grad",
                grad: gelu_erf_grad,
            },
        )
    }
}

#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * FRAC_1_SQRT_2))
}

/// g · GELU'(x) = g · (Φ(x) + x φ(x))
#[inline(always)]
fn gelu_erf_grad(x: f32, g: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2));
    let pdf = FRAC_1_SQRT_2PI * exp_f32(-0.5 * x * x);
    g * (cdf + x * pdf)
}

/// √(2/π)
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh_f32(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

/// g · (½(1 + t) + ½ x (1 − t²) √(2/π) (1 + 3 · 0.044715 x²)) with t the tanh above.
#[inline(always)]
fn gelu_tanh_grad(x: f32, g: f32) -> f32 {
    let t = tanh_f32(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x));
    g * (0.5 * (1.0 + t)
        + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x))
}

/// f(x + bias) over rows of x, bias (cols).
fn bias_map(x: &[f32], b: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let cols = b.len();
    let mut y = vec![0f32; x.len()];
    let chunk = rows_per_task(cols) * cols;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(cols).zip(xc.chunks(cols)) {
                yr.iter_mut()
                    .zip(xr)
                    .zip(b)
                    .for_each(|((o, &v), &bias)| *o = f(v + bias));
            }
        });
    y
}

/// A linear layer's bias and GELU in one pass, gelu(x + bias) over rows of x (..., cols) with
/// bias (cols): the FFN's widest tensor is read and written once instead of twice. Backward:
/// dx = g · gelu'(x + bias), dbias = Σ over rows of dx.
pub(crate) struct BiasGelu {
    /// The tanh approximation instead of the exact (erf) GELU.
    pub tanh: bool,
}

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "ptm-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, b) = (f32_slice(xs, xl)?, f32_slice(bs, bl)?);
        let cols = b.len();
        if cols == 0 || xl.dims().last() != Some(&cols) {
            candle_core::bail!("bias + GELU: input {:?}, bias {:?}", xl.dims(), bl.dims());
        }
        // One instantiation per GELU, so each loop inlines its function and vectorises.
        let y = if self.tanh {
            bias_map(x, b, gelu_tanh)
        } else {
            bias_map(x, b, gelu_erf)
        };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dz = gelu_grad(&x.broadcast_add(bias)?, g, self.tanh)?;
        let rows = dz.elem_count() / bias.elem_count();
        let db = dz.reshape((rows, bias.elem_count()))?.sum(0)?;
        Ok((Some(dz), Some(db)))
    }
}

/// An elementwise activation's backward, `grad(x, g)` over inputs and upstream gradients.
struct ElementwiseGrad<F> {
    name: &'static str,
    grad: F,
}

impl<F: Fn(f32, f32) -> f32 + Sync> CustomOp2 for ElementwiseGrad<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(xs, xl)?, f32_slice(gs, gl)?);
        if x.len() != g.len() {
            candle_core::bail!("{}: {} inputs, {} gradients", self.name, x.len(), g.len());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14).zip(g.par_chunks(1 << 14)))
            .for_each(|(oc, (xc, gc))| {
                for ((o, &x), &g) in oc.iter_mut().zip(xc).zip(gc) {
                    *o = (self.grad)(x, g);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// LayerNorm over the last dimension, (x − mean) / √(var + eps) · weight + bias, with the
/// biased variance as PyTorch uses. Inputs: x (..., cols), weight (cols), bias (cols).
pub(crate) struct LayerNormLastDim {
    pub eps: f32,
}

/// Mean and 1/√(var + eps) of one row, in two passes (as accurate as f32 allows).
#[inline]
fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The row length of a LayerNorm whose x has `x_len` elements and last dimension `last`.
fn layer_norm_cols(x_len: usize, last: usize, weight_len: usize) -> candle_core::Result<usize> {
    if last != weight_len || !x_len.is_multiple_of(last.max(1)) {
        candle_core::bail!("layer norm: last dimension {last} but {weight_len} weights");
    }
    Ok(last)
}

impl CustomOp3 for LayerNormLastDim {
    fn name(&self) -> &'static str {
        "ptm-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(bs, bl)?);
        let cols = layer_norm_cols(x.len(), xl.dims().last().copied().unwrap_or(1), w.len())?;
        if b.len() != cols {
            candle_core::bail!("layer norm: {cols} weights but {} biases", b.len());
        }
        let mut y = vec![0f32; x.len()];
        let chunk = rows_per_task(cols) * cols;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(cols).zip(xc.chunks(cols)) {
                    let (mean, rstd) = row_moments(xr, self.eps);
                    for (((o, &v), &w), &b) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *o = (v - mean) * rstd * w + b;
                    }
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grads = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &g.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?; // (rows · cols + 2 · cols): dx, then dweight, then dbias
        let (n, cols) = (x.elem_count(), w.elem_count());
        let dx = grads.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = grads.narrow(0, n, cols)?.reshape(w.shape())?;
        let db = grads.narrow(0, n + cols, cols)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The three LayerNorm gradients in one pass over x and g. With x̂ = (x − mean) · rstd and
/// ĝ = g ⊙ weight: dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), dweight = Σ g ⊙ x̂, dbias = Σ g.
/// The sums over rows are added up per fixed chunk and then in chunk order, so the result does
/// not depend on thread scheduling (exact resume needs bitwise repeatable steps).
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "ptm-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, g) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(gs, gl)?);
        let cols = layer_norm_cols(x.len(), xl.dims().last().copied().unwrap_or(1), w.len())?;
        if g.len() != x.len() {
            candle_core::bail!(
                "layer norm backward: {} inputs, {} gradients",
                x.len(),
                g.len()
            );
        }
        let mut out = vec![0f32; x.len() + 2 * cols];
        let (dx, dwb) = out.split_at_mut(x.len());
        let chunk = rows_per_task(cols) * cols;
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .map(|(dxc, (xc, gc))| {
                let mut sums = vec![0f32; 2 * cols]; // dweight, then dbias
                let mut gw = vec![0f32; cols];
                for ((dxr, xr), gr) in dxc
                    .chunks_mut(cols)
                    .zip(xc.chunks(cols))
                    .zip(gc.chunks(cols))
                {
                    let (mean, rstd) = row_moments(xr, self.eps);
                    let (mut sum_gw, mut sum_gw_xhat) = (0f32, 0f32);
                    for i in 0..cols {
                        let xhat = (xr[i] - mean) * rstd;
                        gw[i] = gr[i] * w[i];
                        sum_gw += gw[i];
                        sum_gw_xhat += gw[i] * xhat;
                        sums[i] += gr[i] * xhat;
                        sums[cols + i] += gr[i];
                    }
                    let (mean_gw, mean_gw_xhat) = (sum_gw / cols as f32, sum_gw_xhat / cols as f32);
                    for i in 0..cols {
                        let xhat = (xr[i] - mean) * rstd;
                        dxr[i] = rstd * (gw[i] - mean_gw - xhat * mean_gw_xhat);
                    }
                }
                sums
            })
            .collect();
        for sums in &partial {
            dwb.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * cols)))
    }
}

/// Per-row cross-entropy of logits (rows, classes): logsumexp(row) − row[label], 0 for rows
/// whose label is `None` (ignored). Two passes over each row, which stays in cache, instead of
/// the composite log-softmax's passes over the whole (rows × vocabulary) tensor.
pub(crate) struct RowCrossEntropy {
    pub labels: std::sync::Arc<Vec<Option<u32>>>,
}

impl CustomOp1 for RowCrossEntropy {
    fn name(&self) -> &'static str {
        "ptm-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let cols = layout.dims().last().copied().unwrap_or(1);
        if x.len() != self.labels.len() * cols {
            candle_core::bail!(
                "cross-entropy: {} rows of logits but {} labels",
                x.len() / cols.max(1),
                self.labels.len()
            );
        }
        let mut loss = vec![0f32; self.labels.len()];
        loss.par_iter_mut()
            .zip(x.par_chunks(cols))
            .zip(self.labels.par_iter())
            .for_each(|((o, row), label)| {
                if let Some(l) = label {
                    let max = lane_max(row);
                    let sum = lane_sum(row, |v| exp_f32(v - max));
                    *o = max + sum.ln() - row[*l as usize];
                }
            });
        Ok((CpuStorage::F32(loss), Shape::from(self.labels.len())))
    }

    /// d row / d logits = softmax(row) − onehot(label), times the row's upstream gradient.
    fn bwd(&self, x: &Tensor, loss: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = RowCrossEntropyGrad {
            labels: self.labels.clone(),
        };
        let lg = Tensor::stack(&[loss, g], 1)?; // (rows, 2): loss, upstream gradient
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&lg, &op)?))
    }
}

struct RowCrossEntropyGrad {
    labels: std::sync::Arc<Vec<Option<u32>>>,
}

impl CustomOp2 for RowCrossEntropyGrad {
    fn name(&self) -> &'static str {
        "ptm-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ls: &CpuStorage,
        ll: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, lg) = (f32_slice(xs, xl)?, f32_slice(ls, ll)?);
        let cols = xl.dims().last().copied().unwrap_or(1);
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(cols)
            .zip(x.par_chunks(cols))
            .enumerate()
            .for_each(|(i, (d, row))| {
                if let Some(l) = self.labels[i] {
                    let (loss, g) = (lg[2 * i], lg[2 * i + 1]);
                    // logsumexp = loss + the label's logit
                    let lse = loss + row[l as usize];
                    for (o, &v) in d.iter_mut().zip(row) {
                        *o = g * exp_f32(v - lse);
                    }
                    d[l as usize] -= g;
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grid() -> Vec<f32> {
        (-1200..=1200).map(|i| i as f32 * 0.005).collect()
    }

    #[test]
    fn exp_and_tanh_are_accurate() {
        for i in -8800..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            let rel = (got - want).abs() / want;
            assert!(
                rel < 2.5e-7 || (x < -87.3 && got == 0.0),
                "exp({x}): {got} vs {want}"
            );
        }
        assert_eq!(exp_f32(-1e30), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let (got, want) = (tanh_f32(x) as f64, (x as f64).tanh());
            assert!((got - want).abs() < 1e-6, "tanh({x}): {got} vs {want}");
        }
    }

    #[test]
    fn erf_is_accurate() {
        // Reference: erf from its Taylor series in f64 (exact enough for |x| <= 6).
        let erf64 = |x: f64| -> f64 {
            if x.abs() > 5.0 {
                return x.signum();
            }
            let (mut term, mut sum, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        let worst = grid()
            .iter()
            .map(|&x| (erf_f32(x) as f64 - erf64(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "max erf error {worst:e}");
    }

    fn composite_softmax(x: &Tensor) -> Tensor {
        let e = x
            .broadcast_sub(&x.max_keepdim(D::Minus1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Forward and gradient of a fused op against the composite version, with a random
    /// upstream gradient (a weighted sum of the outputs).
    fn check(
        fused: impl Fn(&Tensor) -> Tensor,
        composite: impl Fn(&Tensor) -> Tensor,
        shape: (usize, usize, usize),
    ) {
        let d = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, shape, &d).unwrap())).unwrap();
        let w = Tensor::randn(0f32, 1.0, shape, &d).unwrap();
        let (a, b) = (fused(x.as_tensor()), composite(x.as_tensor()));
        assert!(max_diff(&a, &b) < 1e-6, "forward {}", max_diff(&a, &b));
        let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(ga, gb) < 1e-5, "gradient {}", max_diff(ga, gb));
    }

    #[test]
    fn fused_softmax_equals_composite() {
        check(
            |x| x.apply_op1(SoftmaxLastDim).unwrap(),
            composite_softmax,
            (3, 37, 129),
        );
    }

    #[test]
    fn fused_gelu_equals_candle_gelu_erf() {
        check(
            |x| x.apply_op1(Gelu { tanh: false }).unwrap(),
            |x| x.gelu_erf().unwrap(),
            (2, 50, 41),
        );
    }

    #[test]
    fn fused_gelu_tanh_equals_candle_gelu() {
        check(
            |x| x.apply_op1(Gelu { tanh: true }).unwrap(),
            |x| x.gelu().unwrap(),
            (2, 50, 41),
        );
    }

    #[test]
    fn softmax_gradient_matches_finite_differences() {
        let x0 = [0.3f32, -1.2, 2.0, 0.7, -0.4];
        let w = Tensor::new(&[1.0f32, -2.0, 0.5, 3.0, -1.0], &Device::Cpu).unwrap();
        // f(x) = Σ w ⊙ softmax(x)
        let f = |x: &[f32]| -> f64 {
            let t = Tensor::new(x, &Device::Cpu)
                .unwrap()
                .apply_op1(SoftmaxLastDim)
                .unwrap();
            (t * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let v = Var::new(&x0, &Device::Cpu).unwrap();
        let y = v.as_tensor().apply_op1(SoftmaxLastDim).unwrap();
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let analytic = g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for i in 0..x0.len() {
            let (mut up, mut down) = (x0, x0);
            up[i] += 1e-2;
            down[i] -= 1e-2;
            let numeric = (f(&up) - f(&down)) / 2e-2;
            assert!(
                (numeric - analytic[i] as f64).abs() < 1e-3,
                "d/dx{i}: {numeric} vs {}",
                analytic[i]
            );
        }
    }

    fn gelu_gradient_matches_finite_differences(op: impl Fn() -> Box<dyn Fn(&Tensor) -> Tensor>) {
        let h = 1e-2f64;
        for x in [-3.0f64, -1.0, -0.2, 0.0, 0.3, 1.5, 3.5] {
            let f = |v: f64| {
                op()(&Tensor::new(&[v as f32], &Device::Cpu).unwrap())
                    .to_vec1::<f32>()
                    .unwrap()[0] as f64
            };
            let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
            let v = Var::new(&[x as f32], &Device::Cpu).unwrap();
            let g = op()(v.as_tensor()).sum_all().unwrap().backward().unwrap();
            let analytic = g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
            assert!(
                (numeric - analytic).abs() < 1e-3,
                "x={x}: {numeric} vs {analytic}"
            );
        }
    }

    #[test]
    fn gelu_gradients_match_finite_differences() {
        gelu_gradient_matches_finite_differences(|| {
            Box::new(|t| t.apply_op1(Gelu { tanh: false }).unwrap())
        });
        gelu_gradient_matches_finite_differences(|| {
            Box::new(|t| t.apply_op1(Gelu { tanh: true }).unwrap())
        });
    }

    /// gelu(x + bias) fused equals the composite (bias add, then the GELU op) with both
    /// gradients, and the bias gradient matches finite differences.
    #[test]
    fn fused_bias_gelu_equals_composite_with_both_gradients() {
        let d = Device::Cpu;
        for tanh in [false, true] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 50, 40), &d).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 40, &d).unwrap()).unwrap();
            let up = Tensor::randn(0f32, 1.0, (3, 50, 40), &d).unwrap();
            let gelu = |z: &Tensor| z.apply_op1(Gelu { tanh }).unwrap();
            let fused = x
                .as_tensor()
                .apply_op2(b.as_tensor(), BiasGelu { tanh })
                .unwrap();
            let composite = gelu(&x.as_tensor().broadcast_add(b.as_tensor()).unwrap());
            assert!(max_diff(&fused, &composite) < 1e-6, "tanh {tanh}: forward");
            let gf = (&fused * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gc = (&composite * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(
                max_diff(gf.get(&x).unwrap(), gc.get(&x).unwrap()) < 1e-5,
                "tanh {tanh}: dx"
            );
            assert!(
                max_diff(gf.get(&b).unwrap(), gc.get(&b).unwrap()) < 1e-4,
                "tanh {tanh}: dbias"
            );
            // d/dbias_j of Σ up ⊙ gelu(x + bias), by central differences in f64 sums.
            let loss = |bias: &Tensor| -> f64 {
                let y = x
                    .as_tensor()
                    .apply_op2_no_bwd(bias, &BiasGelu { tanh })
                    .unwrap();
                let prod: Vec<f32> = (y * &up).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                prod.iter().map(|&v| v as f64).sum()
            };
            let b0: Vec<f32> = b.as_tensor().to_vec1().unwrap();
            let analytic: Vec<f32> = gf.get(&b).unwrap().to_vec1().unwrap();
            for j in [0, 17, 39] {
                let h = 1e-2f32;
                let shifted = |delta: f32| {
                    let mut v = b0.clone();
                    v[j] += delta;
                    Tensor::from_vec(v, 40, &d).unwrap()
                };
                let numeric = (loss(&shifted(h)) - loss(&shifted(-h))) / (2.0 * h as f64);
                assert!(
                    (numeric - analytic[j] as f64).abs() < 2e-2,
                    "tanh {tanh}, dbias{j}: {numeric} vs {}",
                    analytic[j]
                );
            }
        }
    }

    fn composite_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let c = x.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let n = c
            .broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
            .unwrap();
        n.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    #[test]
    fn fused_layer_norm_equals_composite_with_all_three_gradients() {
        let d = Device::Cpu;
        let shape = (3, 70, 96); // 210 rows: several parallel chunks
        let x = Var::from_tensor(&(Tensor::randn(0.5f32, 2.0, shape, &d).unwrap())).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, 96, &d).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, 96, &d).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, shape, &d).unwrap();
        let fused = x
            .as_tensor()
            .apply_op3(
                w.as_tensor(),
                b.as_tensor(),
                LayerNormLastDim { eps: 1e-12 },
            )
            .unwrap();
        let composite = composite_layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor());
        assert!(
            max_diff(&fused, &composite) < 1e-5,
            "forward {}",
            max_diff(&fused, &composite)
        );
        let ga = (fused * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (composite * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
            let (a, b) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, b) < 1e-3, "d{name}: {}", max_diff(a, b));
        }
    }

    #[test]
    fn layer_norm_gradient_matches_finite_differences() {
        let d = Device::Cpu;
        let x0 = [0.3f32, -1.2, 2.0, 0.7, -0.4, 1.1, -2.2, 0.05];
        let w0 = [1.0f32, 0.5, -1.5, 2.0];
        let b0 = [0.1f32, -0.2, 0.3, 0.0];
        let up = Tensor::new(&[[1.0f32, -2.0, 0.5, 3.0], [-1.0, 0.7, 2.0, -0.3]], &d).unwrap();
        // f(x, w, b) = Σ up ⊙ LayerNorm(x)
        let f = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let x = Tensor::new(x, &d).unwrap().reshape((2, 4)).unwrap();
            let (w, b) = (Tensor::new(w, &d).unwrap(), Tensor::new(b, &d).unwrap());
            let y = x.apply_op3(&w, &b, LayerNormLastDim { eps: 1e-5 }).unwrap();
            (y * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let x = Var::from_tensor(&Tensor::new(&x0, &d).unwrap().reshape((2, 4)).unwrap()).unwrap();
        let w = Var::new(&w0, &d).unwrap();
        let b = Var::new(&b0, &d).unwrap();
        let y = x
            .as_tensor()
            .apply_op3(w.as_tensor(), b.as_tensor(), LayerNormLastDim { eps: 1e-5 })
            .unwrap();
        let grads = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let analytic = |v: &Var| {
            grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let h = 1e-2f32;
        let (gx, gw, gb) = (analytic(&x), analytic(&w), analytic(&b));
        for i in 0..x0.len() {
            let (mut up_, mut down) = (x0, x0);
            up_[i] += h;
            down[i] -= h;
            let numeric = (f(&up_, &w0, &b0) - f(&down, &w0, &b0)) / (2.0 * h as f64);
            assert!(
                (numeric - gx[i] as f64).abs() < 2e-2,
                "dx{i}: {numeric} vs {}",
                gx[i]
            );
        }
        for i in 0..w0.len() {
            let (mut up_, mut down) = (w0, w0);
            up_[i] += h;
            down[i] -= h;
            let numeric = (f(&x0, &up_, &b0) - f(&x0, &down, &b0)) / (2.0 * h as f64);
            assert!(
                (numeric - gw[i] as f64).abs() < 1e-2,
                "dweight{i}: {numeric} vs {}",
                gw[i]
            );
            let (mut up_, mut down) = (b0, b0);
            up_[i] += h;
            down[i] -= h;
            let numeric = (f(&x0, &w0, &up_) - f(&x0, &w0, &down)) / (2.0 * h as f64);
            assert!(
                (numeric - gb[i] as f64).abs() < 1e-2,
                "dbias{i}: {numeric} vs {}",
                gb[i]
            );
        }
    }

    #[test]
    fn fused_cross_entropy_equals_log_softmax_and_gradient() {
        let d = Device::Cpu;
        let (rows, classes) = (37, 1000);
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (rows, classes), &d).unwrap()).unwrap();
        let labels: Vec<Option<u32>> = (0..rows)
            .map(|i| (i % 5 != 3).then_some((i * 97 % classes) as u32))
            .collect();
        let up = Tensor::randn(0f32, 1.0, rows, &d).unwrap();
        let fused = x
            .as_tensor()
            .apply_op1(RowCrossEntropy {
                labels: std::sync::Arc::new(labels.clone()),
            })
            .unwrap();
        // Composite: −log_softmax at the label, 0 for ignored rows.
        let ls = crate::nn::ops::log_softmax_last_dim(x.as_tensor()).unwrap();
        let index = Tensor::from_vec(
            labels.iter().map(|l| l.unwrap_or(0)).collect::<Vec<u32>>(),
            (rows, 1),
            &d,
        )
        .unwrap();
        let keep = Tensor::from_vec(
            labels
                .iter()
                .map(|l| if l.is_some() { -1f32 } else { 0.0 })
                .collect::<Vec<_>>(),
            rows,
            &d,
        )
        .unwrap();
        let composite = (ls.gather(&index, 1).unwrap().squeeze(1).unwrap() * keep).unwrap();
        assert!(
            max_diff(&fused, &composite) < 1e-5,
            "forward {}",
            max_diff(&fused, &composite)
        );
        let ga = (fused * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (composite * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (ga, gb) = (
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        );
        // Gradients reach ~3 (|up| · 1); a few f32 ulps of exp(x − logsumexp) computed two ways.
        assert!(max_diff(ga, gb) < 1e-5, "gradient {}", max_diff(ga, gb));
    }
}
