//! Model configs read from and written to Hugging Face's `config.json`, with HF's field names
//! and defaults. `model_type` picks the family; keys ptm does not model are kept as they were
//! and written back, so a config survives a load/save round trip unchanged.

mod bert;
mod gpt2;
mod roberta;
pub mod xlnet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use bert::BertConfig;
pub use gpt2::{Gpt2Config, TokenIds};
pub use roberta::RobertaConfig;
pub use xlnet::XlnetConfig;

use crate::error::{Error, Result};

/// The `model_type`s ptm can build.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert", "gpt2", "roberta", "xlnet"];

/// One family's config.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Bert(BertConfig),
    Gpt2(Gpt2Config),
    Roberta(RobertaConfig),
    Xlnet(XlnetConfig),
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let value: Value = crate::io::read_json(path)?;
        Self::from_value(value, path)
    }

    /// Parses a config already read as JSON; `path` is only used in error messages.
    pub fn from_value(value: Value, path: &Path) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(Error::config(path, "(top level)", "expected a JSON object"));
        };
        let model_type = match map.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Error::config(path, "model_type", "expected a string")),
            None => {
                return Err(Error::config(
                    path,
                    "model_type",
                    format!("missing; supported: {}", SUPPORTED_MODEL_TYPES.join(", ")),
                ));
            }
        };
        match model_type.as_str() {
            "bert" => Ok(ModelConfig::Bert(BertConfig::from_map(map, path)?)),
            "gpt2" => Ok(ModelConfig::Gpt2(Gpt2Config::from_map(map, path)?)),
            "roberta" => Ok(ModelConfig::Roberta(RobertaConfig::from_map(map, path)?)),
            "xlnet" => Ok(ModelConfig::Xlnet(XlnetConfig::from_map(map, path)?)),
            _ => Err(Error::UnknownModelType {
                path: path.to_path_buf(),
                model_type,
                supported: SUPPORTED_MODEL_TYPES.to_vec(),
            }),
        }
    }

    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::Bert(_) => "bert",
            ModelConfig::Gpt2(_) => "gpt2",
            ModelConfig::Roberta(_) => "roberta",
            ModelConfig::Xlnet(_) => "xlnet",
        }
    }

    pub fn common(&self) -> &CommonConfig {
        match self {
            ModelConfig::Bert(c) => &c.common,
            ModelConfig::Gpt2(c) => &c.common,
            ModelConfig::Roberta(c) => &c.common,
            ModelConfig::Xlnet(c) => &c.common,
        }
    }

    pub fn common_mut(&mut self) -> &mut CommonConfig {
        match self {
            ModelConfig::Bert(c) => &mut c.common,
            ModelConfig::Gpt2(c) => &mut c.common,
            ModelConfig::Roberta(c) => &mut c.common,
            ModelConfig::Xlnet(c) => &mut c.common,
        }
    }

    /// The shape of the model, whatever the family calls its fields.
    pub fn dims(&self) -> ModelDims {
        let bert = |c: &BertConfig, max_positions| ModelDims {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            max_positions,
            activation: c.hidden_act,
        };
        match self {
            ModelConfig::Bert(c) => bert(c, c.max_position_embeddings),
            ModelConfig::Roberta(c) => bert(c, c.max_positions()),
            ModelConfig::Gpt2(c) => ModelDims {
                vocab_size: c.vocab_size,
                hidden_size: c.n_embd,
                layers: c.n_layer,
                heads: c.n_head,
                intermediate_size: c.inner_dim(),
                max_positions: c.n_positions,
                activation: c.activation_function,
            },
            // Relative positions: no length limit, as transformers says (-1).
            ModelConfig::Xlnet(c) => ModelDims {
                vocab_size: c.vocab_size,
                hidden_size: c.d_model,
                layers: c.n_layer,
                heads: c.n_head,
                intermediate_size: c.d_inner,
                max_positions: usize::MAX,
                activation: c.ff_activation,
            },
        }
    }

    /// How many segment ids the embeddings know (1 where the family has no segments table).
    pub fn type_vocab_size(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.type_vocab_size,
            ModelConfig::Roberta(c) => c.type_vocab_size,
            ModelConfig::Gpt2(_) => 1,
            // Relative segment encodings: same-or-different, any number of segments.
            ModelConfig::Xlnet(_) => usize::MAX,
        }
    }

    /// The token ids generation falls back on when generation_config.json lacks them.
    pub fn special_token_ids(&self) -> SpecialTokenIds {
        match self {
            ModelConfig::Bert(c) => SpecialTokenIds {
                eos: Vec::new(),
                bos: None,
                pad: c.pad_token_id,
            },
            ModelConfig::Roberta(c) => SpecialTokenIds {
                eos: c.eos_token_id.into_iter().collect(),
                bos: c.bos_token_id,
                pad: c.pad_token_id,
            },
            ModelConfig::Gpt2(c) => SpecialTokenIds {
                eos: c.eos_token_ids(),
                bos: c.bos_token_id,
                pad: c.pad_token_id,
            },
            ModelConfig::Xlnet(c) => SpecialTokenIds {
                eos: c.eos_token_ids(),
                bos: c.bos_token_id,
                pad: c.pad_token_id,
            },
        }
    }

    /// The names of [`ModelConfig::dims`]' fields in this family's config.json, for messages.
    pub fn dim_names(&self) -> DimNames {
        match self {
            ModelConfig::Bert(_) | ModelConfig::Roberta(_) => DimNames {
                hidden: "hidden_size",
                layers: "num_hidden_layers",
                intermediate: "intermediate_size",
                positions: Some("max_position_embeddings"),
            },
            ModelConfig::Gpt2(_) => DimNames {
                hidden: "n_embd",
                layers: "n_layer",
                intermediate: "n_inner",
                positions: Some("n_positions"),
            },
            ModelConfig::Xlnet(_) => DimNames {
                hidden: "d_model",
                layers: "n_layer",
                intermediate: "d_inner",
                positions: None,
            },
        }
    }

    pub fn to_json(&self) -> Result<Value> {
        match self {
            ModelConfig::Bert(c) => c.to_json(),
            ModelConfig::Gpt2(c) => c.to_json(),
            ModelConfig::Roberta(c) => c.to_json(),
            ModelConfig::Xlnet(c) => c.to_json(),
        }
    }

    /// Writes `dir/config.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_json(&self.to_json()?, &dir.join("config.json"))
    }
}

