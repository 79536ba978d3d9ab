//! What task heads share across families: their outputs, their losses (with transformers'
//! conventions) and the pooling that turns token states into one sentence embedding.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ProblemType;
use crate::error::{Error, Result};
use crate::nn::loss::{IGNORE_INDEX, bce_with_logits, cross_entropy, mse_loss};
use crate::nn::{Linear, Mode, ParamBuilder, dropout};

pub struct MaskedLMOutput {
    pub loss: Option<Tensor>,
    /// (batch, seq, vocab)
    pub logits: Tensor,
}

pub struct CausalLMOutput {
    pub loss: Option<Tensor>,
    /// (batch, seq, vocab): at position t, the scores of token t + 1.
    pub logits: Tensor,
}

pub struct NextSentencePredictorOutput {
    pub loss: Option<Tensor>,
    /// (batch, 2): index 0 means "B follows A".
    pub logits: Tensor,
}

pub struct PreTrainingOutput {
    /// masked-LM loss + next-sentence loss
    pub loss: Option<Tensor>,
    pub prediction_logits: Tensor,
    pub seq_relationship_logits: Tensor,
}

pub struct SequenceClassifierOutput {
    pub loss: Option<Tensor>,
    /// (batch, num_labels)
    pub logits: Tensor,
}

pub struct TokenClassifierOutput {
    pub loss: Option<Tensor>,
    /// (batch, seq, num_labels)
    pub logits: Tensor,
}

pub struct QuestionAnsweringOutput {
    pub loss: Option<Tensor>,
    /// (batch, seq)
    pub start_logits: Tensor,
    pub end_logits: Tensor,
}

/// Cross-entropy over the last dimension of `logits` (..., classes) against `labels` (...),
/// -100 ignored: the loss of the masked-LM, NSP and token-classification heads.
pub fn cross_entropy_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)?;
    let rows = logits.elem_count() / classes;
    cross_entropy(
        &logits.reshape((rows, classes))?,
        &labels.flatten_all()?,
        IGNORE_INDEX,
    )
}

/// Next-token loss: logits at t against labels at t + 1 (-100 ignored), averaged over the
/// counted targets of the whole batch, as transformers' `ForCausalLMLoss`.
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, s, _) = logits.dims3()?;
    if labels.dims() != [b, s] {
        return Err(Error::invalid(format!(
            "labels have shape {:?}, expected [{b}, {s}]",
            labels.dims()
        )));
    }
    if s < 2 {
        return Err(Error::invalid(
            "a causal-LM loss needs at least two positions",
        ));
    }
    cross_entropy_loss(&logits.narrow(1, 0, s - 1)?, &labels.narrow(1, 1, s - 1)?)
}

/// transformers' sequence-classification loss: MSE for regression (one label), cross-entropy
/// for integer labels, binary cross-entropy for float multi-label targets, unless the config
/// names the problem type.
pub fn sequence_classification_loss(
    logits: &Tensor,
    labels: &Tensor,
    problem_type: Option<ProblemType>,
) -> Result<Tensor> {
    let num_labels = logits.dim(D::Minus1)?;
    let problem = problem_type.unwrap_or(if num_labels == 1 {
        ProblemType::Regression
    } else if labels.dtype().is_int() {
        ProblemType::SingleLabelClassification
    } else {
        ProblemType::MultiLabelClassification
    });
    match problem {
        ProblemType::Regression => {
            let labels = labels.to_dtype(logits.dtype())?;
            if num_labels == 1 {
                mse_loss(&logits.flatten_all()?, &labels.flatten_all()?)
            } else {
                mse_loss(logits, &labels)
            }
        }
        ProblemType::SingleLabelClassification => cross_entropy_loss(logits, labels),
        ProblemType::MultiLabelClassification => {
            if labels.dims() != logits.dims() {
                return Err(Error::invalid(format!(
                    "multi-label targets have shape {:?}, logits {:?}",
                    labels.dims(),
                    logits.dims()
                )));
            }
            bce_with_logits(logits, &labels.to_dtype(logits.dtype())?)
        }
    }
}

/// Span loss: the mean of start and end cross-entropies; positions outside the sequence are
/// clamped to `seq` and ignored, as transformers does for answers cut off by truncation.
pub fn question_answering_loss(
    start_logits: &Tensor,
    end_logits: &Tensor,
    start_positions: &Tensor,
    end_positions: &Tensor,
) -> Result<Tensor> {
    let seq = start_logits.dim(1)? as i64;
    let clamp = |p: &Tensor| -> Result<Vec<i64>> {
        Ok(p.to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|v| v.clamp(0, seq))
            .collect())
    };
    let ce = |logits: &Tensor, pos: Vec<i64>| -> Result<Tensor> {
        let n = pos.len();
        let labels = Tensor::from_vec(pos, n, logits.device())?;
        cross_entropy(logits, &labels, seq)
    };
    let start = ce(start_logits, clamp(start_positions)?)?;
    let end = ce(end_logits, clamp(end_positions)?)?;
    Ok(((start + end)? / 2.0)?)
}

/// A span head's output from its (batch, seq, 2) logits, with the loss when positions are given.
pub fn question_answering_output(
    logits: &Tensor,
    positions: Option<(&Tensor, &Tensor)>,
) -> Result<QuestionAnsweringOutput> {
    let start_logits = logits.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?;
    let end_logits = logits.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?;
    let loss = positions
        .map(|(s, e)| question_answering_loss(&start_logits, &end_logits, s, e))
        .transpose()?;
    Ok(QuestionAnsweringOutput {
        loss,
        start_logits,
        end_logits,
    })
}

