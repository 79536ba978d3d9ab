//! `GPT2Config`: the fields and defaults of transformers' `configuration_gpt2.py`. GPT-3-style
//! sizes are just other values of these fields.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CommonConfig, from_value, merge_json};
use crate::error::{Error, Result};
use crate::nn::Activation;

/// A token id or a list of them (`eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Feed-forward width; 4 × n_embd when absent.
    pub n_inner: Option<usize>,
    pub activation_function: Activation,
    pub resid_pdrop: f64,
    pub embd_pdrop: f64,
    pub attn_pdrop: f64,
    pub layer_norm_epsilon: f64,
    pub initializer_range: f64,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Upcasting and reordering only changes rounding in half precision; f32 is unaffected.
    pub reorder_and_upcast_attn: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    pub add_cross_attention: bool,
    pub tie_word_embeddings: bool,
    #[serde(skip)]
    pub common: CommonConfig,
    #[serde(skip)]
    raw: Map<String, Value>,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: Activation::GeluNew,
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            bos_token_id: Some(50256),
            eos_token_id: Some(TokenIds::One(50256)),
            pad_token_id: None,
            add_cross_attention: false,
            tie_word_embeddings: true,
            common: CommonConfig::default(),
            raw: Map::new(),
        }
    }
}

/// transformers' `attribute_map`: generic names that GPT2Config stores under its own.
const ALIASES: &[(&str, &str)] = &[
    ("hidden_size", "n_embd"),
    ("max_position_embeddings", "n_positions"),
    ("num_attention_heads", "n_head"),
    ("num_hidden_layers", "n_layer"),
];

impl Gpt2Config {
    pub(crate) fn from_map(map: Map<String, Value>, path: &Path) -> Result<Self> {
        let common = CommonConfig::from_map(&map, path)?;
        let mut fields: Map<String, Value> = map
            .iter()
            .filter(|(k, v)| {
                !v.is_null()
                    || matches!(
                        k.as_str(),
                        "n_inner" | "pad_token_id" | "bos_token_id" | "eos_token_id"
                    )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (alias, name) in ALIASES {
            if let Some(v) = fields.remove(*alias) {
                fields.entry(name.to_string()).or_insert(v);
            }
        }
        let mut cfg: Gpt2Config = from_value(Value::Object(fields), path)?;
        cfg.common = common;
        cfg.raw = map;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return Err(Error::config(path, field, "must be at least 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::config(
                path,
                "n_head",
                format!(
                    "n_embd {} is not a multiple of n_head {}",
                    self.n_embd, self.n_head
                ),
            ));
        }
        for (field, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::config(path, field, format!("{p} is not in [0, 1)")));
            }
        }
        if self.n_inner.is_none() && self.n_embd.checked_mul(4).is_none() {
            return Err(Error::config(
                path,
                "n_embd",
                format!(
                    "{} is too large (the feed-forward width 4 × n_embd overflows)",
                    self.n_embd
                ),
            ));
        }
        if self.add_cross_attention {
            return Err(Error::config(
                path,
                "add_cross_attention",
                "GPT-2 with cross-attention is not supported",
            ));
        }
        Ok(())
    }

    pub fn inner_dim(&self) -> usize {
        // Saturating: validate refuses an n_embd whose 4× overflows; this never panics.
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Result<Value> {
        merge_json(&self.raw, self, &self.common, "gpt2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Gpt2Config> {
        let Value::Object(m) = v else { unreachable!() };
        Gpt2Config::from_map(m, Path::new("config.json"))
    }

    #[test]
    fn defaults_and_aliases() {
        let c = parse(json!({"model_type": "gpt2"})).unwrap();
        assert_eq!(
            (c.n_embd, c.n_layer, c.n_head, c.n_positions),
            (768, 12, 12, 1024)
        );
        assert_eq!(c.inner_dim(), 3072);
        assert_eq!(c.activation_function, Activation::GeluNew);
        assert_eq!(c.eos_token_ids(), vec![50256]);
        let c = parse(json!({"hidden_size": 64, "num_attention_heads": 4, "eos_token_id": [1, 2]}))
            .unwrap();
        assert_eq!((c.n_embd, c.n_head), (64, 4));
        assert_eq!(c.eos_token_ids(), vec![1, 2]);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(json!({"n_embd": 30, "n_head": 4}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("n_head") && err.contains("not a multiple"),
            "{err}"
        );
        let err = parse(json!({"activation_function": "gelu_newest"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`activation_function`"), "{err}");
    }
}
