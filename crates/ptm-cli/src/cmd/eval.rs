//! `ptm eval`: a fine-tuned model's metrics on labeled data, printed and written as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ptm::finetune::{qa, seq_cls, similarity, token_cls};

use super::Format;
use super::task_model::{self, InferenceOptions, TaskModel, check_records, tag_scores};

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
    /// json (everything) or text (a summary).
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    #[command(flatten)]
    options: InferenceOptions,
}

pub fn run(a: Args) -> Result<()> {
    let metrics = evaluate(&a)?;
    let text = serde_json::to_string_pretty(&metrics)?;
    match a.format {
        Format::Json => println!("{text}"),
        Format::Text => print!("{}", summary(&metrics)),
    }
    if let Some(path) = &a.output {
        ptm::io::write_atomic(path, format!("{text}\n").as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The headline numbers of a metrics report, one per line.
fn summary(m: &serde_json::Value) -> String {
    let num = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
    let mut out = String::new();
    for key in [
        "accuracy",
        "word_accuracy",
        "exact_match",
        "f1",
        "spearman",
        "pearson",
        "eval_loss",
    ] {
        if let Some(v) = m.get(key) {
            out += &format!("{key:<16} {}\n", num(v));
        }
    }
    for avg in ["macro_avg", "micro_avg"] {
        if let Some(v) = m.get(avg) {
            out += &format!(
                "{avg:<16} precision {} recall {} f1 {}\n",
                num(&v["precision"]),
                num(&v["recall"]),
                num(&v["f1"])
            );
        }
    }
    for group in ["per_class", "per_type"] {
        if let Some(serde_json::Value::Object(classes)) = m.get(group) {
            for (name, v) in classes {
                out += &format!(
                    "  {name:<14} precision {} recall {} f1 {} support {}\n",
                    num(&v["precision"]),
                    num(&v["recall"]),
                    num(&v["f1"]),
                    v["support"]
                );
            }
        }
    }
    if let Some(c) = m.get("confusion") {
        out += &format!("confusion (rows gold, columns predicted) {c}\n");
    }
    out
}

fn evaluate(a: &Args) -> Result<serde_json::Value> {
    let (model, tokenizer, positions) = task_model::load(&a.model, a.options.dtype)?;
    let o = &a.options;
    let max_length = o.max_length(positions)?;
    let pad = tokenizer.pad_spec();
    let path = a.data.as_path();
    Ok(match model {
        TaskModel::SeqCls(model, labels) => {
            let data = seq_cls::load(path, &tokenizer, max_length, &labels, true)?;
            let probs = seq_cls::predict(model.as_ref(), &data, pad, o.batch_size, None)?;
            check_records(path, "class probabilities", &probs)?;
            let (report, loss) = seq_cls::report(&data, &labels, &probs)?;
            let mut v = serde_json::to_value(&report)?;
            v["task"] = "seq-cls".into();
            v["eval_loss"] = loss.into();
            v["count"] = data.records.len().into();
            v["labels"] = serde_json::to_value(&labels.names)?;
            v
        }
        TaskModel::TokenCls(model, labels) => {
            let data = token_cls::load(path, &tokenizer, max_length, &labels, true)?;
            let (pred, loss) = token_cls::predict(
                model.as_ref(),
                &data,
                pad,
                o.batch_size,
                token_cls::outside_id(&labels),
                None,
            )?;
            check_records(path, "tag scores", pred.iter().map(|r| tag_scores(r)))?;
            ptm::pipelines::check_finite(|| "eval_loss".into(), &[loss])?;
            let (report, accuracy) = token_cls::report(&data, &labels, &pred)?;
            let mut v = serde_json::to_value(&report)?;
            v["task"] = "token-cls".into();
            v["eval_loss"] = loss.into();
            v["word_accuracy"] = accuracy.into();
            v["count"] = data.records.len().into();
            v
        }
        TaskModel::Qa(model) => {
            let data = qa::load(path, &tokenizer, max_length, o.doc_stride(max_length), true)?;
            let answers = qa::predict(
                model.as_ref(),
                &data,
                pad,
                o.batch_size,
                o.max_answer_tokens,
                None,
            )?;
            check_records(path, "answer score", answers.iter().map(|x| [x.score]))?;
            let mut v = serde_json::to_value(qa::report(&data, &answers)?)?;
            v["task"] = "qa".into();
            v
        }
        TaskModel::Similarity(model, pooling) => {
            let data = similarity::load(path, &tokenizer, max_length, true)?;
            let cos = similarity::BiEncoder {
                model: model.as_ref(),
                pooling,
                pad,
            }
            .cosines(&data, o.batch_size, None)?;
            check_records(path, "cosine", cos.iter().map(|c| [*c]))?;
            let (spearman, pearson) = similarity::correlations(&data, &cos)?;
            serde_json::json!({ "task": "similarity", "spearman": spearman, "pearson": pearson, "count": data.records.len() })
        }
    })
}
