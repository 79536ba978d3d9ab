//! `ptm predict`: a fine-tuned model's predictions on JSONL, one line per input line, in order.
//! Sequence classification, question answering and aggregated token classification go through
//! the library's pipelines.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ptm::finetune::token_cls::TokenClsData;
use ptm::finetune::{LabelSet, Task, qa, seq_cls, similarity, token_cls};
use ptm::models::Pretrained;
use ptm::pipelines::{
    AggregationStrategy, ClassificationFunction, QaInput, QaOptions, QuestionAnswering,
    TextClassification, TextInput, TokenClassification,
};

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
    /// token-cls: print transformers' token-classification pipeline output instead, a list of
    /// entities per text: none, simple, first, average or max.
    #[arg(long, value_parser = strategy)]
    aggregation_strategy: Option<AggregationStrategy>,
    #[command(flatten)]
    options: InferenceOptions,
}

fn strategy(s: &str) -> Result<AggregationStrategy, String> {
    s.parse().map_err(|e: ptm::Error| e.to_string())
}

pub fn run(a: Args) -> Result<()> {
    let (task, _) = task_model::task(&Pretrained::open(&a.model)?)?;
    let path = a.input.as_path();
    let json = |values: Vec<serde_json::Value>| values.iter().map(ToString::to_string).collect();
    let lines: Vec<String> = match (task, a.aggregation_strategy) {
        (Task::SeqCls, None) => json(classify(&a, path)?),
        (Task::Qa, None) => json(answer(&a, path)?),
        (Task::TokenCls, Some(strategy)) => entities(&a, path, strategy)?,
        (_, Some(_)) => bail!("--aggregation-strategy is for token-cls models"),
        (Task::TokenCls | Task::Similarity, None) => json(with_task_model(&a, path)?),
    };
    let mut sink = Sink::open(a.output.as_deref())?;
    for v in lines {
        writeln!(sink.writer(), "{v}")?;
    }
    sink.finish()
}

/// Sequence classification: the best label, its probability and every label's.
fn classify(a: &Args, path: &Path) -> Result<Vec<serde_json::Value>> {
    let o = &a.options;
    let pipeline = TextClassification::load(&a.model, &o.dtype.store())?;
    let max_length = o.max_length(pipeline.max_positions())?;
    let pipeline = pipeline
        .with_max_length(max_length)?
        .with_batch_size(o.batch_size)?;
    let labels = LabelSet {
        names: pipeline.labels().to_vec(),
    };
    let (records, _) = seq_cls::read(path, &labels, false)?;
    let inputs: Vec<TextInput> = seq_cls::inputs(&records)
        .into_iter()
        .map(|(text, pair)| match pair {
            Some(pair) => TextInput::Pair(text, pair),
            None => TextInput::Text(text),
        })
        .collect();
    let probs = pipeline.scores(&inputs, ClassificationFunction::Softmax)?;
    check_records(path, "class probabilities", &probs)?;
    let ids = records.iter().map(|r| r.id.clone());
    Ok(probs
        .iter()
        .zip(ids)
        .map(|(p, id)| {
            let (best, score) = seq_cls::argmax(p);
            let scores: serde_json::Map<String, serde_json::Value> = labels
                .names
                .iter()
                .zip(p)
                .map(|(n, &s)| (n.clone(), s.into()))
                .collect();
            with_id(
                serde_json::json!({ "label": labels.names[best], "score": score, "scores": scores }),
                id,
            )
        })
        .collect())
}

/// Question answering: each question's best answer span.
fn answer(a: &Args, path: &Path) -> Result<Vec<serde_json::Value>> {
    let o = &a.options;
    let pipeline = QuestionAnswering::load(&a.model, &o.dtype.store())?;
    let max_length = o.max_length(pipeline.max_positions())?;
    let pipeline = pipeline
        .with_max_length(max_length)?
        .with_batch_size(o.batch_size)?;
    let records = qa::read(path, false)?;
    let inputs: Vec<QaInput> = records
        .iter()
        .map(|r| QaInput {
            question: &r.question,
            context: &r.context,
        })
        .collect();
    let options = QaOptions {
        doc_stride: Some(o.doc_stride(max_length)),
        max_answer_tokens: o.max_answer_tokens,
    };
    let answers = pipeline.answer(&inputs, &options)?;
    let ids = records.iter().map(|r| r.id.clone());
    answers
        .into_iter()
        .zip(ids)
        .map(|(answer, id)| Ok(with_id(serde_json::to_value(answer)?, id)))
        .collect()
}

/// Token classification as transformers' pipeline reports it: each text's entities, their
/// fields in transformers' order (a record's `tokens` read as the text they make joined by
/// spaces).
fn entities(a: &Args, path: &Path, strategy: AggregationStrategy) -> Result<Vec<String>> {
    let o = &a.options;
    let pipeline = TokenClassification::load(&a.model, &o.dtype.store())?;
    let max_length = o.max_length(pipeline.max_positions())?;
    let pipeline = pipeline
        .with_max_length(max_length)?
        .with_batch_size(o.batch_size)?;
    let labels = LabelSet {
        names: pipeline.labels().to_vec(),
    };
    let data = token_cls::read(path, &labels, false)?;
    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    pipeline
        .predict(&texts, strategy)?
        .into_iter()
        .map(|e| Ok(serde_json::to_string(&e)?))
        .collect()
}

/// Token classification (tags per word) and similarity, through the fine-tuning code.
fn with_task_model(a: &Args, path: &Path) -> Result<Vec<serde_json::Value>> {
    let (model, tokenizer, positions) = task_model::load(&a.model, a.options.dtype)?;
    let o = &a.options;
    let max_length = o.max_length(positions)?;
    let pad = tokenizer.pad_spec();
    Ok(match model {
        TaskModel::TokenCls(model, labels) => {
            let data = token_cls::load(path, &tokenizer, max_length, &labels, false)?;
            let (pred, _) = token_cls::predict(
                model.as_ref(),
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
        TaskModel::Similarity(model, pooling) => {
            let data = similarity::load(path, &tokenizer, max_length, false)?;
            let cos = similarity::BiEncoder {
                model: model.as_ref(),
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
        TaskModel::SeqCls(..) | TaskModel::Qa(..) => {
            bail!(
                "internal: sequence classification and question answering predict through their pipelines"
            )
        }
    })
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
