//! `ptm finetune`: a pretrained model plus a task head trained on labeled JSONL, evaluated every
//! epoch, the best model kept in the output directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ptm::config::{ModelConfig, ProblemType};
use ptm::data::fingerprint::data_fingerprint;
use ptm::finetune::similarity::{self, SimilarityLoss};
use ptm::finetune::{
    DataSet, LabelSet, Task, check_tokenizer, labels_beside, qa, seq_cls, token_cls,
};
use ptm::heads::Pooling;
use ptm::models::auto::{self, Head};
use ptm::models::{Pretrained, report_load};
use ptm::nn::{ParamStore, StoreOptions};
use ptm::sentence_transformers::ModelDir;
use ptm::tokenizer::Tokenizer;
use ptm::train::{BestModel, Evaluator, ModelSpec, Objective};

use super::train_options::{Defaults, TrainOptions};

/// Fine-tune a pretrained model on a labeled task.
#[derive(clap::Args)]
pub struct Args {
    /// seq-cls, token-cls, qa or similarity.
    #[arg(long)]
    task: String,
    /// The pretrained model: a directory or a Hugging Face cache entry.
    #[arg(long)]
    model: String,
    /// Labeled JSONL (the task's format; see the README).
    #[arg(long = "train")]
    train_file: PathBuf,
    /// Labeled JSONL evaluated every epoch; the best model by --metric is kept.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Label names, one per line (default: labels.txt beside the training file, else the data's).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Tokens per example (longer inputs are truncated); default 128, or the model's positions
    /// when fewer.
    #[arg(long = "max-length")]
    max_length_flag: Option<usize>,
    /// --max-length, resolved against the model.
    #[arg(skip)]
    max_length: usize,
    /// The metric that picks the kept model (default: accuracy for seq-cls, f1 for token-cls
    /// and qa, spearman for similarity); names with "loss" are better lower.
    #[arg(long)]
    metric: Option<String>,
    /// Stop after N evaluations without improvement.
    #[arg(long)]
    early_stopping: Option<usize>,
    /// seq-cls: "balanced" or one weight per label, comma-separated.
    #[arg(long)]
    class_weights: Option<String>,
    /// qa: context tokens shared by consecutive windows of a long context (default: a third of
    /// --max-length, as run_qa's 128 of 384).
    #[arg(long)]
    doc_stride: Option<usize>,
    /// qa: the longest answer, in tokens.
    #[arg(long, default_value_t = 30)]
    max_answer_tokens: usize,
    /// similarity: cosine (regress cos on the score) or mnrl (in-batch negatives; pairs are
    /// positives). Default: cosine when every pair has a score.
    #[arg(long)]
    similarity_loss: Option<String>,
    /// Train on this seeded random share of the training examples (e.g. 0.1).
    #[arg(long)]
    train_fraction: Option<f64>,
    /// Start from random weights of the same architecture instead of the pretrained ones.
    #[arg(long)]
    from_scratch: bool,
    #[command(flatten)]
    train: TrainOptions,
}

const DEFAULTS: Defaults = Defaults {
    lr: 5e-5,
    epochs: 3,
    eval_each_epoch: true,
    eval_at_start: false,
};

pub fn run(mut a: Args) -> Result<()> {
    let task = Task::parse(&a.task)?;
    // Held until the run ends: no other run writes here meanwhile.
    let _output = a.train.claim_output()?;
    let pretrained = Pretrained::open(&a.model)?;
    let tokenizer = pretrained.tokenizer()?;
    tokenizer.check_fits(pretrained.config.dims().vocab_size)?;
    let positions = pretrained.config.dims().max_positions;
    a.max_length = match a.max_length_flag {
        Some(n) if n > positions => {
            bail!("--max-length {n} exceeds the model's {positions} positions")
        }
        Some(n) => n,
        None => positions.min(128),
    };
    ptm::limits::check_training(&pretrained.config, a.train.batch_size, a.max_length)?;
    check_tokenizer(&pretrained.config, &tokenizer)
        .with_context(|| format!("{}", pretrained.dir.display()))?;
    match task {
        Task::SeqCls => seq_cls_run(&a, &pretrained, &tokenizer),
        Task::TokenCls => token_cls_run(&a, &pretrained, &tokenizer),
        Task::Qa => qa_run(&a, &pretrained, &tokenizer),
        Task::Similarity => similarity_run(&a, &pretrained, &tokenizer),
    }
}

