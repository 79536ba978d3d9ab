//! `ptm eval`: a fine-tuned model's metrics on labeled data, printed and written as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ptm::finetune::{LabelSet, Task, qa, seq_cls, similarity, token_cls};
use ptm::heads::Pooling;
use ptm::sentence_transformers::ModelDir;
use ptm::models::Pretrained;
use ptm::models::bert::{BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification, BertModel};
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
    /// qa: context tokens shared by consecutive windows (default: a third of --max-length).
    #[arg(long)]
    doc_stride: Option<usize>,
    /// qa: the longest answer, in tokens.
    #[arg(long, default_value_t = 30)]
    max_answer_tokens: usize,
}

pub fn run(a: Args) -> Result<()> {
    let pretrained = Pretrained::open(&a.model)?;
    let metrics = evaluate(&pretrained, &a)?;
    let text = serde_json::to_string_pretty(&metrics)?;
    println!("{text}");
    if let Some(path) = &a.output {
        ptm::io::write_atomic(path, format!("{text}\n").as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The encoder of a bi-encoder directory and its pooling (sentence-transformers' files, else mean).
pub fn bi_encoder(spec: &str, cfg: &ptm::config::BertConfig, store: &ptm::nn::ParamStore) -> Result<(BertModel, Vec<Pooling>)> {
    let st = ModelDir::open(spec)?.sentence_transformers;
    let model = BertModel::new(cfg, &store.root(), true)?;
    Ok((model, st.map_or_else(|| vec![Pooling::Mean], |s| s.pooling)))
}

/// The task a model directory was fine-tuned for.
pub fn task_of(pretrained: &Pretrained) -> Result<(Task, String)> {
    let arch = pretrained.config.common().architectures.first().cloned().unwrap_or_else(|| "BertModel".into());
    let task = Task::of_architecture(&arch)
        .with_context(|| format!("{}: {arch} is not a fine-tuned task model", pretrained.dir.display()))?;
    Ok((task, arch))
}

fn evaluate(pretrained: &Pretrained, a: &Args) -> Result<serde_json::Value> {
    let (data, batch_size, max_length) = (&a.data, a.batch_size, a.max_length);
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
        Task::Qa => {
            let model = BertForQuestionAnswering::new(cfg, &store.root())?;
            ptm::models::require_trained(&store, &pretrained.dir, "question answering head")?;
            let data = qa::load(data, &tokenizer, max_length, a.doc_stride.unwrap_or(a.max_length / 3), true)?;
            let answers = qa::predict(&model, &data, tokenizer.pad_id(), batch_size, a.max_answer_tokens)?;
            let mut v = serde_json::to_value(qa::report(&data, &answers)?)?;
            v["task"] = "qa".into();
            Ok(v)
        }
        Task::Similarity => {
            let (model, pooling) = bi_encoder(&a.model, cfg, &store)?;
            let data = similarity::load(data, &tokenizer, max_length, true)?;
            let encoder = similarity::BiEncoder { model: &model, pooling, pad_id: tokenizer.pad_id() };
            let cos = encoder.cosines(&data, batch_size)?;
            let (spearman, pearson) = similarity::correlations(&data, &cos)?;
            Ok(serde_json::json!({ "task": "similarity", "spearman": spearman, "pearson": pearson, "count": data.records.len() }))
        }
    }
}
