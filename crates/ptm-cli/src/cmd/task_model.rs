//! A fine-tuned model loaded for its task (from its architecture), with the options evaluation
//! and prediction share.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ptm::finetune::{LabelSet, Task};
use ptm::heads::Pooling;
use ptm::models::Pretrained;
use ptm::models::auto::{self, Head};
use ptm::models::traits::{Backbone, SequenceClassifier, SpanExtractor, TokenClassifier};
use ptm::sentence_transformers::ModelDir;
use ptm::tokenizer::Tokenizer;

#[derive(clap::Args, Debug, Clone)]
pub struct InferenceOptions {
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per input, longer ones truncated (qa: per window); at most the model's
    /// positions (default: 128, or the positions when fewer).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// qa: context tokens shared by consecutive windows (default: a third of --max-length).
    #[arg(long)]
    pub doc_stride: Option<usize>,
    /// qa: the longest answer, in tokens.
    #[arg(long, default_value_t = 30)]
    pub max_answer_tokens: usize,
    #[command(flatten)]
    pub dtype: super::DtypeArg,
}

impl InferenceOptions {
    /// `--max-length` checked against the model's `positions`, or its default.
    pub fn max_length(&self, positions: usize) -> Result<usize> {
        match self.max_length {
            Some(n) if n > positions => {
                bail!("--max-length {n} exceeds the model's {positions} positions")
            }
            Some(n) => Ok(n),
            None => Ok(positions.min(128)),
        }
    }

    pub fn doc_stride(&self, max_length: usize) -> usize {
        self.doc_stride.unwrap_or(max_length / 3)
    }
}

/// Refuses a record's non-finite outputs (`what` they are), naming the file and the record:
/// NaN from an overflowing model would print as `null` or pick the first class.
pub fn check_records<T, R>(path: &Path, what: &str, rows: impl IntoIterator<Item = R>) -> Result<()>
where
    T: Copy + Into<f64>,
    R: AsRef<[T]>,
{
    for (i, row) in rows.into_iter().enumerate() {
        ptm::pipelines::check_finite(
            || format!("{}: record {}: {what}", path.display(), i + 1),
            row.as_ref(),
        )?;
    }
    Ok(())
}

pub enum TaskModel {
    SeqCls(Box<dyn SequenceClassifier>, LabelSet),
    TokenCls(Box<dyn TokenClassifier>, LabelSet),
    Qa(Box<dyn SpanExtractor>),
    Similarity(Box<dyn Backbone>, Vec<Pooling>),
}

/// The scores of a record's predicted tags.
pub fn tag_scores(pred: &[(usize, f32)]) -> Vec<f32> {
    pred.iter().map(|p| p.1).collect()
}

/// The task a model directory was fine-tuned for, by the class its config names (the bare
/// model when none), with that class.
pub fn task(pretrained: &Pretrained) -> Result<(Task, String)> {
    let cfg = &pretrained.config;
    let arch = match cfg.common().architectures.first() {
        Some(a) => a.clone(),
        None => auto::architecture_for(cfg, Head::Base)?.to_string(),
    };
    let task = Task::of_architecture(&arch).with_context(|| {
        format!(
            "{}: {arch} is not a fine-tuned task model",
            pretrained.dir.display()
        )
    })?;
    Ok((task, arch))
}

/// Loads `spec` as the head its config names, refusing a head that was never trained; with
/// the model's positions.
pub fn load(spec: &str, dtype: super::DtypeArg) -> Result<(TaskModel, Tokenizer, usize)> {
    let pretrained = Pretrained::open(spec)?;
    let tokenizer = pretrained.tokenizer()?;
    let store = pretrained.store(&dtype.store())?;
    let cfg = &pretrained.config;
    let (task, arch) = task(&pretrained)?;
    let labels = || LabelSet {
        names: pretrained.config.common().id2label.clone(),
    };
    let root = store.root();
    let model = match task {
        Task::SeqCls => TaskModel::SeqCls(auto::sequence_classifier(cfg, &root)?, labels()),
        Task::TokenCls => TaskModel::TokenCls(auto::token_classifier(cfg, &root)?, labels()),
        Task::Qa => TaskModel::Qa(auto::span_extractor(cfg, &root)?),
        Task::Similarity => {
            let st = ModelDir::open(spec)?.sentence_transformers;
            TaskModel::Similarity(
                auto::backbone(cfg, &root, true)?,
                st.map_or_else(|| vec![Pooling::Mean], |s| s.pooling),
            )
        }
    };
    if !matches!(model, TaskModel::Similarity(..)) {
        ptm::models::require_trained(&store, &pretrained.dir, &format!("trained {arch} head"))?;
    }
    Ok((model, tokenizer, pretrained.max_positions()))
}
