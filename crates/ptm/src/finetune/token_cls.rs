//! Token classification (named entities): JSONL `{"tokens": [...], "tags": [...]}` with BIO
//! tags. Words are tokenized as pre-split input; each word's label goes on its first
//! sub-token and the rest are ignored (transformers' run_ner with `label_all_tokens=False`).
//! Entity-level precision, recall and F1 as seqeval; words cut off by `max_length` are
//! predicted O, so they count against recall.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;
use tokenizers::Encoding;

use super::{LabelSet, length_batches, line_error, pick, read_jsonl, unpadded};
use crate::error::{Error, Result};
use crate::metrics::{EntityReport, entity_report};
use crate::models::EncoderInput;
use crate::models::traits::TokenClassifier;
use crate::nn::Mode;
use crate::nn::loss::{IGNORE_INDEX, cross_entropy};
use crate::tokenizer::{PadSpec, Tokenizer};
use crate::train::distributed::{Collective, gather_batches};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggedRecord {
    /// The words; for prediction a `text` split on whitespace may come instead.
    #[serde(default)]
    pub tokens: Option<Vec<String>>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

/// A tokenized data set.
pub struct TokenClsData {
    pub records: Vec<TaggedRecord>,
    /// Each record's words and, per word, its (start, end) character offsets in `text` (the
    /// given text, or the words joined by spaces).
    pub words: Vec<Vec<String>>,
    pub word_spans: Vec<Vec<(usize, usize)>>,
    pub texts: Vec<String>,
    pub encodings: Vec<Encoding>,
    /// Per record, per word, the tag id (`None` without tags).
    pub tags: Vec<Option<Vec<usize>>>,
}

/// A record's words, their character spans and the text they are spans of.
type Words = (Vec<String>, Vec<(usize, usize)>, String);

/// Words and their character spans: whitespace-split `text`, or `tokens` joined by spaces.
fn words_of(r: &TaggedRecord) -> Option<Words> {
    if let Some(tokens) = &r.tokens {
        let text = tokens.join(" ");
        let mut spans = Vec::with_capacity(tokens.len());
        let mut at = 0;
        for t in tokens {
            let n = t.chars().count();
            spans.push((at, at + n));
            at += n + 1;
        }
        return Some((tokens.clone(), spans, text));
    }
    let text = r.text.clone()?;
    let (mut words, mut spans) = (Vec::new(), Vec::new());
    let mut start: Option<usize> = None;
    for (i, c) in text.chars().chain(std::iter::once(' ')).enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                words.push(text.chars().skip(s).take(i - s).collect());
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    Some((words, spans, text))
}

/// Reads `path`; with `require_tags` every record needs tags, one per token, in `labels`.
pub fn load(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
    labels: &LabelSet,
    require_tags: bool,
) -> Result<TokenClsData> {
    let mut data = read(path, labels, require_tags)?;
    data.encodings = unpadded(tokenizer, max_length)?
        .encode_words(&data.words)?
        .encodings;
    Ok(data)
}

/// Reads and checks `path`'s records as [`load`] does, without tokenizing them (`encodings`
/// stays empty): for callers that tokenize the texts their own way.
pub fn read(path: &Path, labels: &LabelSet, require_tags: bool) -> Result<TokenClsData> {
    let rows: Vec<(usize, TaggedRecord)> = read_jsonl(path)?;
    let mut data = TokenClsData {
        records: Vec::new(),
        words: Vec::new(),
        word_spans: Vec::new(),
        texts: Vec::new(),
        encodings: Vec::new(),
        tags: Vec::new(),
    };
    for (line, r) in rows {
        let (words, spans, text) =
            words_of(&r).ok_or_else(|| line_error(path, line, "no \"tokens\" (or \"text\")"))?;
        if words.is_empty() {
            return Err(line_error(path, line, "no words"));
        }
        let tags = match &r.tags {
            None if require_tags => return Err(line_error(path, line, "no \"tags\"")),
            None => None,
            Some(t) if t.len() != words.len() => {
                return Err(line_error(
                    path,
                    line,
                    format!("{} tags for {} tokens", t.len(), words.len()),
                ));
            }
            Some(t) => Some(
                t.iter()
                    .map(|tag| {
                        labels.id(tag).ok_or_else(|| {
                            line_error(
                                path,
                                line,
                                format!("tag {tag:?} is not one of {:?}", labels.names),
                            )
                        })
                    })
                    .collect::<Result<Vec<usize>>>()?,
            ),
        };
        data.words.push(words);
        data.word_spans.push(spans);
        data.texts.push(text);
        data.tags.push(tags);
        data.records.push(r);
    }
    Ok(data)
}

/// The tag set of training data without a labels file: every tag seen, sorted.
pub fn labels_from_data(path: &Path) -> Result<LabelSet> {
    let rows: Vec<(usize, TaggedRecord)> = read_jsonl(path)?;
    let mut names = std::collections::BTreeSet::new();
    for (line, r) in rows {
        names.extend(
            r.tags
                .ok_or_else(|| line_error(path, line, "no \"tags\""))?,
        );
    }
    Ok(LabelSet {
        names: names.into_iter().collect(),
    })
}

impl super::DataSet for TokenClsData {
    fn num_records(&self) -> usize {
        self.records.len()
    }

    fn select(self, indices: &[usize]) -> Self {
        TokenClsData {
            records: pick(&self.records, indices),
            words: pick(&self.words, indices),
            word_spans: pick(&self.word_spans, indices),
            texts: pick(&self.texts, indices),
            encodings: pick(&self.encodings, indices),
            tags: pick(&self.tags, indices),
        }
    }
}

impl TokenClsData {
    /// Sub-token labels of record `i`: the word's tag on its first sub-token, -100 elsewhere.
    fn token_labels(&self, i: usize) -> Vec<i64> {
        let mut previous = None;
        self.encodings[i]
            .get_word_ids()
            .iter()
            .map(|w| {
                let label = match (w, &self.tags[i]) {
                    (Some(w), Some(tags)) if previous != Some(*w) => tags[*w as usize] as i64,
                    _ => IGNORE_INDEX,
                };
                previous = *w;
                label
            })
            .collect()
    }
}

pub struct TokenClsObjective<'a> {
    pub model: &'a dyn TokenClassifier,
    pub data: &'a TokenClsData,
    pub pad: PadSpec,
}

