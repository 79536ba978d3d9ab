//! Scaled dot-product attention as one CPU op for f32, forward and backward: per (batch, head)
//! and per tile of queries, scores, mask, softmax, dropout and the product with V are computed
//! in a small buffer, so memory does not grow with batch · heads · q_len · k_len (except the
//! dropout mask in training), and no intermediate tensor is written. The backward recomputes
//! the probabilities tile by tile, as FlashAttention does. Matrix products call the gemm crate
//! that candle uses, one thread each, with the (batch, head) pairs spread over threads.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{f32_slice, softmax_in_place};

/// Queries per tile: the score buffer is TILE × k_len.
const TILE: usize = 64;

/// The additive mask, (mask_batch, 1, mask_q, k_len) with mask_batch ∈ {1, batch} and
/// mask_q ∈ {1, q_len}: 0 where a key is visible, a large negative number where not.
#[derive(Clone)]
pub(crate) struct MaskBias {
    data: Arc<Vec<f32>>,
    batch: usize,
    q_len: usize,
}

impl MaskBias {
    /// The mask as the op reads it, or None when its shape is not one it broadcasts
    /// (the caller then uses the composite version).
    pub(crate) fn new(
        mask: &Tensor,
        batch: usize,
        q_len: usize,
        k_len: usize,
    ) -> candle_core::Result<Option<Self>> {
        let Ok((mb, mh, mq, mk)) = mask.dims4() else {
            return Ok(None);
        };
        if mh != 1 || mk != k_len || !(mb == 1 || mb == batch) || !(mq == 1 || mq == q_len) {
            return Ok(None);
        }
        let data = mask
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Some(MaskBias {
            data: Arc::new(data),
            batch: mb,
            q_len: mq,
        }))
    }

    /// Query `i`'s row of mask bias for batch row `b`.
    fn row(&self, b: usize, i: usize, k_len: usize) -> &[f32] {
        let (b, i) = (
            if self.batch == 1 { 0 } else { b },
            if self.q_len == 1 { 0 } else { i },
        );
        &self.data[(b * self.q_len + i) * k_len..][..k_len]
    }
}

/// softmax(Q Kᵀ · scale + mask) ⊙ dropout · V for q (b, h, q_len, d), k and v (b, h, k_len, d).
#[derive(Clone)]
pub(crate) struct FusedAttention {
    pub scale: f32,
    pub mask: Option<MaskBias>,
    /// Inverted-dropout factors (0 or 1 / (1 − p)) over (b, h, q_len, k_len), in training.
    pub dropout: Option<Arc<Vec<f32>>>,
}

/// The shapes of one call: batch · heads, query and key lengths, head size, heads.
#[derive(Clone, Copy)]
struct Dims {
    bh: usize,
    heads: usize,
    q_len: usize,
    k_len: usize,
    d: usize,
}

fn dims(ql: &Layout, kl: &Layout, vl: &Layout) -> candle_core::Result<Dims> {
    let (&[b, h, q_len, d], &[kb, kh, k_len, kd], vd) = (ql.dims(), kl.dims(), vl.dims()) else {
        candle_core::bail!("fused attention takes (batch, heads, seq, head_dim) inputs");
    };
    if (kb, kh, kd) != (b, h, d) || vd != kl.dims() {
        candle_core::bail!(
            "fused attention: q {:?}, k {:?}, v {:?} do not match",
            ql.dims(),
            kl.dims(),
            vd
        );
    }
    Ok(Dims {
        bh: b * h,
        heads: h,
        q_len,
        k_len,
        d,
    })
}

/// Row-major matrix views: (data, row stride, column stride).
pub(crate) type Mat<'a> = (&'a [f32], usize, usize);

/// dst (m × n, row-major, row stride `dst_rs`) = [dst +] alpha · lhs (m × k) · rhs (k × n).
#[allow(clippy::too_many_arguments)] // the GEMM's own dimensions and strides
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    alpha: f32,
) {
    gemm_f32(
        gemm::Parallelism::None,
        m,
        n,
        k,
        dst,
        dst_rs,
        accumulate,
        lhs,
        rhs,
        alpha,
    )
}

/// dst (m × n, row stride `dst_rs`) = alpha · lhs · rhs (+ dst when accumulating), on the
/// threads `par` allows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32(
    par: gemm::Parallelism,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    alpha: f32,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows * cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        dst.len() >= last(m, n, dst_rs, 1),
        "matmul: destination too small"
    );
    assert!(
        lhs.0.len() >= last(m, k, lhs.1, lhs.2) && rhs.0.len() >= last(k, n, rhs.1, rhs.2),
        "matmul: operand too small"
    );
    // SAFETY: the asserts above keep every index gemm touches inside the slices, and dst does
    // not alias lhs or rhs (a &mut and two & borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

