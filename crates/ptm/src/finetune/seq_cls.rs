//! Sequence classification of single texts or pairs (sentiment, spam, topic, entailment):
//! JSONL `{"text", "text_pair"?, "label"}` with labels as names or ids; a linear head on the
//! pooled `[CLS]` state (`BertForSequenceClassification`) or XLNet's summary of its last token, cross-entropy with optional class
//! weights; accuracy, precision, recall, F1 and the confusion matrix.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;
use tokenizers::Encoding;

use super::{LabelSet, length_batches, line_error, pick, read_jsonl, unpadded};
use crate::error::{Error, Result};
use crate::metrics::{ClassificationReport, classification_report};
use crate::models::EncoderInput;
use crate::models::traits::SequenceClassifier;
use crate::nn::Mode;
use crate::nn::loss::{IGNORE_INDEX, weighted_cross_entropy};
use crate::tokenizer::{PadSpec, Tokenizer};
use crate::train::distributed::{Collective, gather_batches};

/// A label as the data gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LabelValue {
    Id(i64),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRecord {
    pub text: String,
    #[serde(default)]
    pub text_pair: Option<String>,
    #[serde(default)]
    pub label: Option<LabelValue>,
    /// Carried through to predictions.
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

/// A tokenized data set.
pub struct SeqClsData {
    pub records: Vec<TextRecord>,
    pub encodings: Vec<Encoding>,
    /// Class ids; `None` for unlabeled records.
    pub labels: Vec<Option<usize>>,
}

/// Reads `path`. Labels are resolved against `labels`; with `require_labels` every record
/// must have one (training, evaluation).
pub fn load(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
    labels: &LabelSet,
    require_labels: bool,
) -> Result<SeqClsData> {
    let (records, ids) = read(path, labels, require_labels)?;
    let encodings = encode(&unpadded(tokenizer, max_length)?, &inputs(&records))?;
    Ok(SeqClsData {
        records,
        encodings,
        labels: ids,
    })
}

/// Reads and checks `path`'s records with their class ids (resolved against `labels`; with
/// `require_labels` every record must have one), not yet tokenized.
pub fn read(
    path: &Path,
    labels: &LabelSet,
    require_labels: bool,
) -> Result<(Vec<TextRecord>, Vec<Option<usize>>)> {
    let rows: Vec<(usize, TextRecord)> = read_jsonl(path)?;
    let mut ids = Vec::with_capacity(rows.len());
    for (line, r) in &rows {
        if r.text.trim().is_empty() {
            return Err(line_error(path, *line, "empty \"text\""));
        }
        ids.push(match &r.label {
            None if require_labels => return Err(line_error(path, *line, "no \"label\"")),
            None => None,
            Some(l) => Some(resolve(l, labels).ok_or_else(|| {
                line_error(
                    path,
                    *line,
                    format!(
                        "label {l:?} is not one of the {} labels {:?}",
                        labels.names.len(),
                        labels.names
                    ),
                )
            })?),
        });
    }
    Ok((rows.into_iter().map(|(_, r)| r).collect(), ids))
}

/// The model inputs of records: every one a pair when any is (a missing second text is
/// empty), so one data set has one shape.
pub fn inputs(records: &[TextRecord]) -> Vec<(&str, Option<&str>)> {
    let pairs = records.iter().any(|r| r.text_pair.is_some());
    records
        .iter()
        .map(|r| {
            let pair = r.text_pair.as_deref().or(pairs.then_some(""));
            (r.text.as_str(), pair)
        })
        .collect()
}

/// Encodes texts and text pairs, in order, with `tokenizer`'s truncation and padding.
pub fn encode(tokenizer: &Tokenizer, inputs: &[(&str, Option<&str>)]) -> Result<Vec<Encoding>> {
    let singles: Vec<&str> = inputs
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(a, _)| *a)
        .collect();
    let pairs: Vec<(&str, &str)> = inputs
        .iter()
        .filter_map(|(a, b)| b.map(|b| (*a, b)))
        .collect();
    let mut singles = tokenizer.encode_batch(&singles)?.encodings.into_iter();
    let mut pairs = tokenizer.encode_pairs(&pairs)?.encodings.into_iter();
    inputs
        .iter()
        .map(|(_, b)| {
            let next = if b.is_some() {
                pairs.next()
            } else {
                singles.next()
            };
            next.ok_or_else(|| {
                Error::internal("the tokenizer returned fewer encodings than inputs")
            })
        })
        .collect()
}

