//! The sentence-transformers layout: `modules.json` lists the pipeline (Transformer, Pooling,
//! Normalize), `1_Pooling/config.json` the pooling mode, `sentence_bert_config.json` the
//! maximum sequence length. ptm honours them so `ptm embed` gives sentence-transformers'
//! embeddings.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::heads::Pooling;

pub const MODULES_JSON: &str = "modules.json";
pub const SENTENCE_BERT_CONFIG: &str = "sentence_bert_config.json";

/// What a sentence-transformers model directory says about producing embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTransformerConfig {
    /// Where the transformer's own files are (the directory itself, or e.g. `0_Transformer`).
    pub transformer_dir: PathBuf,
    /// Pooling modes, concatenated in this order.
    pub pooling: Vec<Pooling>,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

impl SentenceTransformerConfig {
    /// Reads the layout of `dir`; `None` when the directory has no `modules.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let modules_path = dir.join(MODULES_JSON);
        if !modules_path.is_file() {
            return Ok(None);
        }
        let modules: Vec<ModuleEntry> =
            crate::config::from_value(crate::io::read_json(&modules_path)?, &modules_path)?;
        let mut cfg = SentenceTransformerConfig {
            transformer_dir: dir.to_path_buf(),
            pooling: vec![Pooling::Mean],
            normalize: false,
            max_seq_length: None,
            do_lower_case: false,
        };
        let mut has_transformer = false;
        for m in &modules {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            let module_dir = dir.join(&m.path);
            match kind {
                "Transformer" => {
                    has_transformer = true;
                    cfg.transformer_dir = module_dir.clone();
                    // Older releases keep sentence_bert_config.json in the module folder.
                    let sb = [
                        dir.join(SENTENCE_BERT_CONFIG),
                        module_dir.join(SENTENCE_BERT_CONFIG),
                    ]
                    .into_iter()
                    .find(|p| p.is_file());
                    if let Some(p) = sb {
                        let sb: SentenceBertConfig =
                            crate::config::from_value(crate::io::read_json(&p)?, &p)?;
                        cfg.max_seq_length = sb.max_seq_length;
                        cfg.do_lower_case = sb.do_lower_case;
                    }
                }
                "Pooling" => cfg.pooling = read_pooling(&module_dir.join("config.json"))?,
                "Normalize" => cfg.normalize = true,
                other => {
                    return Err(Error::config(
                        &modules_path,
                        "type",
                        format!(
                            "module {other} ({}) is not supported; ptm handles Transformer, Pooling and Normalize",
                            m.path
                        ),
                    ));
                }
            }
        }
        if !has_transformer {
            return Err(Error::config(
                &modules_path,
                "type",
                "no Transformer module listed",
            ));
        }
        Ok(Some(cfg))
    }
}

/// Writes the sentence-transformers files of a bi-encoder saved in `dir` itself (the
/// Transformer module at the root): modules.json, the pooling config, sentence_bert_config.json
/// and, with `normalize`, a Normalize module. Each file is written atomically.
pub fn save_layout(
    dir: &Path,
    pooling: &[Pooling],
    normalize: bool,
    dim: usize,
    max_seq_length: usize,
) -> Result<()> {
    let module = |idx: usize, path: &str, kind: &str| serde_json::json!({"idx": idx, "name": idx.to_string(), "path": path, "type": format!("sentence_transformers.models.{kind}")});
    let mut modules = vec![
        module(0, "", "Transformer"),
        module(1, "1_Pooling", "Pooling"),
    ];
    if normalize {
        modules.push(module(2, "2_Normalize", "Normalize"));
        crate::io::create_dir_all(&dir.join("2_Normalize"))?;
    }
    crate::config::save_json(&Value::Array(modules), &dir.join(MODULES_JSON))?;
    let flag = |p: Pooling| Value::Bool(pooling.contains(&p));
    let pooling_config = serde_json::json!({
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": flag(Pooling::Cls),
        "pooling_mode_mean_tokens": flag(Pooling::Mean),
        "pooling_mode_max_tokens": flag(Pooling::Max),
        "pooling_mode_mean_sqrt_len_tokens": flag(Pooling::MeanSqrtLen),
        "pooling_mode_weightedmean_tokens": false,
        "pooling_mode_lasttoken": flag(Pooling::LastToken),
    });
    crate::io::create_dir_all(&dir.join("1_Pooling"))?;
    crate::config::save_json(&pooling_config, &dir.join("1_Pooling").join("config.json"))?;
    crate::config::save_json(
        &serde_json::json!({"max_seq_length": max_seq_length, "do_lower_case": false}),
        &dir.join(SENTENCE_BERT_CONFIG),
    )
}

