//! Fine-tuning: a pretrained encoder plus a small head, trained on labeled JSONL and measured
//! with the field's metrics. One module per task; each gives the trainer an objective and an
//! evaluator, and predicts.

pub mod qa;
pub mod seq_cls;
pub mod similarity;
pub mod token_cls;

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::models::auto::Head;
use crate::tokenizer::{Padding, Tokenizer};

/// The tasks `ptm finetune` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    SeqCls,
    TokenCls,
    Qa,
    Similarity,
}

impl Task {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "seq-cls" => Ok(Task::SeqCls),
            "token-cls" => Ok(Task::TokenCls),
            "qa" => Ok(Task::Qa),
            "similarity" => Ok(Task::Similarity),
            other => Err(Error::invalid(format!(
                "unknown task {other:?}; supported: seq-cls, token-cls, qa, similarity"
            ))),
        }
    }

    /// The task a fine-tuned model directory was trained for: what its architecture's class
    /// is for, by the registry (a bare model is a bi-encoder).
    pub fn of_architecture(architecture: &str) -> Option<Self> {
        match crate::models::auto::class(architecture)?.1 {
            Head::SequenceClassification => Some(Task::SeqCls),
            Head::TokenClassification => Some(Task::TokenCls),
            Head::QuestionAnswering => Some(Task::Qa),
            Head::Base => Some(Task::Similarity),
            Head::MaskedLm | Head::PreTraining | Head::NextSentencePrediction | Head::CausalLm => {
                None
            }
        }
    }
}

/// Every line of a JSONL file as `T`, with its 1-based line number; a malformed line or a
/// missing or mistyped field is an error naming the file, the line and the field.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let mut out = Vec::new();
    for_each_line(path, |n, line| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let de = &mut serde_json::Deserializer::from_str(line);
        let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let at = if field == "." {
                String::new()
            } else {
                format!(" (field {field})")
            };
            line_error(path, n, format!("{}{at}", e.inner()))
        })?;
        out.push((n, value));
        Ok(())
    })?;
    if out.is_empty() {
        return Err(Error::invalid(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

/// Calls `f` with each line of `path` (1-based number, text without its ending), reading one
/// line at a time, each at most [`crate::io::MAX_LINE_BYTES`]: a file without line breaks
/// costs a bounded buffer, not its whole size.
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    let mut reader = crate::io::LineReader::open(path, crate::io::MAX_LINE_BYTES)?;
    let mut buf = Vec::new();
    while reader.read_line(&mut buf)? {
        let n = reader.line();
        let line = std::str::from_utf8(crate::io::line_content(&buf)).map_err(|e| {
            line_error(
                path,
                n,
                format!("not valid UTF-8 (byte {})", e.valid_up_to()),
            )
        })?;
        f(n, line)?;
    }
    Ok(())
}

/// An error about one line of a data file.
pub fn line_error(path: &Path, line: usize, message: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}:{line}: {message}", path.display()))
}

/// A copy of `tokenizer` that truncates to `max_length` and does not pad (batches are padded
/// to their own longest when collated).
pub fn unpadded(tokenizer: &Tokenizer, max_length: usize) -> Result<Tokenizer> {
    let mut t = tokenizer.clone();
    t.set_padding(Padding::None)?;
    t.set_truncation(Some(max_length))?;
    Ok(t)
}

/// A task's records after reading: how many, and a subset of them (`--train-fraction`).
pub trait DataSet: Sized {
    fn num_records(&self) -> usize;
    /// The records at `indices`, in that order.
    fn select(self, indices: &[usize]) -> Self;
}

/// The items of `v` at `indices`, in that order (a subset of a data set).
pub fn pick<T: Clone>(v: &[T], indices: &[usize]) -> Vec<T> {
    indices.iter().map(|&i| v[i].clone()).collect()
}

/// Indices in batches of similar length (longest first), so evaluation pads little.
pub fn length_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Label names, from a `labels.txt` (one per line) or from the data.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    pub names: Vec<String>,
}

impl LabelSet {
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut names = Vec::new();
        for_each_line(path, |_, line| {
            if !line.trim().is_empty() {
                names.push(line.trim().to_string());
            }
            Ok(())
        })?;
        if names.is_empty() {
            return Err(Error::invalid(format!("{}: no labels", path.display())));
        }
        Ok(LabelSet { names })
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// `labels.txt` beside a data file, if there is one.
pub fn labels_beside(data: &Path) -> Option<std::path::PathBuf> {
    Some(data.parent()?.join("labels.txt")).filter(|p| p.is_file())
}

/// A family whose heads read a summary token at the end of each input (XLNet's `<cls>`)
/// needs a tokenizer that puts it there.
pub fn check_tokenizer(config: &crate::config::ModelConfig, tokenizer: &Tokenizer) -> Result<()> {
    let family = crate::models::auto::family(config)?;
    if !family.summarises_last_token() {
        return Ok(());
    }
    let cls = tokenizer.special_id(|s| &s.cls);
    let last = tokenizer
        .encode_batch(&["a"])?
        .encodings
        .first()
        .and_then(|e| e.get_ids().last().copied());
    match cls {
        Some(id) if last == Some(id) => Ok(()),
        _ => Err(Error::invalid(format!(
            "a {} model needs a tokenizer that ends every input with {} (its heads read the last position); this tokenizer {}",
            family.model_type(),
            family.tokenizer().special.cls.unwrap_or_default(),
            match cls {
                None => "has no cls token".to_string(),
                Some(_) => "puts its cls token elsewhere (another family's tokenizer?)".to_string(),
            }
        ))),
    }
}
