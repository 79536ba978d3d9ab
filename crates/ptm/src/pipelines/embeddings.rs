//! Sentence embeddings: encoder states pooled into one vector per text, as
//! sentence-transformers computes them (and configures them, when the model says so).

use candle_core::{Device, Tensor};
use tokenizers::Encoding;

use crate::error::{Error, Result};
use crate::heads::{Pooling, l2_normalize};
use crate::models::EncoderInput;
use crate::models::traits::Backbone;
use crate::nn::{Mode, StoreOptions};
use crate::sentence_transformers::ModelDir;
use crate::tokenizer::{Padding, Tokenizer};

/// Overrides of what the model directory says.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingOptions {
    pub pooling: Option<Vec<Pooling>>,
    pub normalize: Option<bool>,
    pub max_length: Option<usize>,
    /// Texts per forward pass (32 when unset).
    pub batch_size: Option<usize>,
    pub store: StoreOptions,
}

pub struct SentenceEmbedder {
    tokenizer: Tokenizer,
    model: Box<dyn Backbone>,
    pooling: Vec<Pooling>,
    normalize: bool,
    lowercase: bool,
    max_length: usize,
    batch_size: usize,
    device: Device,
}

impl SentenceEmbedder {
    /// Loads a model directory (or HF cache id). With sentence-transformers files present,
    /// their pooling, normalisation and max_seq_length are the defaults; otherwise mean
    /// pooling without normalisation.
    pub fn load(spec: &str, opts: &EmbeddingOptions) -> Result<Self> {
        let ModelDir {
            sentence_transformers: st,
            pretrained,
            ..
        } = ModelDir::open(spec)?;
        let mut tokenizer = pretrained.checked_tokenizer()?;
        let positions = pretrained.max_positions();
        let default_max = st
            .as_ref()
            .and_then(|s| s.max_seq_length)
            .or(tokenizer.model_max_length())
            .unwrap_or(positions)
            .min(positions);
        let max_length = opts.max_length.unwrap_or(default_max);
        if max_length > positions {
            return Err(Error::invalid(format!(
                "max length {max_length} exceeds the model's {positions} positions (max_position_embeddings)"
            )));
        }
        tokenizer.set_truncation(Some(max_length))?;
        // Batches are padded here after sorting by length, not by the tokenizer.
        tokenizer.set_padding(Padding::None)?;
        let (model, _) = crate::models::load_backbone(&pretrained, &opts.store)?;
        let pooling = opts
            .pooling
            .clone()
            .or_else(|| st.as_ref().map(|s| s.pooling.clone()))
            .unwrap_or_else(|| vec![Pooling::Mean]);
        Ok(SentenceEmbedder {
            tokenizer,
            model,
            normalize: opts
                .normalize
                .or(st.as_ref().map(|s| s.normalize))
                .unwrap_or(false),
            lowercase: st.as_ref().is_some_and(|s| s.do_lower_case),
            pooling,
            max_length,
            batch_size: opts.batch_size.unwrap_or(32).max(1),
            device: opts.store.device.clone(),
        })
    }

    pub fn pooling(&self) -> &[Pooling] {
        &self.pooling
    }

    pub fn normalize(&self) -> bool {
        self.normalize
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// One embedding per text, in order. Texts are batched by token length so that little
    /// compute goes to padding. An embedding that is not finite is an error naming its text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let lowered: Vec<String>;
        let texts: Vec<&str> = if self.lowercase {
            lowered = texts.iter().map(|t| t.to_lowercase()).collect();
            lowered.iter().map(String::as_str).collect()
        } else {
            texts.to_vec()
        };
        let encodings = self.tokenizer.encode_batch(&texts)?.encodings;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut out = vec![Vec::new(); encodings.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let rows = self.embed_encodings(&batch)?;
            for (&i, row) in chunk.iter().zip(rows) {
                super::check_finite(|| format!("embedding of text {}", i + 1), &row)?;
                out[i] = row;
            }
        }
        Ok(out)
    }

    fn embed_encodings(&self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>> {
        let input = EncoderInput::from_encodings(batch, self.tokenizer.pad_spec(), &self.device)?;
        let hidden = self.model.last_hidden_state(&input, Mode::Eval)?;
        let mask = input
            .attention_mask
            .as_ref()
            .ok_or_else(|| Error::internal("the batch has no attention mask"))?;
        let pooled: Vec<Tensor> = self
            .pooling
            .iter()
            .map(|p| p.pool(&hidden, mask))
            .collect::<Result<_>>()?;
        let mut emb = Tensor::cat(&pooled, 1)?; // (batch, dim · modes)
        if self.normalize {
            emb = l2_normalize(&emb)?;
        }
        Ok(emb.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two vectors (0 when either is zero). Summed in f64, where squares of
/// any finite f32 stay finite, so large unnormalised embeddings do not overflow to NaN.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na * nb)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_large_finite_vectors_is_finite() {
        let a = [3e30f32, -1e30, 2e30];
        assert!((cosine_similarity(&a, &a) - 1.0).abs() < 1e-6);
        let b = [-3e30f32, 1e30, -2e30];
        assert!((cosine_similarity(&a, &b) + 1.0).abs() < 1e-6);
        assert_eq!(cosine_similarity(&a, &[0.0; 3]), 0.0);
    }
}
