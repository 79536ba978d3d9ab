//! Pipelines: a tokenizer, a model and the post-processing of one task, ready to call.

mod embeddings;
mod fill_mask;

pub use embeddings::{EmbeddingOptions, SentenceEmbedder, cosine_similarity};
pub use fill_mask::{FillMask, FillMaskPrediction};

use crate::error::{Error, Result};

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
