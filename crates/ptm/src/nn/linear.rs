//! `nn.Linear`: y = x Wᵀ + b with W stored (out, in), as in PyTorch checkpoints.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::activation::Activation;
use super::kernels::{BiasGelu, fusable};
use super::params::{Init, ParamBuilder};
use super::precision::{FewRowsF32, PackedLinear, Precision};
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight in bf16 or int8, used instead of `weight` (CPU inference).
    packed: Option<Arc<PackedLinear>>,
    /// bf16 autocast: the product of bf16-rounded weight and input, accumulated in f32
    /// (mixed-precision training; bf16 inference on devices other than the CPU).
    autocast: bool,
    /// f32 CPU inference: few rows go through the blocked kernel instead of the GEMM.
    few_rows: bool,
}

impl Linear {
    /// `weight` (out, in) and `bias` (out) under `vb`, initialised as HF does: Normal(0, std)
    /// and zeros.
    pub fn new(vb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight", Init::normal(std))?;
        let bias = vb.get(out_dim, "bias", Init::Zeros)?;
        Linear::from_tensors(weight, Some(bias)).in_precision_of(vb)
    }

    /// Like [`Linear::new`] for a task head that the checkpoint may lack.
    pub fn new_head(vb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = vb.get_or_init((out_dim, in_dim), "weight", Init::normal(std))?;
        let bias = vb.get_or_init(out_dim, "bias", Init::Zeros)?;
        Linear::from_tensors(weight, Some(bias)).in_precision_of(vb)
    }

    /// An f32 layer over given tensors; [`Linear::in_precision_of`] applies a store's precision.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            packed: None,
            autocast: false,
            few_rows: false,
        }
    }

    /// This layer in the precision of `vb`'s store: packed weights for CPU inference, bf16
    /// autocast for training and for other devices.
    pub fn in_precision_of(mut self, vb: &ParamBuilder) -> Result<Self> {
        let store = vb.store();
        match (store.precision(), store.trainable()) {
            (Precision::F32, trainable) => {
                self.few_rows = !trainable && self.weight.device().is_cpu()
            }
            (Precision::Int8, true) => {
                return Err(Error::invalid(
                    "int8 is for inference: train in f32 or bf16, then use --dtype int8",
                ));
            }
            (Precision::Bf16, true) => self.autocast = true,
            (Precision::Bf16, false) if !self.weight.device().is_cpu() => self.autocast = true,
            (Precision::Int8, false) if !self.weight.device().is_cpu() => {
                return Err(Error::unsupported("int8 linear layers run on the CPU only"));
            }
            (p, false) => {
                self.packed = PackedLinear::pack(&self.weight, p)?.map(Arc::new);
                if p == Precision::Int8 {
                    // GPT-2's Conv1D weight is stored (in, out) and used through a transposed view.
                    store.record_int8(&vb.full_name("weight"), !self.weight.is_contiguous());
                }
            }
        }
        Ok(self)
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// (..., in) -> (..., out), as one GEMM over all leading dimensions.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, None)
    }

    /// activation(x Wᵀ + b), the bias and a GELU in one fused pass where the kernel applies.
    pub fn forward_activated(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        self.forward_then(x, Some(activation))
    }

    fn forward_then(&self, x: &Tensor, activation: Option<Activation>) -> Result<Tensor> {
        let dims = x.dims();
        let (in_dim, lead) = match dims.split_last() {
            Some((last, lead)) => (*last, lead),
            None => return Err(crate::error::Error::internal("Linear::forward on a scalar")),
        };
        let rows: usize = lead.iter().product();
        let x = x.reshape((rows, in_dim))?;
        let y = if let Some(packed) = &self.packed {
            x.contiguous()?.apply_op1_no_bwd(packed.as_ref())? // (rows, out)
        } else if self.few_rows
            && x.dtype() == DType::F32
            && FewRowsF32::applies(rows, &self.weight)
        {
            x.contiguous()?
                .apply_op2_no_bwd(&self.weight, &FewRowsF32)? // (rows, out)
        } else if self.autocast {
            let w = self.weight.to_dtype(DType::BF16)?;
            x.to_dtype(DType::BF16)?
                .matmul(&w.t()?)?
                .to_dtype(DType::F32)? // (rows, out)
        } else {
            x.matmul(&self.weight.t()?)? // (rows, out)
        };
        let tanh = match activation {
            Some(Activation::Gelu) => Some(false),
            Some(Activation::GeluNew | Activation::GeluPytorchTanh | Activation::GeluFast) => {
                Some(true)
            }
            _ => None,
        };
        let y = match (&self.bias, tanh) {
            (Some(b), Some(tanh)) if fusable(&y) && fusable(b) => {
                y.apply_op2(b, BiasGelu { tanh })?
            }
            (Some(b), _) => activate(y.broadcast_add(b)?, activation)?,
            (None, _) => activate(y, activation)?,
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(self.weight.dim(0)?);
        Ok(y.reshape(out_dims)?)
    }
}

fn activate(y: Tensor, activation: Option<Activation>) -> Result<Tensor> {
    match activation {
        Some(a) => a.forward(&y),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::nn::{ParamStore, StoreOptions};

    fn layer(precision: Precision, trainable: bool) -> Result<(ParamStore, Linear)> {
        let store = ParamStore::new(
            None,
            &[],
            &StoreOptions {
                precision,
                trainable,
                seed: 7,
                ..Default::default()
            },
        );
        let linear = Linear::new(&store.root().pp("dense"), 24, 10, 0.2)?;
        Ok((store, linear))
    }

    fn bf16(t: &Tensor) -> Tensor {
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }

    /// bf16 training (autocast) multiplies bf16-rounded weight and input, keeps f32 master
    /// weights, and the weight's gradient is xᵀ·dy with the rounded input.
    #[test]
    fn bf16_autocast_rounds_the_operands_and_trains_f32_weights() {
        let (store, linear) = layer(Precision::Bf16, true).unwrap();
        let x = Tensor::randn(0f32, 1.0, (5, 24), &Device::Cpu).unwrap();
        let y = linear.forward(&x).unwrap();
        let w = store.params()[0].tensor.clone();
        assert_eq!(w.dtype(), DType::F32);
        let want = bf16(&bf16(&x).matmul(&bf16(&w).t().unwrap()).unwrap())
            .broadcast_add(&store.params()[1].tensor)
            .unwrap();
        let err = (&y - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-6, "{err}");
        let grads = y.sum_all().unwrap().backward().unwrap();
        let gw = grads
            .get(&w)
            .expect("the f32 master weight gets a gradient");
        let want = bf16(&x)
            .sum(0)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .broadcast_as((10, 24))
            .unwrap();
        // The product's backward runs in bf16 too (as autocast's does): equal to within bf16's
        // rounding of the result, 2^-8 relative.
        let peak = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let err = (gw - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err <= peak / 256.0, "{err} against a peak of {peak}");
    }

    #[test]
    fn int8_is_refused_for_training_and_recorded_for_inference() {
        let err = layer(Precision::Int8, true)
            .err()
            .expect("int8 training is refused")
            .to_string();
        assert!(err.contains("int8 is for inference"), "{err}");
        let (store, linear) = layer(Precision::Int8, false).unwrap();
        assert_eq!(
            store.int8_linear_weights(),
            [("dense.weight".to_string(), false)]
        );
        let x = Tensor::randn(0f32, 1.0, (3, 24), &Device::Cpu).unwrap();
        assert_eq!(linear.forward(&x).unwrap().dims(), &[3, 10]);
    }
}