impl crate::train::Objective for TokenClsObjective<'_> {
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
        let input = EncoderInput::from_encodings(&encodings, self.pad.on_right(), &device)?;
        let seq = input.input_ids.dim(1)?;
        let mut labels = Vec::with_capacity(examples.len() * seq);
        for &i in examples {
            let l = self.data.token_labels(i);
            labels.extend(
                l.iter()
                    .copied()
                    .chain(std::iter::repeat_n(IGNORE_INDEX, seq - l.len())),
            );
        }
        let count = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
        let counted = count > 0;
        let labels = Tensor::from_vec(labels, (examples.len(), seq), &device)?;
        let logits = self.model.forward(&input, None, mode)?.logits; // (b, s, tags)
        let tags = logits.dim(2)?;
        let loss = if counted {
            cross_entropy(
                &logits.reshape((examples.len() * seq, tags))?,
                &labels.flatten_all()?,
                IGNORE_INDEX,
            )?
        } else {
            (logits.sum_all()? * 0.0)?
        };
        Ok(crate::train::LossTerms {
            loss,
            count,
            tokens: encodings.iter().map(|e| e.len()).sum(),
        })
    }
}

/// The tag probabilities of every token of a batch of encodings (padded on the right, dropout
/// off): (batch, longest, tags), rows past an encoding's end belonging to padding.
pub fn probabilities(
    model: &dyn TokenClassifier,
    encodings: &[&Encoding],
    pad: PadSpec,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let input = EncoderInput::from_encodings(encodings, pad.on_right(), &model.device())?;
    let logits = model.forward(&input, None, Mode::Eval)?.logits;
    Ok(crate::nn::ops::softmax_last_dim(&logits)?.to_vec3::<f32>()?)
}

/// Per record, per word: the predicted tag id and its probability.
pub type WordTags = Vec<Vec<(usize, f32)>>;

/// Per record, per word: the predicted tag id and its probability (words cut off by the
/// maximum length get tag `outside` with probability 1), and the mean cross-entropy over the
/// labeled first sub-tokens (0 without tags). The batches are shared among the ranks of `world`.
pub fn predict(
    model: &dyn TokenClassifier,
    data: &TokenClsData,
    pad: PadSpec,
    batch_size: usize,
    outside: usize,
    world: Option<&dyn Collective>,
) -> Result<(WordTags, f64)> {
    let lengths: Vec<usize> = data.encodings.iter().map(Encoding::len).collect();
    let batches = length_batches(&lengths, batch_size);
    // Per batch: its cross-entropy sum and count, then (tag, probability) of each record's words.
    let flat = gather_batches(world, batches.len(), |b| {
        let encodings: Vec<&Encoding> = batches[b].iter().map(|&i| &data.encodings[i]).collect();
        let probs = probabilities(model, &encodings, pad)?;
        let (mut nll, mut counted) = (0f64, 0usize);
        let mut words = Vec::new();
        for (&i, p) in batches[b].iter().zip(probs) {
            let mut tagged = vec![(outside, 1.0); data.words[i].len()];
            let labels = data.token_labels(i);
            let mut previous = None;
            for (t, w) in data.encodings[i].get_word_ids().iter().enumerate() {
                if let Some(w) = w.filter(|w| previous != Some(*w)) {
                    tagged[w as usize] = super::seq_cls::argmax(&p[t]);
                    if labels[t] != IGNORE_INDEX {
                        nll -= f64::from(p[t][labels[t] as usize].max(1e-30)).ln();
                        counted += 1;
                    }
                }
                previous = *w;
            }
            words.extend(
                tagged
                    .into_iter()
                    .flat_map(|(tag, score)| [tag as f64, f64::from(score)]),
            );
        }
        Ok([nll, counted as f64].into_iter().chain(words).collect())
    })?;
    let mut out = vec![Vec::new(); lengths.len()];
    let (mut nll, mut counted) = (0f64, 0usize);
    for (batch, values) in batches.iter().zip(flat) {
        nll += values[0];
        counted += values[1] as usize;
        let mut at = 2;
        for &i in batch {
            let n = data.words[i].len();
            out[i] = values[at..at + 2 * n]
                .chunks(2)
                .map(|v| (v[0] as usize, v[1] as f32))
                .collect();
            at += 2 * n;
        }
    }
    Ok((
        out,
        if counted == 0 {
            0.0
        } else {
            nll / counted as f64
        },
    ))
}