impl super::DataSet for SeqClsData {
    fn num_records(&self) -> usize {
        self.records.len()
    }

    fn select(self, indices: &[usize]) -> Self {
        SeqClsData {
            records: pick(&self.records, indices),
            encodings: pick(&self.encodings, indices),
            labels: pick(&self.labels, indices),
        }
    }
}

fn resolve(label: &LabelValue, labels: &LabelSet) -> Option<usize> {
    match label {
        LabelValue::Id(i) => usize::try_from(*i).ok().filter(|&i| i < labels.names.len()),
        LabelValue::Name(n) => labels.id(n),
    }
}

/// The largest label id read from data without a labels file.
const MAX_LABEL_ID: i64 = 1 << 20;

/// The label set of training data without a labels file: names sorted, or `LABEL_i` for ids.
pub fn labels_from_data(path: &Path) -> Result<LabelSet> {
    let rows: Vec<(usize, TextRecord)> = read_jsonl(path)?;
    let mut names = std::collections::BTreeSet::new();
    let mut max_id = None;
    for (line, r) in &rows {
        match &r.label {
            Some(LabelValue::Name(n)) => {
                names.insert(n.clone());
            }
            // Every id up to the largest gets a name: a corrupt huge id must not allocate them.
            Some(LabelValue::Id(i)) if *i > MAX_LABEL_ID => {
                return Err(line_error(
                    path,
                    *line,
                    format!("label {i} is above {MAX_LABEL_ID}; give --labels FILE for ids"),
                ));
            }
            Some(LabelValue::Id(i)) if *i >= 0 => max_id = max_id.max(Some(*i as usize)),
            Some(LabelValue::Id(i)) => {
                return Err(line_error(path, *line, format!("negative label {i}")));
            }
            None => return Err(line_error(path, *line, "no \"label\"")),
        }
    }
    match (names.is_empty(), max_id) {
        (false, None) => Ok(LabelSet {
            names: names.into_iter().collect(),
        }),
        (true, Some(m)) => Ok(LabelSet {
            names: (0..=m.max(1)).map(|i| format!("LABEL_{i}")).collect(),
        }),
        _ => Err(Error::invalid(format!(
            "{}: labels mix names and ids; give --labels FILE",
            path.display()
        ))),
    }
}

/// `(1 / frequency)` weights normalised to mean 1, as scikit-learn's "balanced".
pub fn balanced_class_weights(labels: &[Option<usize>], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    labels.iter().flatten().for_each(|&l| counts[l] += 1);
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f32 / (classes as f32 * c as f32)
            }
        })
        .collect()
}

/// The training objective.
pub struct SeqClsObjective<'a> {
    pub model: &'a dyn SequenceClassifier,
    pub data: &'a SeqClsData,
    pub pad: PadSpec,
    pub class_weights: Option<Vec<f32>>,
}

impl crate::train::Objective for SeqClsObjective<'_> {
    fn num_examples(&self) -> usize {
        self.data.encodings.len()
    }

    fn loss(
        &self,
        examples: &[usize],
        _epoch: usize,
        mode: Mode,
    ) -> Result<crate::train::LossTerms> {
        let device = self.model.device();
        let encodings: Vec<&Encoding> = examples.iter().map(|&i| &self.data.encodings[i]).collect();
        let input = EncoderInput::from_encodings(&encodings, self.pad, &device)?;
        let labels: Vec<i64> = examples
            .iter()
            .map(|&i| self.data.labels[i].map_or(IGNORE_INDEX, |l| l as i64))
            .collect();
        let labels = Tensor::from_vec(labels, examples.len(), &device)?;
        let logits = self.model.forward(&input, None, mode)?.logits;
        let loss = weighted_cross_entropy(
            &logits,
            &labels,
            IGNORE_INDEX,
            self.class_weights.as_deref(),
        )?;
        Ok(crate::train::LossTerms {
            loss,
            count: examples.len(),
            tokens: encodings.iter().map(|e| e.len()).sum(),
        })
    }
}

