//! ptm: pretrained Transformer language models in Rust, numerically the same as Hugging Face
//! Transformers. Load HF checkpoint directories, tokenize, run and train models, save what
//! transformers loads back.
//!
//! # Where to start
//! - [`models::Pretrained`] opens a model directory (`config.json`, weights, tokenizer files);
//!   [`models::auto`] builds what you ask of it — a bare model, a masked or causal LM, a
//!   classifier, a tagger, a span extractor — for whichever family the config names, as
//!   `AutoModelFor…` does. The model traits are in [`models::traits`].
//! - [`pipelines`]: one task ready to call, texts in and typed results out (embeddings,
//!   fill-mask, …).
//! - [`train::train`] runs any [`train::Objective`] with AdamW, schedules, clipping,
//!   accumulation, checkpoints and exact resume; [`objectives`] and [`finetune`] provide the
//!   pretraining and fine-tuning objectives.
//! - [`generate`]: greedy, sampling and beam search for any causal LM.
//! - Errors are one type, [`Error`], whose [`Error::kind`] tells bad input from unsupported
//!   requests and internal failures.
//!
//! The repository's ARCHITECTURE.md maps the layers; `crates/ptm/examples/` has runnable
//! programs (a forward pass with labels, fine-tuning a classifier, a custom objective).
//!
//! # A forward pass with labels
//!
//! ```
//! use candle_core::Tensor;
//! use ptm::models::{Pretrained, auto};
//! use ptm::nn::{Mode, StoreOptions};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/bert/tiny-seq-cls");
//! let pretrained = Pretrained::open(dir)?;
//! let tokenizer = pretrained.checked_tokenizer()?;
//! let (model, _) = pretrained.load(auto::sequence_classifier, &StoreOptions::default())?;
//!
//! let batch = tokenizer.encode_batch(&["the cat sat on the mat.", "paris is big."])?;
//! let input = batch.to_input(tokenizer.pad_spec(), &model.device())?;
//! let labels = Tensor::new(&[0i64, 1], &model.device())?;
//! let out = model.forward(&input, Some(&labels), Mode::Eval)?;
//! assert_eq!(out.logits.dims(), &[2, pretrained.config.common().num_labels()]);
//! assert!(out.loss.unwrap().to_scalar::<f32>()?.is_finite());
//! # Ok::<(), ptm::Error>(())
//! ```
//!
//! # Sentence embeddings
//!
//! ```no_run
//! use ptm::pipelines::{EmbeddingOptions, SentenceEmbedder, cosine_similarity};
//! let embedder = SentenceEmbedder::load("path/to/all-MiniLM-L6-v2", &EmbeddingOptions::default())?;
//! let e = embedder.embed(&["A man is eating food.", "A man is eating a piece of bread."])?;
//! println!("{}", cosine_similarity(&e[0], &e[1]));
//! # Ok::<(), ptm::Error>(())
//! ```

pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod finetune;
pub mod generate;
pub mod heads;
pub mod hub;
pub mod io;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod objectives;
mod pickle_check;
pub mod pipelines;
pub mod sentence_transformers;
pub mod tokenizer;
pub mod train;

pub use error::{Error, ErrorKind, Result};