/// A model directory opened as transformers or sentence-transformers lays it out.
pub struct ModelDir {
    /// The directory given (or found in the Hugging Face cache).
    pub root: PathBuf,
    /// Its sentence-transformers layout, when it has one.
    pub sentence_transformers: Option<SentenceTransformerConfig>,
    /// The transformer itself: `root`, or the folder modules.json names for it.
    pub pretrained: crate::models::Pretrained,
}

impl ModelDir {
    /// Opens a local directory or an `org/name` cache entry.
    pub fn open(spec: &str) -> Result<Self> {
        let root = crate::hub::resolve_model_dir(spec)?;
        let st = SentenceTransformerConfig::from_dir(&root)?;
        let model_dir = st
            .as_ref()
            .map_or(root.as_path(), |s| s.transformer_dir.as_path());
        let pretrained = crate::models::Pretrained::from_dir(model_dir)?;
        Ok(ModelDir {
            root,
            sentence_transformers: st,
            pretrained,
        })
    }
}

/// Pooling modes from a Pooling module's config: the current `pooling_mode` (a name or a
/// list) or the older `pooling_mode_*_token(s)` flags, in sentence-transformers' order.
fn read_pooling(path: &Path) -> Result<Vec<Pooling>> {
    if !path.is_file() {
        return Ok(vec![Pooling::Mean]);
    }
    let map: Map<String, Value> = crate::io::read_json(path)?;
    let by_name = |name: &str| -> Result<Pooling> {
        match name {
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "mean" => Ok(Pooling::Mean),
            "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
            "lasttoken" => Ok(Pooling::LastToken),
            other => Err(Error::config(
                path,
                "pooling_mode",
                format!("mode {other:?} is not supported"),
            )),
        }
    };
    let modes = match map.get("pooling_mode") {
        Some(Value::String(s)) => vec![by_name(s)?],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Error::config(path, "pooling_mode", "expected names"))
                    .and_then(by_name)
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::config(
                path,
                "pooling_mode",
                "expected a name or a list of names",
            ));
        }
        None => {
            let flags = [
                ("pooling_mode_cls_token", "cls"),
                ("pooling_mode_max_tokens", "max"),
                ("pooling_mode_mean_tokens", "mean"),
                ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
                ("pooling_mode_weightedmean_tokens", "weightedmean"),
                ("pooling_mode_lasttoken", "lasttoken"),
            ];
            flags
                .iter()
                .filter(|(k, _)| map.get(*k).and_then(Value::as_bool).unwrap_or(false))
                .map(|(_, name)| by_name(name))
                .collect::<Result<_>>()?
        }
    };
    Ok(if modes.is_empty() {
        vec![Pooling::Mean]
    } else {
        modes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_the_minilm_layout() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            d.path(),
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}"#,
        );
        write(
            d.path(),
            "sentence_bert_config.json",
            r#"{"max_seq_length": 256, "do_lower_case": false}"#,
        );
        let c = SentenceTransformerConfig::from_dir(d.path())
            .unwrap()
            .unwrap();
        assert_eq!(c.pooling, vec![Pooling::Mean]);
        assert!(c.normalize);
        assert_eq!(c.max_seq_length, Some(256));
    }

    #[test]
    fn new_style_pooling_and_unsupported_modules() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.models.Transformer"},
            {"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        );
        write(
            d.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode": ["cls", "max"]}"#,
        );
        let c = SentenceTransformerConfig::from_dir(d.path())
            .unwrap()
            .unwrap();
        assert_eq!(c.pooling, vec![Pooling::Cls, Pooling::Max]);
        assert!(!c.normalize);

        write(
            d.path(),
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.models.Transformer"},
            {"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        );
        let err = SentenceTransformerConfig::from_dir(d.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Dense") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn no_modules_json_means_plain_transformers_layout() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            SentenceTransformerConfig::from_dir(d.path())
                .unwrap()
                .is_none()
        );
    }
}
