//! The generation settings: transformers' `GenerationConfig` fields that ptm honours, read
//! from a model's `generation_config.json` with the model's own token ids filling the gaps,
//! and checked before any decoding starts.

use std::path::Path;

use serde::Deserialize;

use crate::config::TokenIds;
use crate::error::{Error, Result};

pub const GENERATION_CONFIG: &str = "generation_config.json";

/// When beam search stops (transformers' `early_stopping`: true, false or "never").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub enum EarlyStopping {
    /// `true`: as soon as `num_beams` hypotheses are finished.
    Done,
    /// `false`: when no running beam can, by a heuristic on its length, beat the finished ones.
    Heuristic,
    /// `"never"`: only when no running beam can beat them at any length (canonical beam search).
    Never,
}

impl TryFrom<serde_json::Value> for EarlyStopping {
    type Error = String;

    fn try_from(v: serde_json::Value) -> std::result::Result<Self, String> {
        match v {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::Done),
            serde_json::Value::Bool(false) => Ok(EarlyStopping::Heuristic),
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(format!("expected true, false or \"never\", got {other}")),
        }
    }
}

/// transformers' `GenerationConfig` fields that ptm honours, with its defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    pub max_length: usize,
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: usize,
    pub do_sample: bool,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub repetition_penalty: f64,
    pub no_repeat_ngram_size: usize,
    pub num_beams: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub num_return_sequences: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    #[serde(skip)]
    pub stop_strings: Vec<String>,
    #[serde(skip)]
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_length: 20,
            max_new_tokens: None,
            min_new_tokens: 0,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            num_return_sequences: 1,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// `dir/generation_config.json` when present (null fields take the defaults), else defaults;
    /// token ids the file lacks come from the model's config.
    pub fn from_dir(
        dir: &Path,
        model_eos: Vec<u32>,
        model_bos: Option<u32>,
        model_pad: Option<u32>,
    ) -> Result<Self> {
        let path = dir.join(GENERATION_CONFIG);
        let mut cfg = if path.is_file() {
            let value: serde_json::Value = crate::io::read_json(&path)?;
            let fields: serde_json::Map<String, serde_json::Value> = match value {
                serde_json::Value::Object(m) => {
                    m.into_iter().filter(|(_, v)| !v.is_null()).collect()
                }
                _ => {
                    return Err(Error::config(
                        &path,
                        "(top level)",
                        "expected a JSON object",
                    ));
                }
            };
            crate::config::from_value(serde_json::Value::Object(fields), &path)?
        } else {
            GenerationConfig::default()
        };
        if cfg.eos_token_id.is_none() && !model_eos.is_empty() {
            cfg.eos_token_id = Some(TokenIds::Many(model_eos));
        }
        cfg.bos_token_id = cfg.bos_token_id.or(model_bos);
        cfg.pad_token_id = cfg.pad_token_id.or(model_pad);
        Ok(cfg)
    }

    /// The padding id: the configured one, else the first EOS (as transformers falls back).
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id
            .or(self.eos_ids().first().copied())
            .unwrap_or(0)
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid(what));
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        // Greedy search ignores the temperature, as transformers does, unless it is not a number.
        if !self.temperature.is_finite() || (self.temperature <= 0.0 && self.do_sample) {
            return bad(format!(
                "temperature must be a finite number above 0, got {}",
                self.temperature
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad(format!(
                "length_penalty must be a finite number, got {}",
                self.length_penalty
            ));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("a stop string is empty (it would stop at once)".into());
        }
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if self.num_beams > 1 && self.do_sample {
            return bad(
                "beam sampling is not supported; use --num-beams or --do-sample, not both".into(),
            );
        }
        if self.num_return_sequences == 0
            || (self.num_return_sequences > 1 && !self.do_sample && self.num_beams == 1)
        {
            return bad("num_return_sequences > 1 needs sampling or beam search".into());
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return bad(format!(
                "num_return_sequences {} is more than num_beams {}",
                self.num_return_sequences, self.num_beams
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be a finite number above 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    /// How many tokens a prompt of `prompt_len` may gain: `max_new_tokens`, else what
    /// `max_length` leaves.
    pub(super) fn new_token_limit(&self, prompt_len: usize) -> usize {
        self.max_new_tokens
            .unwrap_or(self.max_length.saturating_sub(prompt_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_config_json_sets_defaults_and_the_model_fills_token_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(GENERATION_CONFIG),
            r#"{"do_sample": true, "top_k": null, "top_p": 0.9, "max_new_tokens": 30, "early_stopping": "never"}"#,
        )
        .unwrap();
        let c = GenerationConfig::from_dir(dir.path(), vec![7], Some(1), None).unwrap();
        assert!(c.do_sample);
        assert_eq!((c.top_k, c.top_p, c.max_new_tokens), (50, 0.9, Some(30)));
        assert_eq!(c.early_stopping, EarlyStopping::Never);
        assert_eq!(
            (c.eos_ids(), c.bos_token_id, c.pad_id()),
            (vec![7], Some(1), 7)
        );
        std::fs::write(dir.path().join(GENERATION_CONFIG), r#"{"top_p": "high"}"#).unwrap();
        let err = GenerationConfig::from_dir(dir.path(), vec![], None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("generation_config.json") && err.contains("`top_p`"),
            "{err}"
        );
    }

    #[test]
    fn settings_that_are_not_finite_or_empty_are_refused() {
        let check = |cfg: GenerationConfig, says: &str| {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        };
        let base = GenerationConfig::default;
        check(
            GenerationConfig {
                length_penalty: f64::NAN,
                ..base()
            },
            "length_penalty must be a finite number, got NaN",
        );
        check(
            GenerationConfig {
                temperature: f64::INFINITY,
                ..base()
            },
            "temperature must be a finite number above 0, got inf",
        );
        check(
            GenerationConfig {
                repetition_penalty: f64::INFINITY,
                ..base()
            },
            "repetition_penalty must be a finite number above 0",
        );
        check(
            GenerationConfig {
                stop_strings: vec!["ok".into(), String::new()],
                ..base()
            },
            "a stop string is empty",
        );
    }
}
