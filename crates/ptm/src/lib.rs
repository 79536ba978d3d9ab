//! ptm: pretrained Transformer language models in Rust, numerically the same as Hugging Face
//! Transformers. Load HF checkpoint directories, tokenize, run and train models, save what
//! transformers loads back.
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

pub use error::{Error, Result};
