//! `ptm pretrain`: learn a language model from raw text (masked LM for BERT, causal LM for
//! GPT-2), from a config and a tokenizer, from an existing checkpoint (continued pretraining),
//! or resuming a run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ptm::config::ModelConfig;
use ptm::data::read_corpus;
use ptm::models::bert::BertForMaskedLM;
use ptm::models::gpt2::Gpt2LMHeadModel;
use ptm::models::{Pretrained, base_prefix};
use ptm::nn::{ParamStore, StoreOptions};
use ptm::objectives::clm::{CausalLmObjective, group_texts};
use ptm::objectives::mlm::{MaskedLmObjective, MlmConfig};
use ptm::tokenizer::Tokenizer;
use ptm::train::checkpoint::{load_checkpoint, resolve_resume};
use ptm::train::{AdamWConfig, ModelSpec, Objective, Schedule, ScheduleKind, TrainArgs, train};

/// Pretrain a model on unlabeled text.
#[derive(clap::Args)]
pub struct Args {
    /// mlm (BERT) or clm (GPT-2).
    #[arg(long, default_value = "mlm")]
    objective: String,
    /// A config.json for a model trained from scratch (with --tokenizer).
    #[arg(long, conflicts_with = "init_from")]
    config: Option<PathBuf>,
    /// The tokenizer's directory (with --config).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Continue pretraining this model directory (its tokenizer too).
    #[arg(long)]
    init_from: Option<String>,
    /// Text files or folders, or JSONL with "text".
    #[arg(long, num_args = 1.., required = true)]
    train: Vec<PathBuf>,
    /// Held-out text whose loss is reported at the end.
    #[arg(long)]
    eval: Option<PathBuf>,
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    max_steps: Option<usize>,
    /// Passes over the data (instead of --max-steps).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// linear, cosine or constant (each with warmup).
    #[arg(long, default_value = "linear")]
    schedule: String,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Checkpoint every N steps (always at the end).
    #[arg(long, default_value_t = 500)]
    save_every: usize,
    #[arg(long, default_value_t = 2)]
    keep_last: usize,
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// Resume from a checkpoint directory or an output directory's latest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let resume_dir = a.resume.as_deref().map(resolve_resume).transpose()?;
    // Where weights, config and tokenizer come from.
    let (config, tokenizer, weights_dir): (ModelConfig, Tokenizer, Option<PathBuf>) = match (&resume_dir, &a.init_from, &a.config) {
        (Some(dir), _, _) => {
            let p = Pretrained::from_dir(dir)?;
            (p.config.clone(), p.tokenizer()?, Some(dir.clone()))
        }
        (None, Some(spec), _) => {
            let p = Pretrained::open(spec)?;
            (p.config.clone(), p.tokenizer()?, Some(p.dir.clone()))
        }
        (None, None, Some(cfg)) => {
            let tok_dir = a.tokenizer.as_deref().context("--config needs --tokenizer DIR")?;
            (ModelConfig::from_file(cfg)?, Tokenizer::from_dir(tok_dir)?, None)
        }
        (None, None, None) => bail!("give --config CONFIG.json --tokenizer DIR, --init-from DIR or --resume DIR"),
    };
    let dims = config.dims();
    tokenizer.check_fits(dims.vocab_size)?;
    if a.seq_len > dims.max_positions {
        bail!("--seq-len {} exceeds the model's {} positions", a.seq_len, dims.max_positions);
    }
    let store_opts = StoreOptions { trainable: true, seed: a.seed, ..Default::default() };
    let store = match &weights_dir {
        Some(dir) => Pretrained { dir: dir.clone(), config: config.clone() }.store(&store_opts)?,
        None => ParamStore::new(None, &[base_prefix(&config)], &store_opts),
    };

