//! `ptm predict`: a fine-tuned model's predictions on JSONL, one line per input line, in order.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ptm::finetune::token_cls::TokenClsData;
use ptm::finetune::{LabelSet, Task, qa, seq_cls, similarity, token_cls};
use ptm::models::Pretrained;
use ptm::models::bert::{BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification};
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
    /// qa: context tokens shared by consecutive windows (default: a third of --max-length).
    #[arg(long)]
    doc_stride: Option<usize>,
    /// qa: the longest answer, in tokens.
    #[arg(long, default_value_t = 30)]
    max_answer_tokens: usize,
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
        Task::TokenCls => {
            let labels = LabelSet { names: pretrained.config.common().id2label.clone() };
            let model = BertForTokenClassification::new(cfg, &store.root())?;
            ptm::models::require_trained(&store, &pretrained.dir, "token classification head")?;
            let data = token_cls::load(&a.input, &tokenizer, a.max_length, &labels, false)?;
            let (pred, _) = token_cls::predict(&model, &data, tokenizer.pad_id(), a.batch_size, token_cls::outside_id(&labels))?;
            (0..data.records.len()).map(|i| tagged(&data, i, &pred[i], &labels)).collect()
        }
        Task::Qa => {
            let model = BertForQuestionAnswering::new(cfg, &store.root())?;
            ptm::models::require_trained(&store, &pretrained.dir, "question answering head")?;
            let data = qa::load(&a.input, &tokenizer, a.max_length, a.doc_stride.unwrap_or(a.max_length / 3), false)?;
            let answers = qa::predict(&model, &data, tokenizer.pad_id(), a.batch_size, a.max_answer_tokens)?;
            data.records
                .iter()
                .zip(answers)
                .map(|(r, answer)| {
                    let mut v = serde_json::to_value(answer)?;
                    if let Some(id) = &r.id {
                        v["id"] = id.clone();
                    }
                    Ok(v)
                })
                .collect::<Result<_>>()?
        }
        Task::Similarity => {
            let (model, pooling) = super::eval::bi_encoder(&a.model, cfg, &store)?;
            let data = similarity::load(&a.input, &tokenizer, a.max_length, false)?;
            let encoder = similarity::BiEncoder { model: &model, pooling, pad_id: tokenizer.pad_id() };
            let cos = encoder.cosines(&data, a.batch_size)?;
            data.records
                .iter()
                .zip(cos)
                .map(|(r, c)| {
                    let mut v = serde_json::json!({ "cosine": c });
                    if let Some(id) = &r.id {
                        v["id"] = id.clone();
                    }
                    v
                })
                .collect()
        }
    };
    let mut sink = Sink::open(a.output.as_deref())?;
    for v in lines {
        writeln!(sink.writer(), "{v}")?;
    }
    sink.finish()
}

/// A record's tags and its entities with character spans in its text.
fn tagged(data: &TokenClsData, i: usize, pred: &[(usize, f32)], labels: &LabelSet) -> serde_json::Value {
    let tags: Vec<&str> = pred.iter().map(|&(t, _)| labels.names[t].as_str()).collect();
    let chars: Vec<char> = data.texts[i].chars().collect();
    let entities: Vec<serde_json::Value> = ptm::metrics::entities(&tags)
        .into_iter()
        .map(|e| {
            let (start, end) = (data.word_spans[i][e.start].0, data.word_spans[i][e.end].1);
            let score = pred[e.start..=e.end].iter().map(|p| p.1).sum::<f32>() / (e.end - e.start + 1) as f32;
            serde_json::json!({
                "type": e.kind,
                "text": chars[start..end].iter().collect::<String>(),
                "start": start,
                "end": end,
                "score": score,
            })
        })
        .collect();
    let mut v = serde_json::json!({ "tags": tags, "entities": entities });
    if let Some(id) = &data.records[i].id {
        v["id"] = id.clone();
    }
    v
}
