//! Extractive question answering, SQuAD style: JSONL `{"id"?, "context", "question",
//! "answers": {"text": [...], "answer_start": [...]}}` (character offsets). Long contexts are
//! split into windows overlapping by a doc stride; a window is trained on the answer's start
//! and end tokens, or on `[CLS]` when the answer is not inside it (transformers' run_qa). The
//! answer of a question is the best-scoring span over its windows, at most
//! `max_answer_tokens` long (run_qa's postprocessing), scored with the official SQuAD EM / F1.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;
use tokenizers::Encoding;

use super::{length_batches, line_error, pick, read_jsonl};
use crate::error::{Error, Result};
use crate::metrics::{SquadScores, squad_scores};
use crate::models::EncoderInput;
use crate::models::traits::SpanExtractor;
use crate::nn::Mode;
use crate::tokenizer::{PadSpec, Tokenizer};
use crate::train::distributed::{Collective, gather_batches};

/// Candidates taken from each window's start and end logits.
const N_BEST: usize = 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    pub text: Vec<String>,
    pub answer_start: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaRecord {
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    #[serde(default)]
    pub title: Option<String>,
    pub context: String,
    pub question: String,
    #[serde(default)]
    pub answers: Option<Answers>,
}

/// One window of one question's context.
#[derive(Clone)]
pub struct Window {
    pub example: usize,
    pub encoding: Encoding,
    /// Training targets: the answer's first and last token, or the classification token's.
    pub positions: Option<(usize, usize)>,
}

pub struct QaData {
    pub records: Vec<QaRecord>,
    pub windows: Vec<Window>,
}

/// The byte offset of character `c` in `s` (its length at the end).
fn byte_of_char(s: &str, c: usize) -> Option<usize> {
    s.char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(s.len()))
        .nth(c)
}

/// The character offset of byte `b` in `s`.
fn char_of_byte(s: &str, b: usize) -> usize {
    s[..b.min(s.len())].chars().count()
}

/// Reads and windows `path`. Every answer must sit at its `answer_start`; with
/// `require_answers` every record needs one.
pub fn load(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
    doc_stride: usize,
    require_answers: bool,
) -> Result<QaData> {
    check_stride(max_length, doc_stride)?;
    let records = read(path, require_answers)?;
    let mut data = QaData {
        records: Vec::new(),
        windows: Vec::new(),
    };
    for r in records {
        // The first answer is the training target, as in run_qa: its byte span in the context.
        let target = r.answers.as_ref().map(|a| {
            let b = byte_of_char(&r.context, a.answer_start[0]).unwrap_or(0);
            (b, b + a.text[0].len())
        });
        let example = data.records.len();
        data.windows.extend(windows(
            tokenizer,
            example,
            (&r.question, &r.context),
            max_length,
            doc_stride,
            target,
        )?);
        data.records.push(r);
    }
    Ok(data)
}

/// Refuses a doc stride that would not move the windows forward.
pub fn check_stride(max_length: usize, doc_stride: usize) -> Result<()> {
    if doc_stride >= max_length {
        return Err(Error::invalid(format!(
            "the doc stride {doc_stride} must be below the maximum length {max_length}"
        )));
    }
    Ok(())
}

