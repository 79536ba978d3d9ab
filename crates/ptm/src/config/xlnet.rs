//! `XLNetConfig`: the fields and defaults of transformers' `configuration_xlnet.py`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CommonConfig, TokenIds, from_value, merge_json};
use crate::error::{Error, Result};
use crate::nn::Activation;

/// Which positions a token attends to without a `perm_mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttnType {
    /// Every position (XLNet's pretraining and fine-tuning).
    Bi,
    /// Positions up to its own, and the memory (Transformer-XL's).
    Uni,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct XlnetConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_inner: usize,
    /// d_model / n_head when absent; transformers refuses any other value.
    pub d_head: Option<usize>,
    pub ff_activation: Activation,
    /// Separate relative-attention biases per layer (HF keeps them per layer either way).
    pub untie_r: bool,
    pub attn_type: AttnType,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub dropout: f64,
    /// Hidden states kept as memory for the next segment (None or 0: all of them).
    pub mem_len: Option<usize>,
    /// Of each segment, the first this many states go to memory (None: all).
    pub reuse_len: Option<usize>,
    pub use_mems_eval: bool,
    pub use_mems_train: bool,
    /// Relative positions counted both ways, for half of the batch each.
    pub bi_data: bool,
    /// Relative distances beyond this are clamped (-1: never).
    pub clamp_len: i64,
    pub same_length: bool,
    /// The sequence summary of XLNetForSequenceClassification: the last token's state ("last"),
    /// through a dense layer (`summary_use_proj`) and an activation.
    pub summary_type: String,
    pub summary_use_proj: bool,
    /// The summary projects straight to the labels instead of d_model (not set by XLNet).
    pub summary_proj_to_labels: bool,
    pub summary_activation: Option<Activation>,
    pub summary_first_dropout: f64,
    pub summary_last_dropout: f64,
    pub start_n_top: usize,
    pub end_n_top: usize,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub tie_word_embeddings: bool,
    #[serde(skip)]
    pub common: CommonConfig,
    #[serde(skip)]
    raw: Map<String, Value>,
}

impl Default for XlnetConfig {
    fn default() -> Self {
        XlnetConfig {
            vocab_size: 32000,
            d_model: 1024,
            n_layer: 24,
            n_head: 16,
            d_inner: 4096,
            d_head: None,
            ff_activation: Activation::Gelu,
            untie_r: true,
            attn_type: AttnType::Bi,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            dropout: 0.1,
            mem_len: Some(512),
            reuse_len: None,
            use_mems_eval: true,
            use_mems_train: false,
            bi_data: false,
            clamp_len: -1,
            same_length: false,
            summary_type: "last".into(),
            summary_use_proj: true,
            summary_proj_to_labels: false,
            summary_activation: Some(Activation::Tanh),
            summary_first_dropout: 0.0,
            summary_last_dropout: 0.1,
            start_n_top: 5,
            end_n_top: 5,
            pad_token_id: Some(5),
            bos_token_id: Some(1),
            eos_token_id: Some(TokenIds::One(2)),
            tie_word_embeddings: true,
            common: CommonConfig::default(),
            raw: Map::new(),
        }
    }
}

/// transformers' `attribute_map`.
const ALIASES: &[(&str, &str)] = &[
    ("n_token", "vocab_size"),
    ("hidden_size", "d_model"),
    ("num_attention_heads", "n_head"),
    ("num_hidden_layers", "n_layer"),
];

/// Fields that may be null in config.json (null means "none", not "the default").
const NULLABLE: &[&str] = &[
    "d_head",
    "mem_len",
    "reuse_len",
    "summary_activation",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
];

impl XlnetConfig {
    pub(crate) fn from_map(map: Map<String, Value>, path: &Path) -> Result<Self> {
        let common = CommonConfig::from_map(&map, path)?;
        let mut fields: Map<String, Value> = map
            .iter()
            .filter(|(k, v)| !v.is_null() || NULLABLE.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (alias, name) in ALIASES {
            if let Some(v) = fields.remove(*alias) {
                fields.entry(name.to_string()).or_insert(v);
            }
        }
        let mut cfg: XlnetConfig = from_value(Value::Object(fields), path)?;
        cfg.common = common;
        cfg.raw = map;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_head", self.n_head),
            ("d_inner", self.d_inner),
        ] {
            if v == 0 {
                return Err(Error::config(path, field, "must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return Err(Error::config(
                path,
                "n_head",
                format!(
                    "d_model {} is not a multiple of n_head {}",
                    self.d_model, self.n_head
                ),
            ));
        }
        if let Some(d) = self.d_head.filter(|&d| d != self.d_model / self.n_head) {
            return Err(Error::config(
                path,
                "d_head",
                format!(
                    "{d} is not d_model / n_head = {}",
                    self.d_model / self.n_head
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                path,
                "dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if self.summary_type != "last" {
            return Err(Error::config(
                path,
                "summary_type",
                format!(
                    "{:?} is not supported (XLNet uses \"last\")",
                    self.summary_type
                ),
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Result<Value> {
        merge_json(&self.raw, self, &self.common, "xlnet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<XlnetConfig> {
        let Value::Object(m) = v else { unreachable!() };
        XlnetConfig::from_map(m, Path::new("config.json"))
    }

    #[test]
    fn defaults_and_aliases() {
        let c = parse(json!({"model_type": "xlnet"})).unwrap();
        assert_eq!(
            (c.d_model, c.n_layer, c.n_head, c.d_inner, c.head_dim()),
            (1024, 24, 16, 4096, 64)
        );
        assert_eq!(
            (c.attn_type, c.mem_len, c.clamp_len),
            (AttnType::Bi, Some(512), -1)
        );
        assert_eq!(c.ff_activation, Activation::Gelu);
        let c = parse(json!({"n_token": 100, "hidden_size": 32, "num_attention_heads": 4, "mem_len": null, "attn_type": "uni"})).unwrap();
        assert_eq!(
            (c.vocab_size, c.d_model, c.n_head, c.mem_len, c.attn_type),
            (100, 32, 4, None, AttnType::Uni)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(json!({"d_model": 30, "n_head": 4}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("n_head") && err.contains("not a multiple"),
            "{err}"
        );
        let err = parse(json!({"d_model": 32, "n_head": 4, "d_head": 4}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("d_head"), "{err}");
        let err = parse(json!({"attn_type": "sideways"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`attn_type`"), "{err}");
    }
}