/// Class probabilities of every record, in order (batched by length, dropout off; the
/// batches shared among the ranks of `world`).
pub fn predict(
    model: &dyn SequenceClassifier,
    data: &SeqClsData,
    pad: PadSpec,
    batch_size: usize,
    world: Option<&dyn Collective>,
) -> Result<Vec<Vec<f32>>> {
    scores(
        model,
        &data.encodings,
        pad,
        batch_size,
        world,
        crate::nn::ops::softmax_last_dim,
    )
}

/// `f` of the logits (batch, classes) of every encoding, in order: batched by length, dropout
/// off, the batches shared among the ranks of `world`.
pub fn scores(
    model: &dyn SequenceClassifier,
    encodings: &[Encoding],
    pad: PadSpec,
    batch_size: usize,
    world: Option<&dyn Collective>,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Vec<f32>>> {
    let device = model.device();
    let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
    let batches = length_batches(&lengths, batch_size);
    let flat = gather_batches(world, batches.len(), |b| {
        let batch: Vec<&Encoding> = batches[b].iter().map(|&i| &encodings[i]).collect();
        let logits = model
            .forward(
                &EncoderInput::from_encodings(&batch, pad, &device)?,
                None,
                Mode::Eval,
            )?
            .logits;
        let scores = f(&logits)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?; // (b * classes)
        Ok(scores.into_iter().map(f64::from).collect())
    })?;
    let mut out = vec![Vec::new(); lengths.len()];
    for (batch, scores) in batches.iter().zip(flat) {
        let classes = scores.len() / batch.len();
        for (&i, p) in batch.iter().zip(scores.chunks(classes)) {
            out[i] = p.iter().map(|&x| x as f32).collect();
        }
    }
    Ok(out)
}

/// The most probable class and its probability.
pub fn argmax(probs: &[f32]) -> (usize, f32) {
    probs
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, p)| {
            if p > best.1 { (i, p) } else { best }
        })
}

/// Metrics of predictions against the labeled records, with the mean cross-entropy.
pub fn report(
    data: &SeqClsData,
    labels: &LabelSet,
    probs: &[Vec<f32>],
) -> Result<(ClassificationReport, f64)> {
    let (mut gold, mut pred, mut nll) = (Vec::new(), Vec::new(), 0f64);
    for (label, p) in data.labels.iter().zip(probs) {
        let Some(g) = label else {
            return Err(Error::invalid("evaluation needs a label on every record"));
        };
        gold.push(*g);
        pred.push(argmax(p).0);
        nll -= f64::from(p[*g].max(1e-30)).ln();
    }
    Ok((
        classification_report(&labels.names, &gold, &pred),
        nll / gold.len().max(1) as f64,
    ))
}

/// Held-out evaluation for the trainer: eval_loss, accuracy, macro precision / recall / F1,
/// micro F1 and each class's F1 (`f1_<label>`).
pub struct SeqClsEvaluator<'a> {
    pub model: &'a dyn SequenceClassifier,
    pub data: &'a SeqClsData,
    pub labels: &'a LabelSet,
    pub pad: PadSpec,
    pub batch_size: usize,
}

impl crate::train::Evaluator for SeqClsEvaluator<'_> {
    fn evaluate(&self, world: Option<&dyn Collective>) -> Result<BTreeMap<String, f64>> {
        let probs = predict(self.model, self.data, self.pad, self.batch_size, world)?;
        let (r, loss) = report(self.data, self.labels, &probs)?;
        let mut m = BTreeMap::from([
            ("eval_loss".to_string(), loss),
            ("accuracy".to_string(), r.accuracy),
            ("precision".to_string(), r.macro_avg.precision),
            ("recall".to_string(), r.macro_avg.recall),
            ("f1".to_string(), r.macro_avg.f1),
            ("f1_micro".to_string(), r.micro_avg.f1),
        ]);
        for (name, s) in &r.per_class {
            m.insert(format!("f1_{name}"), s.f1);
        }
        Ok(m)
    }
}