/// The weights training starts from: a resumed checkpoint, random, or the pretrained model.
fn store(a: &Args, pretrained: &Pretrained, config: &ModelConfig) -> Result<ParamStore> {
    let opts = StoreOptions {
        trainable: true,
        seed: a.train.seed,
        precision: a.train.dtype,
        ..Default::default()
    };
    Ok(match (a.train.resume_dir()?, a.from_scratch) {
        (Some(dir), _) => Pretrained {
            dir,
            config: config.clone(),
        }
        .store(&opts)?,
        (None, true) => ParamStore::new(None, &[auto::family(config)?.base_model_prefix()], &opts),
        (None, false) => Pretrained {
            dir: pretrained.dir.clone(),
            config: config.clone(),
        }
        .store(&opts)?,
    })
}

fn best(a: &Args, default_metric: &str) -> Option<BestModel> {
    a.eval.as_ref()?;
    let metric = a
        .metric
        .clone()
        .unwrap_or_else(|| default_metric.to_string());
    Some(BestModel {
        greater_is_better: !metric.contains("loss"),
        metric,
        patience: a.early_stopping,
    })
}

/// A seeded random share of `n` indices, in their original order.
fn sample(n: usize, fraction: Option<f64>, seed: u64) -> Result<Option<Vec<usize>>> {
    let Some(f) = fraction else { return Ok(None) };
    if !(f > 0.0 && f <= 1.0) {
        bail!("--train-fraction {f} is not in (0, 1]");
    }
    let mut order = ptm::train::epoch_order(n, seed ^ 0x5EED, 0);
    order.truncate(((n as f64 * f).ceil() as usize).max(1));
    order.sort_unstable();
    Ok(Some(order))
}

/// The label set: --labels, labels.txt beside the training file, or the training data's.
fn label_set(a: &Args, from_data: fn(&Path) -> ptm::Result<LabelSet>) -> Result<LabelSet> {
    Ok(
        match a
            .labels
            .as_deref()
            .or(labels_beside(&a.train_file).as_deref())
        {
            Some(f) => LabelSet::from_file(f)?,
            None => from_data(&a.train_file)?,
        },
    )
}

/// The pretrained config turned into the fine-tuned model's: its head and labels.
fn task_config(
    pretrained: &Pretrained,
    architecture: &str,
    labels: Option<&LabelSet>,
) -> ModelConfig {
    let mut config = pretrained.config.clone();
    let common = config.common_mut();
    if let Some(labels) = labels {
        common.id2label = labels.names.clone();
    }
    common.architectures = vec![architecture.to_string()];
    config
}

/// The training data (a `--train-fraction` of it) and the evaluation data, read by `load(path,
/// is_eval)`.
fn data<D: DataSet>(
    a: &Args,
    load: impl Fn(&Path, bool) -> ptm::Result<D>,
) -> Result<(D, Option<D>)> {
    let mut train = load(&a.train_file, false)?;
    if let Some(keep) = sample(train.num_records(), a.train_fraction, a.train.seed)? {
        train = train.select(&keep);
    }
    let eval = a.eval.as_deref().map(|f| load(f, true)).transpose()?;
    Ok((train, eval))
}

/// Trains `objective`, keeping the best model by the metric, and prints its evaluation.
#[allow(clippy::too_many_arguments)]
fn train_and_report(
    a: &Args,
    config: &ModelConfig,
    architecture: &str,
    store: &ParamStore,
    tokenizer: &Tokenizer,
    objective: &dyn Objective,
    evaluator: Option<&dyn Evaluator>,
    default_metric: &str,
) -> Result<()> {
    report_load(store, architecture);
    let spec = ModelSpec {
        config,
        architecture,
        store,
        tokenizer: Some(tokenizer),
    };
    // What turns the file into examples: the task, lengths, the share kept and the labels.
    let settings = format!(
        "{} max_length {} doc_stride {:?} fraction {:?} labels {:?}",
        a.task,
        a.max_length,
        a.doc_stride,
        a.train_fraction,
        config.common().id2label
    );
    let fingerprint = data_fingerprint(std::slice::from_ref(&a.train_file), tokenizer, &settings)?;
    let outcome = a.train.run(
        objective,
        evaluator,
        &spec,
        &DEFAULTS,
        best(a, default_metric),
        fingerprint,
    )?;
    print_best(&outcome, &a.train.output)
}

