//! `ptm predict`: a fine-tuned model's predictions on JSONL, one line per input line, in order.

use std::path::PathBuf;

use anyhow::Result;
use ptm::finetune::token_cls::TokenClsData;
use ptm::finetune::{LabelSet, qa, seq_cls, similarity, token_cls};

use super::task_model::{self, InferenceOptions, TaskModel, check_records, tag_scores};
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
    #[command(flatten)]
    options: InferenceOptions,
}

pub fn run(a: Args) -> Result<()> {
    let (model, tokenizer, positions) = task_model::load(&a.model, a.options.dtype)?;
    let o = &a.options;
    let max_length = o.max_length(positions)?;
    let pad = tokenizer.pad_spec();
    let path = a.input.as_path();
    let lines: Vec<serde_json::Value> = match model {
        TaskModel::SeqCls(model, labels) => {
            let data = seq_cls::load(path, &tokenizer, max_length, &labels, false)?;
            let probs = seq_cls::predict(&model, &data, pad, o.batch_size, None)?;
            check_records(path, "class probabilities", &probs)?;
            let ids = data.records.iter().map(|r| r.id.clone());
            probs
                .iter()
                .zip(ids)
                .map(|(p, id)| {
                    let (best, score) = seq_cls::argmax(p);
                    let scores: serde_json::Map<String, serde_json::Value> =
                        labels.names.iter().zip(p).map(|(n, &s)| (n.clone(), s.into())).collect();
                    with_id(serde_json::json!({ "label": labels.names[best], "score": score, "scores": scores }), id)
                })
                .collect()
        }
        TaskModel::TokenCls(model, labels) => {
            let data = token_cls::load(path, &tokenizer, max_length, &labels, false)?;
            let (pred, _) = token_cls::predict(
                &model,
                &data,
                pad,
                o.batch_size,
                token_cls::outside_id(&labels),
                None,
            )?;
            check_records(path, "tag scores", pred.iter().map(|r| tag_scores(r)))?;
            (0..data.records.len())
                .map(|i| {
                    with_id(
                        tagged(&data, i, &pred[i], &labels),
                        data.records[i].id.clone(),
                    )
                })
                .collect()
        }
        TaskModel::Qa(model) => {
            let data = qa::load(
                path,
                &tokenizer,
                max_length,
                o.doc_stride(max_length),
                false,
            )?;
            let answers = qa::predict(&model, &data, pad, o.batch_size, o.max_answer_tokens, None)?;
            check_records(path, "answer score", answers.iter().map(|x| [x.score]))?;
            let ids = data.records.iter().map(|r| r.id.clone());
            answers
                .into_iter()
                .zip(ids)
                .map(|(answer, id)| Ok(with_id(serde_json::to_value(answer)?, id)))
                .collect::<Result<_>>()?
        }
        TaskModel::Similarity(model, pooling) => {
            let data = similarity::load(path, &tokenizer, max_length, false)?;
            let cos = similarity::BiEncoder {
                model: &model,
                pooling,
                pad,
            }
            .cosines(&data, o.batch_size, None)?;
            check_records(path, "cosine", cos.iter().map(|c| [*c]))?;
            let ids = data.records.iter().map(|r| r.id.clone());
            cos.into_iter()
                .zip(ids)
                .map(|(c, id)| with_id(serde_json::json!({ "cosine": c }), id))
                .collect()
        }
    };
    let mut sink = Sink::open(a.output.as_deref())?;
    for v in lines {
        writeln!(sink.writer(), "{v}")?;
    }
    sink.finish()
}

/// A prediction with the input's `id`, when it had one.
fn with_id(mut v: serde_json::Value, id: Option<serde_json::Value>) -> serde_json::Value {
    if let Some(id) = id {
        v["id"] = id;
    }
    v
}

/// A record's tags and its entities with character spans in its text.
fn tagged(
    data: &TokenClsData,
    i: usize,
    pred: &[(usize, f32)],
    labels: &LabelSet,
) -> serde_json::Value {
    let tags: Vec<&str> = pred
        .iter()
        .map(|&(t, _)| labels.names[t].as_str())
        .collect();
    let chars: Vec<char> = data.texts[i].chars().collect();
    let entities: Vec<serde_json::Value> = ptm::metrics::entities(&tags)
        .into_iter()
        .map(|e| {
            let (start, end) = (data.word_spans[i][e.start].0, data.word_spans[i][e.end].1);
            let score = pred[e.start..=e.end].iter().map(|p| p.1).sum::<f32>()
                / (e.end - e.start + 1) as f32;
            serde_json::json!({
                "type": e.kind,
                "text": chars[start..end].iter().collect::<String>(),
                "start": start,
                "end": end,
                "score": score,
            })
        })
        .collect();
    serde_json::json!({ "tags": tags, "entities": entities })
}
