//! Data: reading corpora and labeled sets from files, and tokenized corpora on disk.

mod corpus;
pub mod fingerprint;
mod tokenized;

pub use corpus::{CorpusReport, corpus_files, read_corpus, read_corpus_with_limit};
pub use tokenized::{Blocks, Examples, Span, TokenizedCorpus, split_sentences};