    let docs = read_docs(&a.train, &tokenizer)?;
    let progress = indicatif::ProgressBar::new(0);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps, {msg} [{elapsed} < {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut on_log = |r: &ptm::train::LogRecord| {
        progress.set_position(r.step as u64);
        progress.set_message(format!("loss {:.4}, lr {:.2e}, {:.0} tokens/s", r.loss, r.lr, r.tokens_per_s));
    };

    match (a.objective.as_str(), &config) {
        ("mlm", ModelConfig::Bert(cfg)) => {
            let model = BertForMaskedLM::new(cfg, &store.root())?;
            let mask = tokenizer.special_id(|s| &s.mask).context("the tokenizer has no mask token")?;
            let objective = MaskedLmObjective {
                model: &model,
                examples: mlm_blocks(&docs, &tokenizer, a.seq_len)?,
                special_ids: special_ids(&tokenizer),
                config: MlmConfig::new(mask, dims.vocab_size as u32),
                pad_id: tokenizer.pad_id(),
                seed: a.seed,
            };
            objective.config.validate()?;
            let eval = a.eval.as_ref().map(|f| -> Result<Vec<Vec<u32>>> { mlm_blocks(&read_docs(&[f.clone()], &tokenizer)?, &tokenizer, a.seq_len) }).transpose()?;
            let spec = ModelSpec { config: &config, architecture: BertForMaskedLM::ARCHITECTURE, store: &store, tokenizer: Some(&tokenizer) };
            let eval_obj = eval.map(|examples| MaskedLmObjective {
                model: &model,
                examples,
                special_ids: objective.special_ids.clone(),
                config: objective.config,
                pad_id: objective.pad_id,
                seed: a.seed,
            });
            run_training(&a, &objective, eval_obj.as_ref().map(|o| o as &dyn Objective), &spec, resume_dir.as_deref(), &progress, &mut on_log)
        }
        ("clm", ModelConfig::Gpt2(cfg)) => {
            let model = Gpt2LMHeadModel::new(cfg, &store.root())?;
            let objective = CausalLmObjective { model: &model, blocks: group_texts(&docs, a.seq_len) };
            let eval = a.eval.as_ref().map(|f| -> Result<Vec<Vec<u32>>> { Ok(group_texts(&read_docs(&[f.clone()], &tokenizer)?, a.seq_len)) }).transpose()?;
            let eval_obj = eval.map(|blocks| CausalLmObjective { model: &model, blocks });
            let spec = ModelSpec { config: &config, architecture: Gpt2LMHeadModel::ARCHITECTURE, store: &store, tokenizer: Some(&tokenizer) };
            run_training(&a, &objective, eval_obj.as_ref().map(|o| o as &dyn Objective), &spec, resume_dir.as_deref(), &progress, &mut on_log)
        }
        ("mlm+nsp", _) => bail!("--objective mlm+nsp is not implemented yet; use mlm"),
        (objective, config) => bail!(
            "--objective {objective} does not fit a {} model (mlm: bert, clm: gpt2)",
            config.model_type()
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_training(
    a: &Args,
    objective: &dyn Objective,
    eval: Option<&dyn Objective>,
    spec: &ModelSpec,
    resume: Option<&Path>,
    progress: &indicatif::ProgressBar,
    on_log: &mut dyn FnMut(&ptm::train::LogRecord),
) -> Result<()> {
    let n = objective.num_examples();
    let per_step = a.batch_size * a.grad_accum.max(1);
    let steps_per_epoch = n / per_step.max(1);
    let max_steps = match (a.max_steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * steps_per_epoch,
        (None, None) => steps_per_epoch,
    };
    progress.set_length(max_steps as u64);
    let kind = match a.schedule.as_str() {
        "linear" => ScheduleKind::Linear,
        "cosine" => ScheduleKind::Cosine,
        "constant" => ScheduleKind::ConstantWithWarmup,
        other => bail!("unknown --schedule {other:?}; supported: linear, cosine, constant"),
    };
    let args = TrainArgs {
        output: a.output.clone(),
        max_steps,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        schedule: Schedule { kind, base_lr: a.lr, warmup_steps: a.warmup_steps, total_steps: max_steps },
        optimizer: AdamWConfig { weight_decay: a.weight_decay, ..Default::default() },
        max_grad_norm: Some(a.max_grad_norm),
        seed: a.seed,
        save_every: a.save_every,
        keep_last: a.keep_last,
        log_every: a.log_every,
    };
    let checkpoint = resume.map(load_checkpoint).transpose()?;
    eprintln!("{n} training examples of {} tokens, {max_steps} steps of {per_step}", a.seq_len);
    let eval_before = eval.map(|e| ptm::train::evaluate(e, a.batch_size)).transpose()?;
    let losses = train(objective, spec, &args, checkpoint, on_log)?;
    progress.finish();
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        eprintln!("training loss {first:.4} -> {last:.4} over {} steps; model saved to {}", losses.len(), a.output.display());
    }
    if let Some(e) = eval {
        let after = ptm::train::evaluate(e, a.batch_size)?;
        let record = serde_json::json!({ "step": max_steps, "eval_loss": after, "eval_loss_before": eval_before });
        append_line(&a.output.join(ptm::train::TRAIN_LOG), &record.to_string())?;
        eprintln!("held-out loss {:.4} -> {after:.4}", eval_before.unwrap_or(f64::NAN));
    }
    Ok(())
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// Documents as token ids (no special tokens), with skipped lines reported.
fn read_docs(files: &[PathBuf], tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    let mut texts = Vec::new();
    let report = read_corpus(files, |d| {
        texts.push(d);
        Ok(())
    })?;
    for (file, line) in &report.skipped_lines {
        eprintln!("skipped {}:{line}: not valid UTF-8", file.display());
    }
    if !report.skipped_lines.is_empty() {
        eprintln!("{} lines skipped", report.skipped_lines.len());
    }
    anyhow::ensure!(!texts.is_empty(), "the corpus {} has no text", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(tokenizer.encode_plain(&refs)?)
}

/// Blocks for MLM: the documents' ids concatenated, cut into seq_len - 2 and wrapped in
/// [CLS] ... [SEP].
fn mlm_blocks(docs: &[Vec<u32>], tokenizer: &Tokenizer, seq_len: usize) -> Result<Vec<Vec<u32>>> {
    let cls = tokenizer.special_id(|s| &s.cls).context("the tokenizer has no [CLS] token")?;
    let sep = tokenizer.special_id(|s| &s.sep).context("the tokenizer has no [SEP] token")?;
    anyhow::ensure!(seq_len > 2, "--seq-len must leave room for [CLS] and [SEP]");
    Ok(group_texts(docs, seq_len - 2)
        .into_iter()
        .map(|b| std::iter::once(cls).chain(b).chain(std::iter::once(sep)).collect())
        .collect())
}

fn special_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    [
        tokenizer.special_id(|s| &s.cls),
        tokenizer.special_id(|s| &s.sep),
        tokenizer.special_id(|s| &s.pad),
        tokenizer.special_id(|s| &s.mask),
        tokenizer.special_id(|s| &s.unk),
    ]
    .into_iter()
    .flatten()
    .collect()
}
