//! AdamW with decoupled weight decay and bias correction, step for step as `torch.optim.AdamW`,
//! with transformers' parameter groups and a state that is saved and restored. ptm has its own
//! because candle-nn's has one weight decay for all parameters and keeps its moments private.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::Param;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Applied to every parameter but biases and LayerNorm weights.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// transformers' Trainer defaults.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// transformers' Trainer: no weight decay on biases and on LayerNorm parameters.
pub fn no_weight_decay(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("bias")
        || lower.contains("layernorm")
        || lower.contains("layer_norm")
        || is_gpt2_ln(name)
}

/// GPT-2 names its LayerNorms `ln_1`, `ln_2`, `ln_f`.
fn is_gpt2_ln(name: &str) -> bool {
    name.split('.').any(|part| part.starts_with("ln_"))
}

struct Slot {
    param: Param,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    /// Optimizer steps taken.
    step: usize,
}

impl AdamW {
    /// Every parameter must be trainable (a `Var`).
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|p| {
                if p.var.is_none() {
                    return Err(Error::invalid(format!(
                        "parameter {} is not trainable",
                        p.name
                    )));
                }
                let zeros = p.tensor.zeros_like()?.to_dtype(DType::F32)?;
                Ok(Slot {
                    decay: !no_weight_decay(&p.name),
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                    param: p,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW {
            slots,
            config,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// One update with learning rate `lr`: w ← w·(1 − lr·wd), m ← β1·m + (1−β1)·g,
    /// v ← β2·v + (1−β2)·g², w ← w − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε).
    /// Parameters without a gradient are left as they are (their moments too).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for slot in &mut self.slots {
            let Some(var) = &slot.param.var else { continue };
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.to_dtype(DType::F32)?;
            let mut w = var.as_tensor().to_dtype(DType::F32)?;
            if slot.decay && c.weight_decay != 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            slot.exp_avg = ((&slot.exp_avg * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            slot.exp_avg_sq = ((&slot.exp_avg_sq * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((slot.exp_avg_sq.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = (slot.exp_avg.div(&denom)? * (lr / bias1))?;
            var.set(&(w - update)?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Moments by parameter name (`exp_avg.NAME`, `exp_avg_sq.NAME`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("exp_avg.{}", s.param.name), s.exp_avg.clone()),
                    (format!("exp_avg_sq.{}", s.param.name), s.exp_avg_sq.clone()),
                ]
            })
            .collect()
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        for s in &mut self.slots {
            for (key, dst) in [
                ("exp_avg", &mut s.exp_avg),
                ("exp_avg_sq", &mut s.exp_avg_sq),
            ] {
                let name = format!("{key}.{}", s.param.name);
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| Error::invalid(format!("optimizer state lacks {name}")))?;
                if t.dims() != dst.dims() {
                    return Err(Error::invalid(format!(
                        "optimizer state {name} has shape {:?}, the parameter {:?}",
                        t.dims(),
                        dst.dims()
                    )));
                }
                *dst = t.to_dtype(DType::F32)?.to_device(dst.device())?;
            }
        }
        self.step = steps;
        Ok(())
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (factor max_norm / (norm + 1e-6), capped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Param], max_norm: f64) -> Result<f64> {
    let mut sum = 0f64;
    for p in params {
        if let Some(var) = &p.var
            && let Some(g) = grads.get(var.as_tensor())
        {
            sum += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sum.sqrt();
    let factor = (max_norm / (norm + 1e-6)).min(1.0);
    if factor < 1.0 {
        scale_grads(grads, params, factor)?;
    }
    Ok(norm)
}

/// Multiplies every parameter's gradient by `factor`.
pub(super) fn scale_grads(grads: &mut GradStore, params: &[Param], factor: f64) -> Result<()> {
    for p in params {
        let Some(var) = &p.var else { continue };
        let t = var.as_tensor();
        if let Some(g) = grads.get(t) {
            let scaled = (g * factor)?;
            grads.insert(t, scaled);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Init, ParamStore, StoreOptions};

    /// A small quadratic problem: loss = Σ (w ⊙ x − y)².
    fn problem(seed: u64) -> (ParamStore, Tensor, Tensor) {
        let opts = StoreOptions {
            trainable: true,
            seed,
            ..Default::default()
        };
        let store = ParamStore::new(None, &[], &opts);
        store
            .root()
            .get((4, 3), "dense.weight", Init::normal(1.0))
            .unwrap();
        store
            .root()
            .get(3, "dense.bias", Init::normal(1.0))
            .unwrap();
        let x = Tensor::new(
            &[
                [1.0f32, -2.0, 0.5],
                [0.3, 0.1, -1.0],
                [2.0, 1.0, 1.0],
                [-1.0, 0.0, 3.0],
            ],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let y = Tensor::new(&[0.5f32, -1.0, 2.0], &candle_core::Device::Cpu).unwrap();
        (store, x, y)
    }

    fn run(store: &ParamStore, opt: &mut AdamW, x: &Tensor, y: &Tensor, steps: usize) -> Vec<f32> {
        let p = store.params();
        (0..steps)
            .map(|_| {
                let out = (p[0].tensor.mul(x).unwrap().sum(0).unwrap() + &p[1].tensor).unwrap();
                let loss = (out - y).unwrap().sqr().unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                opt.step(&grads, 0.05).unwrap();
                loss.to_scalar::<f32>().unwrap()
            })
            .collect()
    }

    #[test]
    fn saved_state_resumes_exactly() {
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let (store, x, y) = problem(1);
        let mut straight = AdamW::new(store.params(), cfg).unwrap();
        let losses = run(&store, &mut straight, &x, &y, 6);
        assert!(losses[5] < losses[0], "{losses:?}");

        let (store2, ..) = problem(1);
        let mut first = AdamW::new(store2.params(), cfg).unwrap();
        let mut resumed_losses = run(&store2, &mut first, &x, &y, 3);
        let state: HashMap<String, Tensor> = first.state_tensors().into_iter().collect();
        let mut second = AdamW::new(store2.params(), cfg).unwrap();
        second.load_state(&state, first.steps_taken()).unwrap();
        resumed_losses.extend(run(&store2, &mut second, &x, &y, 3));
        assert_eq!(losses, resumed_losses);
    }

    #[test]
    fn decay_groups_follow_transformers() {
        assert!(no_weight_decay(
            "bert.encoder.layer.0.output.LayerNorm.weight"
        ));
        assert!(no_weight_decay("cls.predictions.bias"));
        assert!(no_weight_decay("transformer.h.0.ln_1.weight"));
        assert!(!no_weight_decay("transformer.h.0.attn.c_attn.weight"));
        assert!(!no_weight_decay("bert.embeddings.word_embeddings.weight"));
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let (store, x, y) = problem(2);
        let p = store.params();
        let out = (p[0].tensor.mul(&x).unwrap().sum(0).unwrap() + &p[1].tensor).unwrap();
        let mut grads = (out - &y)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let before = clip_grad_norm(&mut grads, &p, 0.5).unwrap();
        assert!(before > 0.5);
        let after = clip_grad_norm(&mut grads, &p, 1e9).unwrap();
        assert!((after - 0.5).abs() < 1e-5, "{after}");
    }
}
