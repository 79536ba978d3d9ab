//! Evaluation metrics, each computed as the reference implementation the field uses computes
//! it: scikit-learn for classification, seqeval for entities, the official SQuAD v1.1 script for
//! extractive QA, SciPy for rank correlation. `tests/metrics.rs` checks them against those
//! libraries' outputs on the same predictions.

mod classification;
mod correlation;
mod entities;
mod squad;

pub use classification::{ClassScores, ClassificationReport, classification_report};
pub use correlation::{pearson, spearman};
pub use entities::{Entity, EntityReport, entities, entity_report};
pub use squad::{SquadScores, squad_exact_match, squad_f1, squad_scores};