/// Entity scores and word accuracy of predictions against the tagged records.
pub fn report(
    data: &TokenClsData,
    labels: &LabelSet,
    predicted: &[Vec<(usize, f32)>],
) -> Result<(EntityReport, f64)> {
    let (mut gold, mut pred) = (Vec::new(), Vec::new());
    let (mut right, mut total) = (0usize, 0usize);
    for (tags, p) in data.tags.iter().zip(predicted) {
        let Some(tags) = tags else {
            return Err(Error::invalid("evaluation needs tags on every record"));
        };
        right += tags.iter().zip(p).filter(|(g, (q, _))| *g == q).count();
        total += tags.len();
        gold.push(tags.iter().map(|&t| labels.names[t].clone()).collect());
        pred.push(p.iter().map(|&(t, _)| labels.names[t].clone()).collect());
    }
    Ok((
        entity_report(&gold, &pred),
        right as f64 / total.max(1) as f64,
    ))
}

/// The id of the outside tag "O" (else the first tag).
pub fn outside_id(labels: &LabelSet) -> usize {
    labels.id("O").unwrap_or(0)
}

pub struct TokenClsEvaluator<'a> {
    pub model: &'a dyn TokenClassifier,
    pub data: &'a TokenClsData,
    pub labels: &'a LabelSet,
    pub pad: PadSpec,
    pub batch_size: usize,
}

impl crate::train::Evaluator for TokenClsEvaluator<'_> {
    fn evaluate(&self, world: Option<&dyn Collective>) -> Result<BTreeMap<String, f64>> {
        let (pred, loss) = predict(
            self.model,
            self.data,
            self.pad,
            self.batch_size,
            outside_id(self.labels),
            world,
        )?;
        let (r, accuracy) = report(self.data, self.labels, &pred)?;
        let mut m = BTreeMap::from([
            ("eval_loss".to_string(), loss),
            ("precision".to_string(), r.micro_avg.precision),
            ("recall".to_string(), r.micro_avg.recall),
            ("f1".to_string(), r.micro_avg.f1),
            ("accuracy".to_string(), accuracy),
        ]);
        for (kind, s) in &r.per_type {
            m.insert(format!("f1_{kind}"), s.f1);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sub_token_carries_the_label() {
        let tok = Tokenizer::from_dir(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizer"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ner.jsonl");
        std::fs::write(&f, "{\"tokens\": [\"Elizabeth\", \"visited\", \"Pemberleyshire\"], \"tags\": [\"B-PER\", \"O\", \"B-LOC\"]}\n").unwrap();
        let labels = LabelSet {
            names: vec!["B-LOC".into(), "B-PER".into(), "O".into()],
        };
        let data = load(&f, &tok, 32, &labels, true).unwrap();
        let words = data.encodings[0].get_word_ids().to_vec();
        let l = data.token_labels(0);
        assert_eq!(l[0], IGNORE_INDEX, "[CLS]");
        assert!(
            words.iter().filter(|w| **w == Some(2)).count() > 1,
            "the made-up word splits: {words:?}"
        );
        let firsts: Vec<i64> = l.iter().copied().filter(|&x| x != IGNORE_INDEX).collect();
        assert_eq!(firsts, vec![1, 2, 0]);
        assert_eq!(data.word_spans[0], vec![(0, 9), (10, 17), (18, 32)]);
        std::fs::write(&f, "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n").unwrap();
        let err = load(&f, &tok, 32, &labels, true).err().unwrap().to_string();
        assert!(
            err.contains("ner.jsonl:1") && err.contains("1 tags for 2 tokens"),
            "{err}"
        );
    }
}
