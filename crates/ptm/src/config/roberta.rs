//! `RobertaConfig`: BERT's fields with the defaults of transformers' `configuration_roberta.py`
//! (padding id 1, `<s>` 0, `</s>` 2). Position ids count from `pad_token_id + 1`, so the
//! usable length is `max_position_embeddings - pad_token_id - 1` (512 of roberta-base's 514).

use std::ops::{Deref, DerefMut};
use std::path::Path;

use serde_json::{Map, Value};

use super::BertConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct RobertaConfig {
    bert: BertConfig,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl Default for RobertaConfig {
    fn default() -> Self {
        let mut bert = BertConfig::default();
        bert.vocab_size = 50265;
        bert.pad_token_id = Some(1);
        RobertaConfig {
            bert,
            bos_token_id: Some(0),
            eos_token_id: Some(2),
        }
    }
}

impl Deref for RobertaConfig {
    type Target = BertConfig;
    fn deref(&self) -> &BertConfig {
        &self.bert
    }
}

impl DerefMut for RobertaConfig {
    fn deref_mut(&mut self) -> &mut BertConfig {
        &mut self.bert
    }
}

impl RobertaConfig {
    pub(crate) fn from_map(map: Map<String, Value>, path: &Path) -> Result<Self> {
        let defaults = RobertaConfig::default();
        let token = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            match map.get(key) {
                None => Ok(default),
                Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .map(Some)
                    .ok_or_else(|| Error::config(path, key, format!("{v} is not a token id"))),
            }
        };
        let bos_token_id = token("bos_token_id", defaults.bos_token_id)?;
        let eos_token_id = token("eos_token_id", defaults.eos_token_id)?;
        let bert = BertConfig::from_map_with_defaults(map, path, defaults.bert)?;
        let pad = bert.pad_token_id.ok_or_else(|| {
            Error::config(
                path,
                "pad_token_id",
                "RoBERTa counts positions from the padding id; it cannot be null",
            )
        })?;
        if bert.max_position_embeddings <= pad as usize + 1 {
            return Err(Error::config(
                path,
                "max_position_embeddings",
                format!(
                    "{} leaves no position: RoBERTa's positions start at pad_token_id + 1 = {}",
                    bert.max_position_embeddings,
                    pad + 1
                ),
            ));
        }
        Ok(RobertaConfig {
            bert,
            bos_token_id,
            eos_token_id,
        })
    }

    /// The padding id, which is also the embedding row positions count from.
    pub fn padding_idx(&self) -> u32 {
        // Checked present at load; a config built in code without one counts from 1.
        self.bert.pad_token_id.unwrap_or(1)
    }

    /// The longest input: positions `padding_idx + 1 ..` up to the table's end.
    pub fn max_positions(&self) -> usize {
        self.bert
            .max_position_embeddings
            .saturating_sub(self.padding_idx() as usize + 1)
    }

    pub fn to_json(&self) -> Result<Value> {
        let mut v = self.bert.to_json_as("roberta")?;
        if let Value::Object(m) = &mut v {
            m.insert("bos_token_id".into(), serde_json::json!(self.bos_token_id));
            m.insert("eos_token_id".into(), serde_json::json!(self.eos_token_id));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RobertaConfig> {
        let Value::Object(m) = v else { unreachable!() };
        RobertaConfig::from_map(m, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_transformers_defaults_and_survive_a_round_trip() {
        let c = parse(json!({"model_type": "roberta"})).unwrap();
        assert_eq!((c.vocab_size, c.pad_token_id), (50265, Some(1)));
        assert_eq!((c.bos_token_id, c.eos_token_id), (Some(0), Some(2)));
        assert_eq!(c.max_positions(), 512 - 2);
        let c = parse(
            json!({"model_type": "roberta", "max_position_embeddings": 514,
                             "type_vocab_size": 1, "layer_norm_eps": 1e-5}),
        )
        .unwrap();
        assert_eq!(c.max_positions(), 512);
        let v = c.to_json().unwrap();
        assert_eq!(v["model_type"], json!("roberta"));
        assert_eq!(parse(v.clone()).unwrap().to_json().unwrap(), v);
    }

    #[test]
    fn a_position_table_too_short_for_the_padding_offset_is_refused() {
        let err = parse(json!({"max_position_embeddings": 2}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_position_embeddings"), "{err}");
        let err = parse(json!({"pad_token_id": null}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pad_token_id"), "{err}");
    }
}
