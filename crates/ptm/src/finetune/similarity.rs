//! Sentence similarity with a bi-encoder, as sentence-transformers trains it: JSONL
//! `{"text", "text_pair", "score"?}`. Both texts are embedded by the same encoder and pooling;
//! `CosineSimilarityLoss` regresses cos(u, v) on the score (0..1), and
//! `MultipleNegativesRankingLoss` treats each pair as a positive and every other text_pair in
//! the batch as a negative (cross-entropy over 20 · cos). Evaluated by the Spearman correlation
//! of cos(u, v) with the scores, as `EmbeddingSimilarityEvaluator`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{D, Tensor};
use serde::Deserialize;
use tokenizers::Encoding;

use super::{length_batches, line_error, pick, read_jsonl, unpadded};
use crate::error::{Error, Result};
use crate::heads::{Pooling, l2_normalize};
use crate::metrics::{pearson, spearman};
use crate::models::EncoderInput;
use crate::models::traits::Backbone;
use crate::nn::Mode;
use crate::nn::loss::{cross_entropy, mse_loss};
use crate::tokenizer::{PadSpec, Tokenizer};
use crate::train::distributed::{Collective, gather_batches};

/// MultipleNegativesRankingLoss's scale on cosine similarities.
const MNRL_SCALE: f64 = 20.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairRecord {
    pub text: String,
    pub text_pair: String,
    #[serde(default)]
    pub score: Option<f64>,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

pub struct PairData {
    pub records: Vec<PairRecord>,
    /// The first and second texts' encodings.
    pub first: Vec<Encoding>,
    pub second: Vec<Encoding>,
}

/// Reads `path`; with `require_scores` every pair needs a score.
pub fn load(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
    require_scores: bool,
) -> Result<PairData> {
    let rows: Vec<(usize, PairRecord)> = read_jsonl(path)?;
    for (line, r) in &rows {
        if r.text.trim().is_empty() || r.text_pair.trim().is_empty() {
            return Err(line_error(path, *line, "empty \"text\" or \"text_pair\""));
        }
        match r.score {
            None if require_scores => return Err(line_error(path, *line, "no \"score\"")),
            Some(s) if !s.is_finite() => {
                return Err(line_error(
                    path,
                    *line,
                    format!("score {s} is not a number"),
                ));
            }
            _ => {}
        }
    }
    let tok = unpadded(tokenizer, max_length)?;
    let texts =
        |f: fn(&PairRecord) -> &str| -> Vec<&str> { rows.iter().map(|(_, r)| f(r)).collect() };
    let first = tok.encode_batch(&texts(|r| &r.text))?.encodings;
    let second = tok.encode_batch(&texts(|r| &r.text_pair))?.encodings;
    Ok(PairData {
        records: rows.into_iter().map(|(_, r)| r).collect(),
        first,
        second,
    })
}

impl super::DataSet for PairData {
    fn num_records(&self) -> usize {
        self.records.len()
    }

    fn select(self, indices: &[usize]) -> Self {
        PairData {
            records: pick(&self.records, indices),
            first: pick(&self.first, indices),
            second: pick(&self.second, indices),
        }
    }
}

impl PairData {
    pub fn has_scores(&self) -> bool {
        self.records.iter().all(|r| r.score.is_some())
    }
}

/// The encoder and how its token states become one vector.
pub struct BiEncoder<'a> {
    pub model: &'a dyn Backbone,
    pub pooling: Vec<Pooling>,
    pub pad: PadSpec,
}