fn seq_cls_run(a: &Args, pretrained: &Pretrained, tokenizer: &Tokenizer) -> Result<()> {
    let labels = label_set(a, seq_cls::labels_from_data)?;
    let arch = auto::architecture_for(&pretrained.config, Head::SequenceClassification)?;
    let mut config = task_config(pretrained, arch, Some(&labels));
    config.common_mut().problem_type = Some(ProblemType::SingleLabelClassification);
    let (train_data, eval_data) = data(a, |f, _| {
        seq_cls::load(f, tokenizer, a.max_length, &labels, true)
    })?;
    let class_weights = match a.class_weights.as_deref() {
        None => None,
        Some("balanced") => Some(seq_cls::balanced_class_weights(
            &train_data.labels,
            labels.names.len(),
        )),
        Some(list) => Some(
            list.split(',')
                .map(|w| {
                    w.trim()
                        .parse::<f32>()
                        .with_context(|| format!("--class-weights: {w:?} is not a number"))
                })
                .collect::<Result<Vec<f32>>>()?,
        ),
    };
    if let Some(w) = &class_weights {
        anyhow::ensure!(
            w.len() == labels.names.len(),
            "--class-weights has {} weights for {} labels {:?}",
            w.len(),
            labels.names.len(),
            labels.names
        );
    }
    let store = store(a, pretrained, &config)?;
    let model = auto::sequence_classifier(&config, &store.root())?;
    let pad = tokenizer.pad_spec();
    let objective = seq_cls::SeqClsObjective {
        model: model.as_ref(),
        data: &train_data,
        pad,
        class_weights,
    };
    let evaluator = eval_data.as_ref().map(|data| seq_cls::SeqClsEvaluator {
        model: model.as_ref(),
        data,
        labels: &labels,
        pad,
        batch_size: a.train.eval_batch_size(2),
    });
    eprintln!("labels: {}", labels.names.join(", "));
    train_and_report(
        a,
        &config,
        arch,
        &store,
        tokenizer,
        &objective,
        evaluator.as_ref().map(|e| e as &dyn Evaluator),
        "accuracy",
    )
}

fn token_cls_run(a: &Args, pretrained: &Pretrained, tokenizer: &Tokenizer) -> Result<()> {
    let labels = label_set(a, token_cls::labels_from_data)?;
    let arch = auto::architecture_for(&pretrained.config, Head::TokenClassification)?;
    let config = task_config(pretrained, arch, Some(&labels));
    let (train_data, eval_data) = data(a, |f, _| {
        token_cls::load(f, tokenizer, a.max_length, &labels, true)
    })?;
    let store = store(a, pretrained, &config)?;
    let model = auto::token_classifier(&config, &store.root())?;
    let pad = tokenizer.pad_spec();
    let objective = token_cls::TokenClsObjective {
        model: model.as_ref(),
        data: &train_data,
        pad,
    };
    let evaluator = eval_data.as_ref().map(|data| token_cls::TokenClsEvaluator {
        model: model.as_ref(),
        data,
        labels: &labels,
        pad,
        batch_size: a.train.eval_batch_size(2),
    });
    eprintln!("tags: {}", labels.names.join(", "));
    train_and_report(
        a,
        &config,
        arch,
        &store,
        tokenizer,
        &objective,
        evaluator.as_ref().map(|e| e as &dyn Evaluator),
        "f1",
    )
}