/// Reads and checks `path`'s records, not yet windowed: a question and a context in each, every
/// answer at its `answer_start`; with `require_answers` every record needs one.
pub fn read(path: &Path, require_answers: bool) -> Result<Vec<QaRecord>> {
    let rows: Vec<(usize, QaRecord)> = read_jsonl(path)?;
    for (line, r) in &rows {
        let line = *line;
        if r.context.trim().is_empty() || r.question.trim().is_empty() {
            return Err(line_error(path, line, "empty \"context\" or \"question\""));
        }
        match &r.answers {
            None if require_answers => return Err(line_error(path, line, "no \"answers\"")),
            None => {}
            Some(a) => {
                if a.text.is_empty() || a.text.len() != a.answer_start.len() {
                    return Err(line_error(
                        path,
                        line,
                        format!(
                            "{} answer texts and {} answer_start values",
                            a.text.len(),
                            a.answer_start.len()
                        ),
                    ));
                }
                for (text, &start) in a.text.iter().zip(&a.answer_start) {
                    let end = start.checked_add(text.chars().count());
                    let found = byte_of_char(&r.context, start)
                        .zip(end.and_then(|e| byte_of_char(&r.context, e)))
                        .map(|(b, e)| &r.context[b..e]);
                    if found != Some(text.as_str()) {
                        return Err(line_error(
                            path,
                            line,
                            format!(
                                "answer {text:?} is not at answer_start {start} (the context has {:?} there)",
                                found.unwrap_or("")
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// The windows of one (question, context) of example `example`, `doc_stride` context tokens
/// shared by consecutive ones; each trained on `target` (the answer's byte span in the
/// context) when given.
pub fn windows(
    tokenizer: &Tokenizer,
    example: usize,
    (question, context): (&str, &str),
    max_length: usize,
    doc_stride: usize,
    target: Option<(usize, usize)>,
) -> Result<Vec<Window>> {
    Ok(tokenizer
        .encode_windows(question, context, max_length, doc_stride)?
        .into_iter()
        .map(|encoding| Window {
            example,
            positions: target.map(|t| answer_tokens(&encoding, t)),
            encoding,
        })
        .collect())
}

/// The tokens of the context (sequence 1) in a window: first and last index.
fn context_range(e: &Encoding) -> Option<(usize, usize)> {
    let ids = e.get_sequence_ids();
    let first = ids.iter().position(|s| *s == Some(1))?;
    let last = ids.iter().rposition(|s| *s == Some(1))?;
    Some((first, last))
}

/// Where a window's classification token is, the target when the answer is not inside: first
/// for BERT's `[CLS] q [SEP] c [SEP]`, last for XLNet's `q <sep> c <sep> <cls>` (segment 2).
fn cls_index(e: &Encoding) -> usize {
    if e.get_type_ids().last() == Some(&2) {
        e.len() - 1
    } else {
        0
    }
}

/// The answer's first and last token in a window, or the classification token twice when it
/// is not wholly inside.
fn answer_tokens(e: &Encoding, (start, end): (usize, usize)) -> (usize, usize) {
    let offsets = e.get_offsets();
    let cls = (cls_index(e), cls_index(e));
    let Some((first, last)) = context_range(e) else {
        return cls;
    };
    if !(offsets[first].0 <= start && offsets[last].1 >= end) {
        return cls;
    }
    let s = (first..=last)
        .take_while(|&t| offsets[t].0 <= start)
        .last()
        .unwrap_or(first);
    let e_tok = (first..=last)
        .rev()
        .take_while(|&t| offsets[t].1 >= end)
        .last()
        .unwrap_or(last);
    (s, e_tok)
}

impl super::DataSet for QaData {
    fn num_records(&self) -> usize {
        self.records.len()
    }

    fn select(self, indices: &[usize]) -> Self {
        let mut windows = Vec::new();
        for (new, &old) in indices.iter().enumerate() {
            windows.extend(
                self.windows
                    .iter()
                    .filter(|w| w.example == old)
                    .map(|w| Window {
                        example: new,
                        ..w.clone()
                    }),
            );
        }
        QaData {
            records: pick(&self.records, indices),
            windows,
        }
    }
}

/// Training over windows.
pub struct QaObjective<'a> {
    pub model: &'a dyn SpanExtractor,
    pub data: &'a QaData,
    pub pad: PadSpec,
}

impl crate::train::Objective for QaObjective<'_> {
    fn num_examples(&self) -> usize {
        self.data.windows.len()
    }

    fn loss(
        &self,
        examples: &[usize],
        _epoch: usize,
        mode: Mode,
    ) -> Result<crate::train::LossTerms> {
        let device = self.model.device();
        let windows: Vec<&Window> = examples.iter().map(|&i| &self.data.windows[i]).collect();
        let encodings: Vec<&Encoding> = windows.iter().map(|w| &w.encoding).collect();
        let input = EncoderInput::from_encodings(&encodings, self.pad.on_right(), &device)?;
        let (starts, ends): (Vec<i64>, Vec<i64>) = windows
            .iter()
            .map(|w| w.positions.map_or((0, 0), |(s, e)| (s as i64, e as i64)))
            .unzip();
        let starts = Tensor::from_vec(starts, examples.len(), &device)?;
        let ends = Tensor::from_vec(ends, examples.len(), &device)?;
        let out = self.model.forward(&input, Some((&starts, &ends)), mode)?;
        let loss = out.loss.ok_or_else(|| Error::invalid("no loss"))?;
        Ok(crate::train::LossTerms {
            loss,
            count: examples.len(),
            tokens: encodings.iter().map(|e| e.len()).sum(),
        })
    }
}

/// A predicted answer: its text, character span in the context and probability among the
/// candidates.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    pub answer: String,
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

/// The best answer of every question, in order (the batches of windows shared among the
/// ranks of `world`).
pub fn predict(
    model: &dyn SpanExtractor,
    data: &QaData,
    pad: PadSpec,
    batch_size: usize,
    max_answer_tokens: usize,
    world: Option<&dyn Collective>,
) -> Result<Vec<Answer>> {
    let contexts: Vec<&str> = data.records.iter().map(|r| r.context.as_str()).collect();
    answers(
        model,
        &contexts,
        &data.windows,
        pad,
        batch_size,
        max_answer_tokens,
        world,
    )
}

/// The best answer in each of `contexts`, over the windows whose `example` is its index: the
/// highest start + end logit sum of a span of at most `max_answer_tokens` tokens, scored by
/// its probability among the candidates (run_qa's postprocessing). Batched by length, the
/// batches shared among the ranks of `world`.
pub fn answers(
    model: &dyn SpanExtractor,
    contexts: &[&str],
    windows: &[Window],
    pad: PadSpec,
    batch_size: usize,
    max_answer_tokens: usize,
    world: Option<&dyn Collective>,
) -> Result<Vec<Answer>> {
    let device = model.device();
    let lengths: Vec<usize> = windows.iter().map(|w| w.encoding.len()).collect();
    let batches = length_batches(&lengths, batch_size);
    // Per batch: its candidates as (question, score, byte start, byte end).
    let flat = gather_batches(world, batches.len(), |b| {
        let encodings: Vec<&Encoding> = batches[b].iter().map(|&i| &windows[i].encoding).collect();
        let out = model.forward(
            &EncoderInput::from_encodings(&encodings, pad.on_right(), &device)?,
            None,
            Mode::Eval,
        )?;
        let (starts, ends) = (
            out.start_logits.to_vec2::<f32>()?,
            out.end_logits.to_vec2::<f32>()?,
        );
        let mut found = Vec::new();
        for ((&w, s), e) in batches[b].iter().zip(&starts).zip(&ends) {
            let window = &windows[w];
            let Some((first, last)) = context_range(&window.encoding) else {
                continue;
            };
            let offsets = window.encoding.get_offsets();
            let top = |logits: &[f32]| {
                let mut idx: Vec<usize> = (first..=last).collect();
                idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
                idx.truncate(N_BEST);
                idx
            };
            for &i in &top(s) {
                for &j in &top(e) {
                    if j >= i && j - i < max_answer_tokens {
                        found.extend([
                            window.example as f64,
                            f64::from(s[i] + e[j]),
                            offsets[i].0 as f64,
                            offsets[j].1 as f64,
                        ]);
                    }
                }
            }
        }
        Ok(found)
    })?;
    // Per question: (score, byte start, byte end) candidates.
    let mut candidates: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); contexts.len()];
    for c in flat.iter().flat_map(|found| found.chunks(4)) {
        candidates[c[0] as usize].push((c[1] as f32, c[2] as usize, c[3] as usize));
    }
    Ok(contexts
        .iter()
        .zip(candidates)
        .map(|(context, c)| {
            let Some(&(best, b, e)) = c.iter().max_by(|x, y| x.0.total_cmp(&y.0)) else {
                return Answer {
                    answer: String::new(),
                    start: 0,
                    end: 0,
                    score: 0.0,
                };
            };
            let total: f32 = c.iter().map(|x| (x.0 - best).exp()).sum();
            Answer {
                answer: context[b..e].to_string(),
                start: char_of_byte(context, b),
                end: char_of_byte(context, e),
                score: 1.0 / total,
            }
        })
        .collect())
}

/// SQuAD EM and F1 of predictions against the records' answers.
pub fn report(data: &QaData, answers: &[Answer]) -> Result<SquadScores> {
    let items = data
        .records
        .iter()
        .zip(answers)
        .map(|(r, a)| {
            let gold = r
                .answers
                .as_ref()
                .ok_or_else(|| Error::invalid("evaluation needs answers on every record"))?;
            Ok((a.answer.clone(), gold.text.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(squad_scores(&items))
}

pub struct QaEvaluator<'a> {
    pub model: &'a dyn SpanExtractor,
    pub data: &'a QaData,
    pub pad: PadSpec,
    pub batch_size: usize,
    pub max_answer_tokens: usize,
}

impl crate::train::Evaluator for QaEvaluator<'_> {
    fn evaluate(&self, world: Option<&dyn Collective>) -> Result<BTreeMap<String, f64>> {
        let answers = predict(
            self.model,
            self.data,
            self.pad,
            self.batch_size,
            self.max_answer_tokens,
            world,
        )?;
        let s = report(self.data, &answers)?;
        Ok(BTreeMap::from([
            ("exact_match".to_string(), s.exact_match),
            ("f1".to_string(), s.f1),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_the_answer_tokens_or_point_at_cls() {
        let tok = Tokenizer::from_dir(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizer"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("qa.jsonl");
        let filler = "she walked on and said nothing more of it . ".repeat(12);
        let context = format!("{filler}Elizabeth lived at Longbourn with her sisters . {filler}");
        let start = context.find("Longbourn").unwrap();
        let line = serde_json::json!({"context": context, "question": "Where did Elizabeth live?", "answers": {"text": ["Longbourn"], "answer_start": [start]}});
        std::fs::write(&f, format!("{line}\n")).unwrap();
        let data = load(&f, &tok, 48, 16, true).unwrap();
        // Python's tokenizers (truncation only_second, stride 16, overflowing) gives these.
        let lengths: Vec<usize> = data.windows.iter().map(|w| w.encoding.len()).collect();
        assert_eq!(lengths, [48, 48, 48, 48, 48, 48, 48, 48, 48, 40]);
        let mut inside = 0;
        for w in &data.windows {
            let (s, e) = w.positions.unwrap();
            if (s, e) != (0, 0) {
                inside += 1;
                let o = w.encoding.get_offsets();
                assert_eq!(&context[o[s].0..o[e].1], "Longbourn");
            }
        }
        assert!(inside >= 1 && inside < data.windows.len());

        let bad = serde_json::json!({"context": "abc", "question": "q", "answers": {"text": ["bc"], "answer_start": [0]}});
        std::fs::write(&f, format!("{bad}\n")).unwrap();
        let err = load(&f, &tok, 48, 16, true).err().unwrap().to_string();
        assert!(
            err.contains("qa.jsonl:1") && err.contains("not at answer_start 0"),
            "{err}"
        );
    }
}
