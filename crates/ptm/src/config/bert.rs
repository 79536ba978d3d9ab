//! `BertConfig`: the fields and defaults of transformers' `configuration_bert.py`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CommonConfig, from_value, merge_json};
use crate::error::{Error, Result};
use crate::nn::Activation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub position_embedding_type: String,
    pub classifier_dropout: Option<f64>,
    pub is_decoder: bool,
    pub tie_word_embeddings: bool,
    #[serde(skip)]
    pub common: CommonConfig,
    /// Every key of the file as read, so unknown ones are written back unchanged.
    #[serde(skip)]
    raw: Map<String, Value>,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(0),
            position_embedding_type: "absolute".into(),
            classifier_dropout: None,
            is_decoder: false,
            tie_word_embeddings: true,
            common: CommonConfig::default(),
            raw: Map::new(),
        }
    }
}

impl BertConfig {
    pub(crate) fn from_map(map: Map<String, Value>, path: &Path) -> Result<Self> {
        Self::from_map_with_defaults(map, path, BertConfig::default())
    }

    /// Reads the fields over `defaults` (another family's, for configs with BERT's fields).
    pub(crate) fn from_map_with_defaults(
        map: Map<String, Value>,
        path: &Path,
        defaults: BertConfig,
    ) -> Result<Self> {
        let common = CommonConfig::from_map(&map, path)?;
        let Value::Object(mut fields) =
            serde_json::to_value(&defaults).map_err(|cause| Error::Json {
                path: path.to_path_buf(),
                cause,
            })?
        else {
            return Err(Error::internal("a config serialised to a non-object"));
        };
        // `null` means "use the default" for the non-optional fields, as in transformers.
        fields.extend(
            map.iter()
                .filter(|(k, v)| {
                    !v.is_null() || matches!(k.as_str(), "pad_token_id" | "classifier_dropout")
                })
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut cfg: BertConfig = from_value(Value::Object(fields), path)?;
        cfg.common = common;
        cfg.raw = map;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::config(path, field, "must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                path,
                "num_attention_heads",
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        for (field, p) in [
            ("hidden_dropout_prob", Some(self.hidden_dropout_prob)),
            (
                "attention_probs_dropout_prob",
                Some(self.attention_probs_dropout_prob),
            ),
            ("classifier_dropout", self.classifier_dropout),
        ] {
            if let Some(p) = p.filter(|p| !(0.0..1.0).contains(p)) {
                return Err(Error::config(path, field, format!("{p} is not in [0, 1)")));
            }
        }
        // NaN is not positive either.
        if self.layer_norm_eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::config(path, "layer_norm_eps", "must be positive"));
        }
        if let Some(pad) = self.pad_token_id.filter(|p| *p as usize >= self.vocab_size) {
            return Err(Error::config(
                path,
                "pad_token_id",
                format!(
                    "{pad} is outside the vocabulary (vocab_size {})",
                    self.vocab_size
                ),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::config(
                path,
                "position_embedding_type",
                format!(
                    "{:?} is not supported; BERT in ptm (as in transformers 5) uses \"absolute\"",
                    self.position_embedding_type
                ),
            ));
        }
        if self.is_decoder {
            return Err(Error::config(
                path,
                "is_decoder",
                "BERT as a decoder is not supported; use a decoder family for causal LM",
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Dropout before the classification heads (`classifier_dropout`, else the hidden one).
    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    pub fn to_json(&self) -> Result<Value> {
        self.to_json_as("bert")
    }

    /// The config.json of a family that shares these fields, under its `model_type`.
    pub(crate) fn to_json_as(&self, model_type: &str) -> Result<Value> {
        merge_json(&self.raw, self, &self.common, model_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<BertConfig> {
        let Value::Object(m) = v else { unreachable!() };
        BertConfig::from_map(m, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_transformers_defaults() {
        let c = parse(json!({"model_type": "bert"})).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.intermediate_size),
            (768, 12, 3072)
        );
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.pad_token_id, Some(0));
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(json!({"hidden_size": "big"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`hidden_size`"), "{err}");
        let err = parse(json!({"hidden_act": "swishy"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`hidden_act`") && err.contains("gelu_new"),
            "{err}"
        );
        let err = parse(json!({"hidden_size": 30, "num_attention_heads": 4}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a multiple"), "{err}");
        let err = parse(json!({"position_embedding_type": "relative_key"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("position_embedding_type"), "{err}");
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let c = parse(
            json!({"model_type": "bert", "gradient_checkpointing": false,
                             "transformers_version": "4.8.2", "hidden_size": 64,
                             "num_attention_heads": 4}),
        )
        .unwrap();
        let v = c.to_json().unwrap();
        assert_eq!(v["gradient_checkpointing"], json!(false));
        assert_eq!(v["transformers_version"], json!("4.8.2"));
        assert_eq!(v["hidden_size"], json!(64));
        assert_eq!(v["hidden_act"], json!("gelu"));
        // Reading what was written gives the same JSON again.
        assert_eq!(parse(v.clone()).unwrap().to_json().unwrap(), v);
    }
}