fn qa_run(a: &Args, pretrained: &Pretrained, tokenizer: &Tokenizer) -> Result<()> {
    let arch = auto::architecture_for(&pretrained.config, Head::QuestionAnswering)?;
    // Start and end: transformers sizes `qa_outputs` by num_labels, which must say 2.
    let span_labels = LabelSet {
        names: vec!["LABEL_0".into(), "LABEL_1".into()],
    };
    let config = task_config(pretrained, arch, Some(&span_labels));
    let stride = a.doc_stride.unwrap_or(a.max_length / 3);
    let (train_data, eval_data) =
        data(a, |f, _| qa::load(f, tokenizer, a.max_length, stride, true))?;
    let store = store(a, pretrained, &config)?;
    let model = auto::span_extractor(&config, &store.root())?;
    let pad = tokenizer.pad_spec();
    let objective = qa::QaObjective {
        model: model.as_ref(),
        data: &train_data,
        pad,
    };
    let evaluator = eval_data.as_ref().map(|data| qa::QaEvaluator {
        model: model.as_ref(),
        data,
        pad,
        batch_size: a.train.eval_batch_size(2),
        max_answer_tokens: a.max_answer_tokens,
    });
    eprintln!(
        "{} questions in {} windows",
        train_data.records.len(),
        train_data.windows.len()
    );
    train_and_report(
        a,
        &config,
        arch,
        &store,
        tokenizer,
        &objective,
        evaluator.as_ref().map(|e| e as &dyn Evaluator),
        "f1",
    )
}

fn similarity_run(a: &Args, pretrained: &Pretrained, tokenizer: &Tokenizer) -> Result<()> {
    let st = ModelDir::open(&a.model)?.sentence_transformers;
    let pooling = st
        .as_ref()
        .map_or_else(|| vec![Pooling::Mean], |s| s.pooling.clone());
    let normalize = st.as_ref().is_some_and(|s| s.normalize);
    let arch = auto::architecture_for(&pretrained.config, Head::Base)?;
    let config = task_config(pretrained, arch, None);
    // Training pairs need scores only for the cosine loss; evaluation pairs always.
    let (train_data, eval_data) = data(a, |f, is_eval| {
        similarity::load(f, tokenizer, a.max_length, is_eval)
    })?;
    let loss = match a.similarity_loss.as_deref() {
        Some("cosine") => SimilarityLoss::Cosine,
        Some("mnrl") => SimilarityLoss::MultipleNegatives,
        None if train_data.has_scores() => SimilarityLoss::Cosine,
        None => SimilarityLoss::MultipleNegatives,
        Some(other) => bail!("unknown --similarity-loss {other:?}; supported: cosine, mnrl"),
    };
    if loss == SimilarityLoss::Cosine && !train_data.has_scores() {
        bail!(
            "--similarity-loss cosine needs a \"score\" on every training pair in {}",
            a.train_file.display()
        );
    }
    let store = store(a, pretrained, &config)?;
    // With BERT's pooler, so a saved model keeps it.
    let model = auto::backbone(&config, &store.root(), true)?;
    let pad = tokenizer.pad_spec();
    let encoder = || similarity::BiEncoder {
        model: model.as_ref(),
        pooling: pooling.clone(),
        pad,
    };
    let objective = similarity::SimilarityObjective {
        encoder: encoder(),
        data: &train_data,
        loss,
    };
    let evaluator = eval_data
        .as_ref()
        .map(|data| similarity::SimilarityEvaluator {
            encoder: encoder(),
            data,
            batch_size: a.train.eval_batch_size(2),
        });
    eprintln!(
        "{} pairs, {loss:?} loss, pooling {pooling:?}",
        train_data.records.len()
    );
    train_and_report(
        a,
        &config,
        arch,
        &store,
        tokenizer,
        &objective,
        evaluator.as_ref().map(|e| e as &dyn Evaluator),
        "spearman",
    )?;
    if !super::train_options::is_lead() {
        return Ok(());
    }
    // The output is a sentence-transformers model too.
    let width = config.dims().hidden_size * pooling.len();
    ptm::sentence_transformers::save_layout(
        &a.train.output,
        &pooling,
        normalize,
        width,
        a.max_length,
    )?;
    Ok(())
}

/// Prints the evaluation of the kept model (rank 0 of a data-parallel run).
fn print_best(outcome: &ptm::train::TrainOutcome, output: &Path) -> Result<()> {
    if !super::train_options::is_lead() {
        return Ok(());
    }
    let Some(best) = &outcome.best else {
        return Ok(());
    };
    let Some(record) = outcome.evals.iter().find(|r| r.step == best.step) else {
        return Ok(());
    };
    let shown: Vec<String> = record
        .metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "step": record.step, "model": output, "metrics": record.metrics })
    );
    eprintln!("kept step {}: {}", record.step, shown.join(", "));
    Ok(())
}
