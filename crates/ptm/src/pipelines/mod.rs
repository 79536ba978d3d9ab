//! Pipelines: a tokenizer, a model and the post-processing of one task, ready to call, as
//! transformers' `pipeline(task)`: texts in, typed results out, in memory. Each loads from a
//! model directory, refuses a head that was never trained, and is `Send + Sync`, so one loaded
//! model can answer concurrent callers.

mod embeddings;
mod fill_mask;
mod question_answering;
mod text_classification;
mod text_generation;
mod token_classification;

pub use embeddings::{EmbeddingOptions, SentenceEmbedder, cosine_similarity};
pub use fill_mask::{FillMask, FillMaskPrediction};
pub use question_answering::{Answer, QaInput, QaOptions, QuestionAnswering};
pub use text_classification::{
    ClassificationFunction, ClassifyOptions, LabelScore, TextClassification, TextInput,
};
pub use text_generation::{GeneratedText, TextGeneration};
pub use token_classification::{
    AggregationStrategy, Entity, EntityGroup, ScoredTokens, TokenClassification, TokenEntity,
    WordRules, aggregate,
};

use crate::error::{Error, Result};
use crate::finetune::unpadded;
use crate::models::Pretrained;
use crate::tokenizer::{PadSpec, Tokenizer};

/// How the encoder task pipelines cut and batch their inputs: a tokenizer truncating to
/// `max_length` without padding (each batch pads to its own longest, as fine-tuning does).
#[derive(Clone)]
struct Inputs {
    tokenizer: Tokenizer,
    /// The model's positions: the longest `max_length` may be.
    positions: usize,
    max_length: usize,
    batch_size: usize,
    pad: PadSpec,
}

impl Inputs {
    /// The checked tokenizer of `pretrained`, cutting at the model's positions (or the
    /// tokenizer's `model_max_length` when shorter), 32 inputs a batch.
    fn new(pretrained: &Pretrained) -> Result<Self> {
        let tokenizer = pretrained.checked_tokenizer()?;
        crate::finetune::check_tokenizer(&pretrained.config, &tokenizer)?;
        let positions = pretrained.max_positions();
        let max_length = tokenizer
            .model_max_length()
            .map_or(positions, |n| n.min(positions));
        Ok(Inputs {
            pad: tokenizer.pad_spec(),
            tokenizer: unpadded(&tokenizer, max_length)?,
            positions,
            max_length,
            batch_size: 32,
        })
    }

    fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        if max_length > self.positions {
            return Err(Error::invalid(format!(
                "a maximum length of {max_length} tokens exceeds the model's {} positions",
                self.positions
            )));
        }
        self.tokenizer.set_truncation(Some(max_length))?;
        self.max_length = max_length;
        Ok(())
    }

    fn set_batch_size(&mut self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(Error::invalid("the batch size must be at least 1"));
        }
        self.batch_size = batch_size;
        Ok(())
    }
}

/// Refuses NaN or infinity among a model's outputs, naming `what` they are (a step, a text).
/// A model with finite weights can still overflow; its NaN would otherwise print as `null`,
/// rank first or last at random, or be picked as token 0.
pub fn check_finite<T: Copy + Into<f64>>(
    what: impl FnOnce() -> String,
    values: &[T],
) -> Result<()> {
    match values
        .iter()
        .map(|&v| v.into())
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        None => Ok(()),
        Some((i, v)) => Err(Error::invalid(format!(
            "{}: the model's output is not finite ({v} at index {i}): its activations overflowed",
            what()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_finite_names_the_value_and_what_it_was() {
        assert!(check_finite(|| "x".into(), &[1f32, -3e38]).is_ok());
        let err = check_finite(|| "decoding step 3".into(), &[0f32, f32::NAN])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "decoding step 3: the model's output is not finite (NaN at index 1): its activations overflowed"
        );
        let err = check_finite(|| "loss".into(), &[f64::INFINITY])
            .unwrap_err()
            .to_string();
        assert!(err.contains("(inf at index 0)"), "{err}");
    }
}
