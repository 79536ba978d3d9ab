//! Data: reading corpora and labeled sets from files, and tokenized corpora on disk.

mod corpus;
mod tokenized;

pub use corpus::{CorpusReport, corpus_files, read_corpus};
pub use tokenized::{Blocks, Examples, INDEX as TOKENIZED_INDEX, Span, TokenizedCorpus, split_sentences};
