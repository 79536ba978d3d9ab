//! `ptm eval`: a fine-tuned model's metrics on labeled data, printed and written as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ptm::finetune::{LabelSet, Task, seq_cls, token_cls};
use ptm::models::Pretrained;
use ptm::models::bert::{BertForSequenceClassification, BertForTokenClassification};
use ptm::nn::StoreOptions;

/// Evaluate a fine-tuned model on labeled JSONL.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    /// Labeled JSONL in the model's task format.
    #[arg(long)]
    data: PathBuf,
    /// Also write the metrics to this JSON file.
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
}

pub fn run(a: Args) -> Result<()> {
    let pretrained = Pretrained::open(&a.model)?;
    let metrics = evaluate(&pretrained, &a.data, a.batch_size, a.max_length)?;
    let text = serde_json::to_string_pretty(&metrics)?;
    println!("{text}");
    if let Some(path) = &a.output {
        ptm::io::write_atomic(path, format!("{text}\n").as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The task a model directory was fine-tuned for.
pub fn task_of(pretrained: &Pretrained) -> Result<(Task, String)> {
    let arch = pretrained.config.common().architectures.first().cloned().unwrap_or_else(|| "BertModel".into());
    let task = Task::of_architecture(&arch)
        .with_context(|| format!("{}: {arch} is not a fine-tuned task model", pretrained.dir.display()))?;
    Ok((task, arch))
}

fn evaluate(pretrained: &Pretrained, data: &std::path::Path, batch_size: usize, max_length: usize) -> Result<serde_json::Value> {
    let tokenizer = pretrained.tokenizer()?;
    let store = pretrained.store(&StoreOptions::default())?;
    let ptm::config::ModelConfig::Bert(cfg) = &pretrained.config else { bail!("evaluation supports BERT-family models") };
    match task_of(pretrained)?.0 {
        Task::SeqCls => {
            let labels = LabelSet { names: pretrained.config.common().id2label.clone() };
            let model = BertForSequenceClassification::new(cfg, &store.root())?;
            ptm::models::require_trained(&store, &pretrained.dir, "classification head")?;
            let data = seq_cls::load(data, &tokenizer, max_length, &labels, true)?;
            let probs = seq_cls::predict(&model, &data, tokenizer.pad_id(), batch_size)?;
            let (report, loss) = seq_cls::report(&data, &labels, &probs)?;
            let mut v = serde_json::to_value(&report)?;
            v["task"] = "seq-cls".into();
            v["eval_loss"] = loss.into();
            v["count"] = data.records.len().into();
            v["labels"] = serde_json::to_value(&labels.names)?;
            Ok(v)
        }
        Task::TokenCls => {
            let labels = LabelSet { names: pretrained.config.common().id2label.clone() };
            let model = BertForTokenClassification::new(cfg, &store.root())?;
            ptm::models::require_trained(&store, &pretrained.dir, "token classification head")?;
            let data = token_cls::load(data, &tokenizer, max_length, &labels, true)?;
            let (pred, loss) = token_cls::predict(&model, &data, tokenizer.pad_id(), batch_size, token_cls::outside_id(&labels))?;
            let (report, accuracy) = token_cls::report(&data, &labels, &pred)?;
            let mut v = serde_json::to_value(&report)?;
            v["task"] = "token-cls".into();
            v["eval_loss"] = loss.into();
            v["word_accuracy"] = accuracy.into();
            v["count"] = data.records.len().into();
            Ok(v)
        }
        other => bail!("evaluation of {other:?} models is not available yet"),
    }
}