/// `classifier` on every token's state, after dropout: the token-classification head every
/// family shares (XLNet's without dropout).
pub struct TokenClassificationHead {
    classifier: Linear,
    dropout: f64,
}

impl TokenClassificationHead {
    /// `vb` is the model's root; the weights are `classifier.*`.
    pub fn new(
        vb: &ParamBuilder,
        hidden: usize,
        num_labels: usize,
        std: f64,
        dropout: f64,
    ) -> Result<Self> {
        Ok(TokenClassificationHead {
            classifier: Linear::new_head(&vb.pp("classifier"), hidden, num_labels, std)?,
            dropout,
        })
    }

    /// `hidden` (batch, seq, hidden); `labels` (batch, seq) i64 with -100 on tokens that
    /// carry no label.
    pub fn forward(
        &self,
        hidden: &Tensor,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<TokenClassifierOutput> {
        let logits = self
            .classifier
            .forward(&dropout(hidden, self.dropout, mode)?)?; // (b, s, labels)
        let loss = labels.map(|l| cross_entropy_loss(&logits, l)).transpose()?;
        Ok(TokenClassifierOutput { loss, logits })
    }
}

/// `qa_outputs`: start and end logits of an answer span from every token's state.
pub struct SpanExtractionHead {
    qa_outputs: Linear,
}

impl SpanExtractionHead {
    /// `vb` is the model's root. transformers sizes the layer by num_labels, which is 2 for
    /// span extraction.
    pub fn new(vb: &ParamBuilder, hidden: usize, std: f64) -> Result<Self> {
        Ok(SpanExtractionHead {
            qa_outputs: Linear::new_head(&vb.pp("qa_outputs"), hidden, 2, std)?,
        })
    }

    /// `hidden` (batch, seq, hidden); `positions`: start and end token indices (batch) i64.
    pub fn forward(
        &self,
        hidden: &Tensor,
        positions: Option<(&Tensor, &Tensor)>,
    ) -> Result<QuestionAnsweringOutput> {
        question_answering_output(&self.qa_outputs.forward(hidden)?, positions)
    }
}

/// How token states become one vector, as sentence-transformers' `Pooling` module does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token's state (`[CLS]`).
    Cls,
    /// The mean over non-padding tokens.
    Mean,
    /// The elementwise max over non-padding tokens.
    Max,
    /// The sum over non-padding tokens divided by sqrt(token count).
    MeanSqrtLen,
    /// The last non-padding token's state (decoder models).
    LastToken,
}

impl Pooling {
    pub const NAMES: &'static [&'static str] =
        &["cls", "mean", "max", "mean_sqrt_len", "last_token"];

    pub fn parse(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
            Error::invalid(format!(
                "unknown pooling {name:?}; supported: {}",
                Self::NAMES.join(", ")
            ))
        })
    }

    /// hidden (batch, seq, dim), mask (batch, seq) of 1/0 -> (batch, dim)
    pub fn pool(self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, _, dim) = hidden.dims3()?;
        let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?; // (b, s, 1)
        // A text of no tokens at all would divide by zero; sentence-transformers clamps to 1e-9.
        let counts = m.sum(1)?.clamp(1e-9, f64::INFINITY)?; // (b, 1)
        Ok(match self {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => hidden.broadcast_mul(&m)?.sum(1)?.broadcast_div(&counts)?,
            Pooling::MeanSqrtLen => hidden
                .broadcast_mul(&m)?
                .sum(1)?
                .broadcast_div(&counts.sqrt()?)?,
            Pooling::Max => {
                // Padding positions get a very negative value so they never win the max.
                let neg = ((m.ones_like()? - &m)? * -1e9)?;
                hidden.broadcast_add(&neg)?.max(1)?
            }
            Pooling::LastToken => {
                let lengths = mask.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?;
                let idx: Vec<u32> = lengths
                    .iter()
                    .map(|l| (*l as u32).saturating_sub(1))
                    .collect();
                let idx =
                    Tensor::from_vec(idx, (b, 1, 1), hidden.device())?.broadcast_as((b, 1, dim))?;
                hidden
                    .contiguous()?
                    .gather(&idx.contiguous()?, 1)?
                    .squeeze(1)?
            }
        })
    }
}

/// Divides each row by its L2 norm (sentence-transformers' `Normalize`, eps 1e-12 as in
/// `torch.nn.functional.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pooling_modes_ignore_padding() {
        let d = Device::Cpu;
        // batch 1, seq 3 (last is padding), dim 2
        let h = Tensor::new(&[[[1.0f32, -2.0], [3.0, 4.0], [100.0, 100.0]]], &d).unwrap();
        let m = Tensor::new(&[[1u32, 1, 0]], &d).unwrap();
        let get = |p: Pooling| p.pool(&h, &m).unwrap().to_vec2::<f32>().unwrap()[0].clone();
        assert_eq!(get(Pooling::Cls), vec![1.0, -2.0]);
        assert_eq!(get(Pooling::Mean), vec![2.0, 1.0]);
        assert_eq!(get(Pooling::Max), vec![3.0, 4.0]);
        assert_eq!(get(Pooling::LastToken), vec![3.0, 4.0]);
        let s = get(Pooling::MeanSqrtLen);
        assert!((s[0] - 4.0 / 2f32.sqrt()).abs() < 1e-6);
        assert!(Pooling::parse("weighted").is_err());
    }

    #[test]
    fn normalize_gives_unit_rows() {
        let x = Tensor::new(&[[3.0f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let n = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(n[0], vec![0.6, 0.8]);
        assert_eq!(n[1], vec![0.0, 0.0]);
    }
}