/// The sizes every family has, under common names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelDims {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub activation: crate::nn::Activation,
}

/// `eos_token_id` (one or several), `bos_token_id`, `pad_token_id` of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokenIds {
    pub eos: Vec<u32>,
    pub bos: Option<u32>,
    pub pad: Option<u32>,
}

/// What [`ModelDims`]' fields are called in a family's config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimNames {
    pub hidden: &'static str,
    pub layers: &'static str,
    pub intermediate: &'static str,
    /// The learned position table (`None`: relative positions, no table).
    pub positions: Option<&'static str>,
}

pub(crate) fn save_json(value: &Value, path: &Path) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        cause: source,
    })?;
    text.push('\n');
    crate::io::write_atomic(path, text.as_bytes())
}

/// Deserializes `value` into `T`, naming the offending field on error.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value, path: &Path) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Error::config(path, &field, e.into_inner().to_string())
    })
}

/// The fields every HF config has (`PretrainedConfig`): labels, architectures, problem type.
/// `id2label` wins over `num_labels`, as in transformers; the default is two labels.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    pub architectures: Vec<String>,
    pub id2label: Vec<String>,
    pub problem_type: Option<ProblemType>,
    /// Linear-layer weights stored as int8 with scales (`ptm quantize --int8`), recorded as
    /// `quantization_config.quant_method`.
    pub int8_weights: bool,
    /// Where the config was read from, for error messages.
    pub path: Option<PathBuf>,
}

/// `quantization_config.quant_method` of checkpoints written by `ptm quantize --int8`.
pub const INT8_QUANT_METHOD: &str = "ptm_dynamic_int8";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    Regression,
    SingleLabelClassification,
    MultiLabelClassification,
}

impl Default for CommonConfig {
    fn default() -> Self {
        CommonConfig {
            architectures: Vec::new(),
            id2label: default_labels(2),
            problem_type: None,
            int8_weights: false,
            path: None,
        }
    }
}

/// `num_labels` is a bare number in the file: names are made for it only up to this many,
/// so a corrupt count cannot allocate without bound (id2label is bounded by the file).
const MAX_DEFAULT_LABELS: usize = 1 << 20;

fn default_labels(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("LABEL_{i}")).collect()
}

#[derive(Deserialize)]
struct RawCommon {
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    problem_type: Option<ProblemType>,
}

