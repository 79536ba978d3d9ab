//! Reduced precision for linear layers. For inference, a linear layer's weight is packed once
//! at load: bf16 (half the bytes, products accumulated in f32) or int8 with one scale per
//! output feature, its input quantized per row as it arrives (dynamic quantization, which is
//! what `torch.ao.quantization.quantize_dynamic` does to `nn.Linear`). Embeddings, LayerNorm,
//! softmax and the residual stream stay f32. For training, bf16 means autocast: f32 master
//! weights, with each linear layer's weight and input rounded to bf16 before an f32-accumulated
//! product.

use std::fmt;
use std::str::FromStr;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_attention::gemm_f32;
use super::kernels::f32_slice;
use super::simd::{FLOAT_LANES, LANES, Widen, bf16_to_f32, dot_float, dot_i8};
use crate::error::{Error, Result};

/// The number format of linear-layer weights (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    /// Inference only.
    Int8,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(Error::invalid(format!(
                "unknown dtype {s:?}: expected f32, bf16 or int8"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

/// Packed weights, (n, k) padded with zeros to (np, kp): whole vector registers per row and
/// whole register blocks of rows, so the kernels have no tails.
enum Packed {
    Bf16(Vec<u16>),
    /// Symmetric: w ≈ q · scale[row], q in -127..=127.
    Int8 {
        q: Vec<i8>,
        scale: Vec<f32>,
    },
}

/// A linear layer's weight in reduced precision; applied as a candle op (inference only: it
/// has no backward).
pub(crate) struct PackedLinear {
    n: usize,
    k: usize,
    np: usize,
    kp: usize,
    packed: Packed,
}

/// Output features per block of the kernels (a multiple of every column block they use).
const COL_BLOCK: usize = 4;
/// From this many rows the GEMM's packed micro-kernels win (bf16 widens the weight to f32 once
/// for it); below it the blocked kernels, with no packing and no threads barrier per call,
/// are faster.
const GEMM_ROWS: usize = 256;
/// Rows multiplied together by the blocked kernels (inputs in registers, weights reused).
const ROW_BLOCK: usize = 4;

impl PackedLinear {
    /// Packs `weight` (out, in); `None` for f32, which needs no packing.
    pub(crate) fn pack(weight: &Tensor, precision: Precision) -> Result<Option<Self>> {
        if precision == Precision::F32 {
            return Ok(None);
        }
        let (n, k) = weight.dims2()?;
        let w: Vec<f32> = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let (np, kp) = (n.next_multiple_of(COL_BLOCK), k.next_multiple_of(LANES));
        let packed = match precision {
            Precision::Bf16 => {
                let mut b = vec![0u16; np * kp];
                for (dst, src) in b.chunks_mut(kp).zip(w.chunks(k)) {
                    dst.iter_mut()
                        .zip(src)
                        .for_each(|(d, &v)| *d = half::bf16::from_f32(v).to_bits());
                }
                Packed::Bf16(b)
            }
            Precision::Int8 => {
                let mut q = vec![0i8; np * kp];
                let mut scale = vec![0f32; np];
                for ((dst, s), src) in q.chunks_mut(kp).zip(scale.iter_mut()).zip(w.chunks(k)) {
                    *s = quantize_row(src, dst);
                }
                Packed::Int8 { q, scale }
            }
            Precision::F32 => unreachable!("returned above"),
        };
        Ok(Some(PackedLinear {
            n,
            k,
            np,
            kp,
            packed,
        }))
    }

    /// bf16 with many rows: the weight widened to f32 once, then the f32 GEMM.
    fn bf16_gemm(&self, w: &[u16], x: &[f32], rows: usize) -> Vec<f32> {
        let (n, k, kp) = (self.n, self.k, self.kp);
        let mut wide = vec![0f32; n * kp];
        wide.par_chunks_mut(1 << 14)
            .zip(w[..n * kp].par_chunks(1 << 14))
            .for_each(|(d, s)| {
                d.iter_mut().zip(s).for_each(|(d, &b)| *d = bf16_to_f32(b));
            });
        let mut y = vec![0f32; rows * n];
        let par = gemm::Parallelism::Rayon(rayon::current_num_threads());
        gemm_f32(
            par,
            rows,
            n,
            k,
            &mut y,
            n,
            false,
            (x, k, 1),
            (&wide, 1, kp),
            1.0,
        );
        y
    }

    /// int8: inputs quantized per row, exact i32 products, then both scales.
    fn int8(&self, q: &[i8], scale: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
        let (k, kp) = (self.k, self.kp);
        let block = if rows >= ROW_BLOCK { ROW_BLOCK } else { 1 };
        let rp = rows.next_multiple_of(block);
        let mut qx = vec![0i8; rp * kp];
        let mut sx = vec![0f32; rp];
        qx.par_chunks_mut(kp)
            .zip(sx.par_iter_mut())
            .zip(x.par_chunks(k))
            .for_each(|((d, s), src)| {
                *s = quantize_row(src, d);
            });
        let xrow = |i: usize| &qx[i * kp..][..kp];
        let wrow = |j: usize| &q[j * kp..][..kp];
        let tile_rows = if block == 1 { rp } else { 64 };
        tiled(rp, self.np, tile_rows, 64, |r0, h, c0, cols, out| {
            let mut put = |i: usize, j: usize, acc: i32| {
                out[i * cols + j] = acc as f32 * sx[r0 + i] * scale[c0 + j]
            };
            if block == 1 {
                for j in (0..cols).step_by(4) {
                    for i in 0..h {
                        let d = dot_i8::<1, 4>(
                            [xrow(r0 + i)],
                            std::array::from_fn(|c| wrow(c0 + j + c)),
                        );
                        (0..4).for_each(|c| put(i, j + c, d[0][c]));
                    }
                }
            } else {
                for i in (0..h).step_by(4) {
                    for j in (0..cols).step_by(2) {
                        let d = dot_i8::<4, 2>(
                            std::array::from_fn(|r| xrow(r0 + i + r)),
                            [wrow(c0 + j), wrow(c0 + j + 1)],
                        );
                        (0..4).for_each(|r| (0..2).for_each(|c| put(i + r, j + c, d[r][c])));
                    }
                }
            }
        })
    }
}

/// Rows padded for the blocked float kernel: to a multiple of the row block from one block up.
fn padded_rows(rows: usize) -> usize {
    if rows >= ROW_BLOCK {
        rows.next_multiple_of(ROW_BLOCK)
    } else {
        rows
    }
}

/// `x` (rows of `k`; `padded_rows` of them) times `w` (n rows of `k`, f32 or bf16)ᵀ -> (rows, n).
fn float_rows<W: Widen + Sync>(w: &[W], n: usize, x: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let xrow = |i: usize| &x[i * k..][..k];
    let wrow = |j: usize| &w[j * k..][..k];
    let blocked = rows.is_multiple_of(ROW_BLOCK);
    tiled(
        rows,
        n,
        if blocked { 64 } else { rows },
        64,
        |r0, h, c0, cols, out| {
            if blocked {
                for i in (0..h).step_by(ROW_BLOCK) {
                    let xs: [&[f32]; ROW_BLOCK] = std::array::from_fn(|r| xrow(r0 + i + r));
                    let mut j = 0;
                    while j + 2 <= cols {
                        let d = dot_float::<W, ROW_BLOCK, 2>(xs, [wrow(c0 + j), wrow(c0 + j + 1)]);
                        (0..ROW_BLOCK)
                            .for_each(|r| out[(i + r) * cols + j..][..2].copy_from_slice(&d[r]));
                        j += 2;
                    }
                    if j < cols {
                        let d = dot_float::<W, ROW_BLOCK, 1>(xs, [wrow(c0 + j)]);
                        (0..ROW_BLOCK).for_each(|r| out[(i + r) * cols + j] = d[r][0]);
                    }
                }
            } else {
                for i in 0..h {
                    let mut j = 0;
                    while j + COL_BLOCK <= cols {
                        let d = dot_float::<W, 1, COL_BLOCK>(
                            [xrow(r0 + i)],
                            std::array::from_fn(|c| wrow(c0 + j + c)),
                        );
                        out[i * cols + j..][..COL_BLOCK].copy_from_slice(&d[0]);
                        j += COL_BLOCK;
                    }
                    for j in j..cols {
                        out[i * cols + j] =
                            dot_float::<W, 1, 1>([xrow(r0 + i)], [wrow(c0 + j)])[0][0];
                    }
                }
            }
        },
    )
}

/// Copies `rows` rows of `k` values into `rp` rows of `kp` (zeros around).
fn pad(x: &[f32], rows: usize, k: usize, rp: usize, kp: usize) -> Vec<f32> {
    let mut xp = vec![0f32; rp * kp];
    xp.chunks_mut(kp)
        .zip(x.chunks(k).take(rows))
        .for_each(|(d, s)| d[..k].copy_from_slice(s));
    xp
}

/// f32 inference with few rows (batch-1 latency, decoding): the blocked kernel on the weight as
/// stored, x (rows, k) · w (n, k)ᵀ. No backward: the caller uses it only without gradients.
pub(crate) struct FewRowsF32;

impl FewRowsF32 {
    /// Whether `rows` inputs times `weight` take this kernel.
    pub(crate) fn applies(rows: usize, weight: &Tensor) -> bool {
        let k = weight.dims().last().copied().unwrap_or(0);
        rows < GEMM_ROWS
            && weight.device().is_cpu()
            && weight.dtype() == DType::F32
            && weight.is_contiguous()
            && k % FLOAT_LANES == 0
    }
}

impl CustomOp2 for FewRowsF32 {
    fn name(&self) -> &'static str {
        "ptm-few-rows-f32"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let ((rows, k), (n, kw)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        if k != kw || k % FLOAT_LANES != 0 {
            candle_core::bail!(
                "few-rows linear: input {:?} and weight {:?} do not fit",
                l1.dims(),
                l2.dims()
            );
        }
        let rp = padded_rows(rows);
        let y = if rp == rows {
            float_rows(w, n, x, rows, k)
        } else {
            float_rows(w, n, &pad(x, rows, k, rp, k), rp, k)
        };
        Ok((
            CpuStorage::F32(unpad(y, rows, n, n)),
            Shape::from((rows, n)),
        ))
    }
}

/// Rows of `k` values quantized as the int8 kernels store them: (values, one scale per row).
pub(crate) fn quantize_int8_rows(w: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; w.len()];
    let scale = q
        .chunks_mut(k)
        .zip(w.chunks(k))
        .map(|(d, s)| quantize_row(s, d))
        .collect();
    (q, scale)
}

/// Symmetric int8 quantization of one row into `dst` (zeros past `src`); returns the scale.
fn quantize_row(src: &[f32], dst: &mut [i8]) -> f32 {
    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    // f32::max skips NaN and `NaN as i8` is 0: a NaN or infinite input would come out as
    // plausible numbers. A NaN scale carries it into every output of the row instead.
    if !amax.is_finite() || src.iter().any(|v| v.is_nan()) {
        dst.fill(0);
        return f32::NAN;
    }
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    // Half away from zero, as f32::round, but without its libm call, so the loop vectorises.
    dst.iter_mut().zip(src).for_each(|(d, &v)| {
        let q = (v * inv).clamp(-127.0, 127.0);
        *d = (q + 0.5f32.copysign(q)) as i8;
    });
    amax / 127.0
}

/// A (rows × cols) row-major result computed tile by tile in parallel: `f(r0, h, c0, w, out)`
/// fills the h × w tile at (r0, c0).
fn tiled(
    rows: usize,
    cols: usize,
    tile_rows: usize,
    tile_cols: usize,
    f: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let tiles: Vec<(usize, usize)> = (0..rows)
        .step_by(tile_rows)
        .flat_map(|r| (0..cols).step_by(tile_cols).map(move |c| (r, c)))
        .collect();
    let done: Vec<Vec<f32>> = tiles
        .par_iter()
        .map(|&(r0, c0)| {
            let (h, w) = (tile_rows.min(rows - r0), tile_cols.min(cols - c0));
            let mut out = vec![0f32; h * w];
            f(r0, h, c0, w, &mut out);
            out
        })
        .collect();
    let mut y = vec![0f32; rows * cols];
    for (&(r0, c0), tile) in tiles.iter().zip(&done) {
        let w = tile_cols.min(cols - c0);
        for (i, row) in tile.chunks(w).enumerate() {
            y[(r0 + i) * cols + c0..][..w].copy_from_slice(row);
        }
    }
    y
}

/// The (rows, cp) result cut to its first `rows` rows and `n` columns.
fn unpad(y: Vec<f32>, rows: usize, cp: usize, n: usize) -> Vec<f32> {
    if cp == n && y.len() == rows * n {
        return y;
    }
    y.chunks(cp)
        .take(rows)
        .flat_map(|r| &r[..n])
        .copied()
        .collect()
}

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "ptm-packed-linear"
    }

    /// x (rows, k) -> x · Wᵀ (rows, n)
    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let (rows, k) = layout.shape().dims2()?;
        if k != self.k {
            candle_core::bail!(
                "packed linear: input has {k} features, the weight {}",
                self.k
            );
        }
        let y = match &self.packed {
            Packed::Bf16(w) if rows >= GEMM_ROWS => self.bf16_gemm(w, x, rows),
            Packed::Bf16(w) => {
                let rp = padded_rows(rows);
                unpad(
                    float_rows(w, self.np, &pad(x, rows, k, rp, self.kp), rp, self.kp),
                    rows,
                    self.np,
                    self.n,
                )
            }
            Packed::Int8 { q, scale } => unpad(self.int8(q, scale, x, rows), rows, self.np, self.n),
        };
        Ok((CpuStorage::F32(y), Shape::from((rows, self.n))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn check(precision: Precision, rows: usize, n: usize, k: usize, tol: f32) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let packed = PackedLinear::pack(&w, precision).unwrap().unwrap();
        let got = x.apply_op1_no_bwd(&packed).unwrap();
        assert_eq!(got.dims(), &[rows, n]);
        let err = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let peak = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            err <= tol * peak,
            "{precision} {rows}x{k} · {k}x{n}: max error {err}, peak {peak}"
        );
    }

    /// Each path (row kernel, GEMM, int8 single rows and blocks) on sizes that need padding.
    #[test]
    fn packed_products_match_f32_within_the_format_error() {
        for rows in [1, 3, 5, 17, 70, 300] {
            // bf16 keeps 8 significant bits: relative error per weight ≤ 2^-9.
            check(Precision::Bf16, rows, 37, 45, 1e-2);
            // int8: relative error per value ≤ 1/254 for weights and inputs alike.
            check(Precision::Int8, rows, 37, 45, 3e-2);
        }
        check(Precision::Int8, 130, 70, 200, 3e-2);
    }

    /// The f32 few-rows kernel on odd shapes (row and column remainders) equals the GEMM.
    #[test]
    fn few_rows_f32_kernel_matches_the_gemm() {
        let dev = Device::Cpu;
        for (rows, n, k) in [
            (1, 5, 16),
            (3, 9, 24),
            (4, 7, 8),
            (17, 33, 40),
            (255, 3, 64),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            assert!(FewRowsF32::applies(rows, &w));
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let got = x.apply_op2_no_bwd(&w, &FewRowsF32).unwrap();
            let err = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-4, "{rows}x{k} · {k}x{n}: {err}");
        }
        let w = Tensor::zeros((4, 12), DType::F32, &dev).unwrap();
        assert!(
            !FewRowsF32::applies(2, &w),
            "rows of 12 are not whole vectors"
        );
        assert!(!FewRowsF32::applies(
            GEMM_ROWS,
            &Tensor::zeros((4, 16), DType::F32, &dev).unwrap()
        ));
    }

    #[test]
    fn bf16_row_kernel_is_the_widened_product() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (9, 20), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 20), &dev).unwrap();
        let rounded = w
            .to_dtype(candle_core::DType::BF16)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let want = x.matmul(&rounded.t().unwrap()).unwrap();
        let got = x
            .apply_op1_no_bwd(&PackedLinear::pack(&w, Precision::Bf16).unwrap().unwrap())
            .unwrap();
        let err = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn dtype_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
    }
}
