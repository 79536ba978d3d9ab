//! Pipelines: a tokenizer, a model and the post-processing of one task, ready to call.

mod embeddings;
mod fill_mask;

pub use embeddings::{EmbeddingOptions, SentenceEmbedder, cosine_similarity};
pub use fill_mask::{FillMask, FillMaskPrediction};