impl CommonConfig {
    pub(crate) fn from_map(map: &Map<String, Value>, path: &Path) -> Result<Self> {
        let keys = ["architectures", "id2label", "num_labels", "problem_type"];
        let sub: Map<String, Value> = keys
            .iter()
            .filter_map(|k| {
                map.get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect();
        let raw: RawCommon = from_value(Value::Object(sub), path)?;
        let id2label = match (raw.id2label, raw.num_labels) {
            (Some(m), _) => {
                let mut labels = vec![None; m.len()];
                for (k, v) in m {
                    let i: usize =
                        k.parse()
                            .ok()
                            .filter(|i| *i < labels.len())
                            .ok_or_else(|| {
                                Error::config(
                                    path,
                                    "id2label",
                                    format!("key {k:?} is not an index in 0..{}", labels.len()),
                                )
                            })?;
                    labels[i] = Some(v);
                }
                labels.into_iter().map(|l| l.unwrap_or_default()).collect()
            }
            (None, Some(n)) if n > MAX_DEFAULT_LABELS => {
                return Err(Error::config(
                    path,
                    "num_labels",
                    format!(
                        "{n} labels without names; ptm makes LABEL_i names for at most {MAX_DEFAULT_LABELS} (name more in id2label)"
                    ),
                ));
            }
            (None, Some(n)) => default_labels(n),
            (None, None) => default_labels(2),
        };
        let int8_weights = match map.get("quantization_config").filter(|v| !v.is_null()) {
            None => false,
            Some(q) => match q.get("quant_method").and_then(Value::as_str) {
                Some(INT8_QUANT_METHOD) => true,
                other => {
                    return Err(Error::config(
                        path,
                        "quantization_config.quant_method",
                        format!(
                            "{other:?} is not supported (ptm reads f32/bf16/f16 weights and its own {INT8_QUANT_METHOD:?})"
                        ),
                    ));
                }
            },
        };
        Ok(CommonConfig {
            architectures: raw.architectures.unwrap_or_default(),
            id2label,
            problem_type: raw.problem_type,
            int8_weights,
            path: Some(path.to_path_buf()),
        })
    }

    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    pub fn label2id(&self) -> BTreeMap<String, usize> {
        self.id2label
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect()
    }

    /// Writes these fields into a config map.
    pub(crate) fn write_into(&self, map: &mut Map<String, Value>) {
        if !self.architectures.is_empty() {
            map.insert(
                "architectures".into(),
                serde_json::json!(self.architectures),
            );
        }
        let id2label: Map<String, Value> = self
            .id2label
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), Value::String(l.clone())))
            .collect();
        map.insert("id2label".into(), Value::Object(id2label));
        map.insert("label2id".into(), serde_json::json!(self.label2id()));
        map.remove("num_labels");
        match self.problem_type {
            Some(p) => map.insert("problem_type".into(), serde_json::json!(p)),
            None => map.remove("problem_type"),
        };
        match self.int8_weights {
            true => map.insert(
                "quantization_config".into(),
                serde_json::json!({"quant_method": INT8_QUANT_METHOD}),
            ),
            false => map.remove("quantization_config"),
        };
    }
}

/// Builds the JSON of a family config: the keys read from disk, overwritten by the typed
/// fields, then the common ones.
pub(crate) fn merge_json<T: Serialize>(
    raw: &Map<String, Value>,
    typed: &T,
    common: &CommonConfig,
    model_type: &str,
) -> Result<Value> {
    let mut map = raw.clone();
    let typed = serde_json::to_value(typed).map_err(|source| Error::Json {
        path: common.path.clone().unwrap_or_else(|| "config.json".into()),
        cause: source,
    })?;
    if let Value::Object(fields) = typed {
        map.extend(fields);
    }
    common.write_into(&mut map);
    map.insert("model_type".into(), Value::String(model_type.to_string()));
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_value(v, Path::new("config.json"))
    }

    #[test]
    fn unknown_model_type_is_named_with_the_supported_list() {
        let err = parse(json!({"model_type": "gpt7"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"gpt7\"") && err.contains("supported: bert, gpt2"),
            "{err}"
        );
    }

    #[test]
    fn missing_model_type_is_an_error() {
        let err = parse(json!({"hidden_size": 8})).unwrap_err().to_string();
        assert!(err.contains("model_type"), "{err}");
    }

    #[test]
    fn labels_from_id2label_or_num_labels() {
        let c = parse(json!({"model_type": "bert", "num_labels": 3})).unwrap();
        assert_eq!(c.common().id2label, vec!["LABEL_0", "LABEL_1", "LABEL_2"]);
        let c = parse(
            json!({"model_type": "gpt2", "id2label": {"1": "pos", "0": "neg"}, "num_labels": 5}),
        )
        .unwrap();
        assert_eq!(c.common().id2label, vec!["neg", "pos"]);
        let err = parse(json!({"model_type": "bert", "id2label": {"0": "a", "2": "b"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("id2label") && err.contains("\"2\""), "{err}");
    }
}