impl BiEncoder<'_> {
    /// (n, dim · modes) embeddings of encodings, unnormalised.
    pub fn embed(&self, encodings: &[&Encoding], mode: Mode) -> Result<Tensor> {
        let input = EncoderInput::from_encodings(encodings, self.pad, &self.model.device())?;
        let hidden = self.model.last_hidden_state(&input, mode)?;
        let mask = input
            .attention_mask
            .as_ref()
            .ok_or_else(|| Error::internal("the batch has no attention mask"))?;
        let pooled = self
            .pooling
            .iter()
            .map(|p| p.pool(&hidden, mask))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&pooled, D::Minus1)?)
    }

    /// Cosine similarity of every pair, in order, batched by length.
    pub fn cosines(
        &self,
        data: &PairData,
        batch_size: usize,
        world: Option<&dyn Collective>,
    ) -> Result<Vec<f64>> {
        let lengths: Vec<usize> = data
            .first
            .iter()
            .zip(&data.second)
            .map(|(a, b)| a.len().max(b.len()))
            .collect();
        let batches = length_batches(&lengths, batch_size);
        let cosines = gather_batches(world, batches.len(), |b| {
            let batch = &batches[b];
            let encodings: Vec<&Encoding> = batch
                .iter()
                .map(|&i| &data.first[i])
                .chain(batch.iter().map(|&i| &data.second[i]))
                .collect();
            let e = l2_normalize(&self.embed(&encodings, Mode::Eval)?)?;
            let n = batch.len();
            Ok((e.narrow(0, 0, n)? * e.narrow(0, n, n)?)?
                .sum(D::Minus1)?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?)
        })?;
        let mut out = vec![0.0; lengths.len()];
        for (batch, cos) in batches.iter().zip(cosines) {
            for (&i, c) in batch.iter().zip(cos) {
                out[i] = c;
            }
        }
        Ok(out)
    }
}

/// Which loss trains the bi-encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarityLoss {
    Cosine,
    MultipleNegatives,
}

pub struct SimilarityObjective<'a> {
    pub encoder: BiEncoder<'a>,
    pub data: &'a PairData,
    pub loss: SimilarityLoss,
}

impl crate::train::Objective for SimilarityObjective<'_> {
    fn num_examples(&self) -> usize {
        self.data.records.len()
    }

    fn loss(
        &self,
        examples: &[usize],
        _epoch: usize,
        mode: Mode,
    ) -> Result<crate::train::LossTerms> {
        let n = examples.len();
        // Both sides in one forward pass: rows 0..n the texts, n..2n their pairs.
        let encodings: Vec<&Encoding> = examples
            .iter()
            .map(|&i| &self.data.first[i])
            .chain(examples.iter().map(|&i| &self.data.second[i]))
            .collect();
        let tokens = encodings.iter().map(|e| e.len()).sum();
        let e = l2_normalize(&self.encoder.embed(&encodings, mode)?)?; // (2n, dim)
        let (u, v) = (e.narrow(0, 0, n)?, e.narrow(0, n, n)?);
        let device = e.device().clone();
        let loss = match self.loss {
            SimilarityLoss::Cosine => {
                let scores: Vec<f32> = examples
                    .iter()
                    .map(|&i| self.data.records[i].score.unwrap_or(1.0) as f32)
                    .collect();
                let target = Tensor::from_vec(scores, n, &device)?;
                mse_loss(&(u * v)?.sum(D::Minus1)?, &target)?
            }
            SimilarityLoss::MultipleNegatives => {
                let logits = (u.matmul(&v.t()?)? * MNRL_SCALE)?; // (n, n): row i's positive is column i
                let labels = Tensor::from_vec((0..n as i64).collect::<Vec<_>>(), n, &device)?;
                cross_entropy(&logits, &labels, crate::nn::loss::IGNORE_INDEX)?
            }
        };
        Ok(crate::train::LossTerms {
            loss,
            count: n,
            tokens,
        })
    }
}

/// Spearman and Pearson correlation of cosine similarity with the gold scores.
pub fn correlations(data: &PairData, cosines: &[f64]) -> Result<(f64, f64)> {
    let gold: Vec<f64> = data
        .records
        .iter()
        .map(|r| {
            r.score
                .ok_or_else(|| Error::invalid("evaluation needs a score on every pair"))
        })
        .collect::<Result<_>>()?;
    Ok((spearman(cosines, &gold), pearson(cosines, &gold)))
}

pub struct SimilarityEvaluator<'a> {
    pub encoder: BiEncoder<'a>,
    pub data: &'a PairData,
    pub batch_size: usize,
}

impl crate::train::Evaluator for SimilarityEvaluator<'_> {
    fn evaluate(&self, world: Option<&dyn Collective>) -> Result<BTreeMap<String, f64>> {
        let cos = self.encoder.cosines(self.data, self.batch_size, world)?;
        let (s, p) = correlations(self.data, &cos)?;
        Ok(BTreeMap::from([
            ("spearman".to_string(), s),
            ("pearson".to_string(), p),
        ]))
    }
}
