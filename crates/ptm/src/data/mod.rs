//! Data: reading corpora and labeled sets from files.

mod corpus;

pub use corpus::{CorpusReport, read_corpus};
