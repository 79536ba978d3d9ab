//! `ptm predict`: a fine-tuned model's predictions on JSONL, one line per input line, in order.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ptm::finetune::{LabelSet, Task, seq_cls};
use ptm::models::Pretrained;
use ptm::models::bert::BertForSequenceClassification;
use ptm::nn::StoreOptions;

use crate::output::Sink;

/// Predict with a fine-tuned model.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    /// JSONL in the model's task format (labels not needed).
    #[arg(long)]
    input: PathBuf,
    /// Where the JSONL predictions go (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
}

pub fn run(a: Args) -> Result<()> {
    let pretrained = Pretrained::open(&a.model)?;
    let tokenizer = pretrained.tokenizer()?;
    let store = pretrained.store(&StoreOptions::default())?;
    let ptm::config::ModelConfig::Bert(cfg) = &pretrained.config else { bail!("prediction supports BERT-family models") };
    let lines: Vec<serde_json::Value> = match super::eval::task_of(&pretrained)?.0 {
        Task::SeqCls => {
            let labels = LabelSet { names: pretrained.config.common().id2label.clone() };
            let model = BertForSequenceClassification::new(cfg, &store.root())?;
            ptm::models::require_trained(&store, &pretrained.dir, "classification head")?;
            let data = seq_cls::load(&a.input, &tokenizer, a.max_length, &labels, false)?;
            let probs = seq_cls::predict(&model, &data, tokenizer.pad_id(), a.batch_size)?;
            data.records
                .iter()
                .zip(&probs)
                .map(|(r, p)| {
                    let (best, score) = seq_cls::argmax(p);
                    let scores: serde_json::Map<String, serde_json::Value> =
                        labels.names.iter().zip(p).map(|(n, &s)| (n.clone(), s.into())).collect();
                    let mut v = serde_json::json!({ "label": labels.names[best], "score": score, "scores": scores });
                    if let Some(id) = &r.id {
                        v["id"] = id.clone();
                    }
                    v
                })
                .collect()
        }
        other => bail!("prediction for {other:?} models is not available yet"),
    };
    let mut sink = Sink::open(a.output.as_deref())?;
    for v in lines {
        writeln!(sink.writer(), "{v}")?;
    }
    sink.finish()
}
