//! Activation functions by their Hugging Face names (`hidden_act`, `activation_function`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// An activation named as in transformers' `ACT2FN`; the name is kept so a config is written
/// back as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new`: the tanh approximation (GPT-2, BERT's original TF code).
    GeluNew,
    /// `gelu_pytorch_tanh`: the same tanh approximation.
    GeluPytorchTanh,
    /// `gelu_fast`: the same tanh approximation, factored differently.
    GeluFast,
    /// `quick_gelu`: x · sigmoid(1.702 x).
    QuickGelu,
    Relu,
    Silu,
    /// `swish`: another name for SiLU.
    Swish,
    Tanh,
}

const NAMES: &[(&str, Activation)] = &[
    ("gelu", Activation::Gelu),
    ("gelu_new", Activation::GeluNew),
    ("gelu_pytorch_tanh", Activation::GeluPytorchTanh),
    ("gelu_fast", Activation::GeluFast),
    ("quick_gelu", Activation::QuickGelu),
    ("relu", Activation::Relu),
    ("silu", Activation::Silu),
    ("swish", Activation::Swish),
    ("tanh", Activation::Tanh),
];

impl Activation {
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("gelu")
    }

    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => super::ops::gelu_erf(x)?,
            Activation::GeluNew | Activation::GeluPytorchTanh | Activation::GeluFast => {
                super::ops::gelu_tanh(x)?
            }
            Activation::QuickGelu => (x * super::ops::sigmoid(&(x * 1.702)?)?)?,
            Activation::Relu => x.relu()?,
            Activation::Silu | Activation::Swish => x.silu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

impl TryFrom<String> for Activation {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown activation {s:?}; supported: {}", names.join(", "))
            })
    }
}

impl From<Activation> for String {
    fn from(a: Activation) -> String {
        a.name().to_string()
    }
}