impl FusedAttention {
    /// Probabilities of queries `start..start + rows` of pair `bh` into `p` (rows × k_len):
    /// softmax of the masked, scaled scores; all zero for a query that sees no key (as PyTorch's
    /// scaled_dot_product_attention gives it).
    #[allow(clippy::too_many_arguments)] // the kernel's inner loop state, passed flat
    fn probs(
        &self,
        dm: Dims,
        bh: usize,
        start: usize,
        rows: usize,
        q: &[f32],
        k: &[f32],
        p: &mut [f32],
    ) {
        let (k_len, d) = (dm.k_len, dm.d);
        matmul(
            rows,
            k_len,
            d,
            p,
            k_len,
            false,
            (&q[start * d..], d, 1),
            (k, 1, d),
            self.scale,
        );
        for (i, row) in p.chunks_mut(k_len).take(rows).enumerate() {
            let mut visible = true;
            if let Some(mask) = &self.mask {
                let bias = mask.row(bh / dm.heads, start + i, k_len);
                visible = bias.iter().any(|&v| v >= -1.0);
                row.iter_mut().zip(bias).for_each(|(s, b)| *s += b);
            }
            if !visible {
                row.fill(0.0);
                continue;
            }
            softmax_in_place(row);
        }
    }

    /// The dropout factors of queries `start..start + rows` of pair `bh`.
    fn dropout_rows(&self, dm: Dims, bh: usize, start: usize, rows: usize) -> Option<&[f32]> {
        let per_pair = dm.q_len * dm.k_len;
        self.dropout
            .as_ref()
            .map(|m| &m[bh * per_pair + start * dm.k_len..][..rows * dm.k_len])
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "ptm-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dm = dims(ql, kl, vl)?;
        let (q, k, v) = (f32_slice(qs, ql)?, f32_slice(ks, kl)?, f32_slice(vs, vl)?);
        let (q_len, k_len, d) = (dm.q_len, dm.k_len, dm.d);
        let mut out = vec![0f32; dm.bh * q_len * d];
        if q_len * d > 0 {
            out.par_chunks_mut(q_len * d)
                .enumerate()
                .for_each(|(bh, o)| {
                    let (q, k, v) = (
                        &q[bh * q_len * d..][..q_len * d],
                        &k[bh * k_len * d..][..k_len * d],
                        &v[bh * k_len * d..][..k_len * d],
                    );
                    let mut p = vec![0f32; TILE.min(q_len) * k_len];
                    for start in (0..q_len).step_by(TILE) {
                        let rows = TILE.min(q_len - start);
                        self.probs(dm, bh, start, rows, q, k, &mut p);
                        if let Some(drop) = self.dropout_rows(dm, bh, start, rows) {
                            p.iter_mut().zip(drop).for_each(|(p, m)| *p *= m);
                        }
                        matmul(
                            rows,
                            d,
                            k_len,
                            &mut o[start * d..],
                            d,
                            false,
                            (&p, k_len, 1),
                            (v, d, 1),
                            1.0,
                        );
                    }
                });
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = FusedAttentionGrad {
            fwd: self.clone(),
            grad_out: grad.contiguous()?,
        };
        let grads = q
            .contiguous()?
            .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?; // dq, dk, dv flat
        let (nq, nk) = (q.elem_count(), k.elem_count());
        let dq = grads.narrow(0, 0, nq)?.reshape(q.shape())?;
        let dk = grads.narrow(0, nq, nk)?.reshape(k.shape())?;
        let dv = grads.narrow(0, nq + nk, nk)?.reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// The gradients of [`FusedAttention`] with respect to q, k and v, one flat tensor
/// (dq, then dk, then dv). With P the probabilities, M the dropout factors and g the output
/// gradient: dV = (P⊙M)ᵀ g, dP = M ⊙ g Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
/// dQ = scale · dS K, dK = scale · dSᵀ Q.
struct FusedAttentionGrad {
    fwd: FusedAttention,
    grad_out: Tensor,
}

impl CustomOp3 for FusedAttentionGrad {
    fn name(&self) -> &'static str {
        "ptm-attention-grad"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dm = dims(ql, kl, vl)?;
        let (q, k, v) = (f32_slice(qs, ql)?, f32_slice(ks, kl)?, f32_slice(vs, vl)?);
        let (storage, layout) = self.grad_out.storage_and_layout();
        let candle_core::Storage::Cpu(gs) = &*storage else {
            candle_core::bail!("fused attention: gradient not on the CPU")
        };
        let g = f32_slice(gs, layout)?;
        if g.len() != q.len() {
            candle_core::bail!(
                "fused attention backward: {} outputs, {} gradients",
                q.len(),
                g.len()
            );
        }
        let (q_len, k_len, d) = (dm.q_len, dm.k_len, dm.d);
        let mut out = vec![0f32; q.len() + 2 * k.len()];
        let (dq, rest) = out.split_at_mut(q.len());
        let (dk, dv) = rest.split_at_mut(k.len());
        if q_len * d > 0 && k_len > 0 {
            let per_k = k_len * d;
            dq.par_chunks_mut(q_len * d)
                .zip(dk.par_chunks_mut(per_k).zip(dv.par_chunks_mut(per_k)))
                .enumerate()
                .for_each(|(bh, (dq, (dk, dv)))| {
                    let (q, g) = (
                        &q[bh * q_len * d..][..q_len * d],
                        &g[bh * q_len * d..][..q_len * d],
                    );
                    let (k, v) = (&k[bh * per_k..][..per_k], &v[bh * per_k..][..per_k]);
                    let tile = TILE.min(q_len);
                    let (mut p, mut dp) = (vec![0f32; tile * k_len], vec![0f32; tile * k_len]);
                    // P ⊙ M, with dropout only.
                    let mut pm = vec![
                        0f32;
                        if self.fwd.dropout.is_some() {
                            tile * k_len
                        } else {
                            0
                        }
                    ];
                    for start in (0..q_len).step_by(TILE) {
                        let rows = TILE.min(q_len - start);
                        let (p, dp) = (&mut p[..rows * k_len], &mut dp[..rows * k_len]);
                        self.fwd.probs(dm, bh, start, rows, q, k, p);
                        let g_tile = &g[start * d..];
                        matmul(
                            rows,
                            k_len,
                            d,
                            dp,
                            k_len,
                            false,
                            (g_tile, d, 1),
                            (v, 1, d),
                            1.0,
                        );
                        let dropped: &[f32] = match self.fwd.dropout_rows(dm, bh, start, rows) {
                            Some(m) => {
                                dp.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                                pm.iter_mut()
                                    .zip(p.iter().zip(m))
                                    .for_each(|(o, (p, m))| *o = p * m);
                                &pm[..rows * k_len]
                            }
                            None => p,
                        };
                        matmul(
                            k_len,
                            d,
                            rows,
                            dv,
                            d,
                            start > 0,
                            (dropped, 1, k_len),
                            (g_tile, d, 1),
                            1.0,
                        );
                        for (pr, dpr) in p.chunks(k_len).zip(dp.chunks_mut(k_len)) {
                            let dot: f32 = pr.iter().zip(dpr.iter()).map(|(a, b)| a * b).sum();
                            dpr.iter_mut()
                                .zip(pr)
                                .for_each(|(x, p)| *x = p * (*x - dot));
                        }
                        // dp now holds dS.
                        matmul(
                            rows,
                            d,
                            k_len,
                            &mut dq[start * d..],
                            d,
                            false,
                            (dp, k_len, 1),
                            (k, d, 1),
                            self.fwd.scale,
                        );
                        matmul(
                            k_len,
                            d,
                            rows,
                            dk,
                            d,
                            start > 0,
                            (dp, 1, k_len),
                            (&q[start * d..], d, 1),
                            self.fwd.scale,
                        );
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from(q.len() + 2 * k.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::attention::{causal_mask_bias, padding_mask_bias};
    use candle_core::{D, DType, Device, Var};

    /// The composite definition, with the same dropout factors.
    fn composite(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
        drop: Option<&Tensor>,
    ) -> Tensor {
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        if let Some(m) = mask {
            s = s.broadcast_add(m).unwrap();
        }
        let e = s
            .broadcast_sub(&s.max_keepdim(D::Minus1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        let mut p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        if let Some(m) = mask {
            let visible = m
                .max_keepdim(D::Minus1)
                .unwrap()
                .ge(-1.0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            p = p.broadcast_mul(&visible).unwrap();
        }
        if let Some(d) = drop {
            p = (p * d).unwrap();
        }
        p.matmul(v).unwrap()
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

    /// Forward and all three gradients against the composite version.
    fn check(
        b: usize,
        h: usize,
        q_len: usize,
        k_len: usize,
        d: usize,
        mask: Option<Tensor>,
        dropout: bool,
    ) {
        let dev = Device::Cpu;
        let var = |s: usize| {
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, s, d), &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (var(q_len), var(k_len), var(k_len));
        let drop = dropout.then(|| {
            let r = Tensor::rand(0f32, 1.0, (b, h, q_len, k_len), &dev).unwrap();
            (r.ge(0.2).unwrap().to_dtype(DType::F32).unwrap() * 1.25).unwrap()
        });
        let scale = 1.0 / (d as f64).sqrt();
        let op = FusedAttention {
            scale: scale as f32,
            mask: mask.as_ref().map(|m| {
                MaskBias::new(m, b, q_len, k_len)
                    .unwrap()
                    .expect("a supported mask")
            }),
            dropout: drop
                .as_ref()
                .map(|t| Arc::new(t.flatten_all().unwrap().to_vec1::<f32>().unwrap())),
        };
        let fused = q
            .as_tensor()
            .apply_op3(k.as_tensor(), v.as_tensor(), op)
            .unwrap();
        let want = composite(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            mask.as_ref(),
            scale,
            drop.as_ref(),
        );
        assert!(
            max_diff(&fused, &want) < 1e-5,
            "forward {}",
            max_diff(&fused, &want)
        );
        let up = Tensor::randn(0f32, 1.0, (b, h, q_len, d), &dev).unwrap();
        let ga = (fused * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (want * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, b) < 1e-4, "d{name}: {}", max_diff(a, b));
        }
    }

    #[test]
    fn equals_composite_without_mask_over_several_tiles() {
        check(2, 3, 150, 150, 16, None, false);
    }

    #[test]
    fn equals_composite_with_padding_and_dropout() {
        let keep = Tensor::new(
            &[[1u32, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]],
            &Device::Cpu,
        )
        .unwrap();
        check(
            2,
            2,
            7,
            7,
            8,
            Some(padding_mask_bias(&keep, DType::F32).unwrap()),
            true,
        );
    }

    #[test]
    fn equals_composite_with_causal_mask_left_padding_and_a_cache() {
        // Left padding: the first query of row 0 sees no key at all and must give zeros.
        let keep = Tensor::new(&[[0u32, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let mask = causal_mask_bias(2, 4, 2, Some(&keep), DType::F32, &Device::Cpu).unwrap();
        check(2, 2, 4, 6, 8, Some(mask), false);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let (b, h, s, d) = (1, 1, 3, 2);
        let q0: Vec<f32> = vec![0.3, -1.2, 0.8, 0.5, -0.4, 1.1];
        let k0: Vec<f32> = vec![1.0, 0.2, -0.7, 0.9, 0.4, -1.5];
        let v0: Vec<f32> = vec![0.5, -0.3, 1.2, 0.1, -0.8, 0.6];
        let up = Tensor::new(&[1.0f32, -2.0, 0.5, 3.0, -1.0, 0.7], &dev)
            .unwrap()
            .reshape((b, h, s, d))
            .unwrap();
        let op = || FusedAttention {
            scale: 0.7,
            mask: None,
            dropout: None,
        };
        let f = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let t = |x: &[f32]| Tensor::new(x, &dev).unwrap().reshape((b, h, s, d)).unwrap();
            let y = t(q).apply_op3(&t(k), &t(v), op()).unwrap();
            (y * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let var = |x: &[f32]| {
            Var::from_tensor(&Tensor::new(x, &dev).unwrap().reshape((b, h, s, d)).unwrap()).unwrap()
        };
        let (q, k, v) = (var(&q0), var(&k0), var(&v0));
        let y = q
            .as_tensor()
            .apply_op3(k.as_tensor(), v.as_tensor(), op())
            .unwrap();
        let grads = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let h_ = 1e-2f32;
        for (which, var) in [(0, &q), (1, &k), (2, &v)] {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for i in 0..6 {
                let mut args = [q0.clone(), k0.clone(), v0.clone()];
                args[which][i] += h_;
                let up_ = f(&args[0], &args[1], &args[2]);
                args[which][i] -= 2.0 * h_;
                let down = f(&args[0], &args[1], &args[2]);
                let numeric = (up_ - down) / (2.0 * h_ as f64);
                assert!(
                    (numeric - analytic[i] as f64).abs() < 2e-3,
                    "input {which} element {i}: {numeric} vs {}",
                    analytic[i]
                );
            }
        }
    }
}
