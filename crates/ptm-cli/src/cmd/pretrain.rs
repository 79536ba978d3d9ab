//! `ptm pretrain`: learn a language model from raw text (masked LM for BERT, causal LM for
//! GPT-2), from a config and a tokenizer, from an existing checkpoint (continued pretraining),
//! or resuming a run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ptm::config::ModelConfig;
use ptm::data::fingerprint::sha256_of;
use ptm::data::{Blocks, TokenizedCorpus};
use ptm::models::{Pretrained, auto};
use ptm::nn::{ParamStore, StoreOptions};
use ptm::objectives::PretrainingObjective;
use ptm::objectives::clm::CausalLmObjective;
use ptm::objectives::mlm::{MaskedLmObjective, MlmCollator, MlmConfig};
use ptm::objectives::nsp::{PreTrainingObjective, nsp_pairs};
use ptm::objectives::plm::{PermutationLmObjective, PlmConfig};
use ptm::tokenizer::Tokenizer;
use ptm::train::{Evaluator, LossEvaluator, ModelSpec, Objective};

use super::train_options::{Defaults, TrainOptions, is_lead, lead_first};
use crate::input::{LineLimitArg, with_line_hint};

/// Pretrain a model on unlabeled text.
#[derive(clap::Args)]
pub struct Args {
    /// mlm or mlm+nsp (BERT: masked LM, with next-sentence prediction), clm (GPT-2), plm
    /// (XLNet: permutation LM).
    #[arg(long, default_value = "mlm")]
    objective: String,
    /// A config.json for a model trained from scratch (with --tokenizer); with --resume, checked
    /// against the checkpoint's.
    #[arg(long, conflicts_with = "init_from")]
    config: Option<PathBuf>,
    /// The tokenizer's directory (with --config).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Continue pretraining this model directory (its tokenizer too).
    #[arg(long)]
    init_from: Option<String>,
    /// Text files or folders, or JSONL with "text".
    #[arg(long = "train", num_args = 1.., required = true)]
    train_files: Vec<PathBuf>,
    /// Held-out text whose loss is logged before, during and after training.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Where the tokenized corpus is kept (default OUTPUT/tokenized); reused while the text
    /// files and the tokenizer are unchanged.
    #[arg(long)]
    data_cache: Option<PathBuf>,
    /// Tokens per example.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[command(flatten)]
    line_limit: LineLimitArg,
    #[command(flatten)]
    train: TrainOptions,
}

pub fn run(a: Args) -> Result<()> {
    // Held until the run ends: no other run writes here meanwhile.
    let _output = a.train.claim_output()?;
    let resume_dir = a.train.resume_dir()?;
    // Where weights, config and tokenizer come from.
    let (config, tokenizer, weights_dir): (ModelConfig, Tokenizer, Option<PathBuf>) =
        match (&resume_dir, &a.init_from, &a.config) {
            (Some(dir), _, given) => {
                let p = Pretrained::from_dir(dir)?;
                if let Some(file) = given {
                    same_model(&p.config, &ModelConfig::from_file(file)?, dir, file)?;
                }
                (p.config.clone(), p.tokenizer()?, Some(dir.clone()))
            }
            (None, Some(spec), _) => {
                let p = Pretrained::open(spec)?;
                (p.config.clone(), p.tokenizer()?, Some(p.dir.clone()))
            }
            (None, None, Some(cfg)) => {
                let tok_dir = a
                    .tokenizer
                    .as_deref()
                    .context("--config needs --tokenizer DIR")?;
                (
                    ModelConfig::from_file(cfg)?,
                    Tokenizer::from_dir(tok_dir)?,
                    None,
                )
            }
            (None, None, None) => {
                bail!("give --config CONFIG.json --tokenizer DIR, --init-from DIR or --resume DIR")
            }
        };
    ptm::limits::check_training(&config, a.train.batch_size, a.seq_len)?;
    let dims = config.dims();
    tokenizer.check_fits(dims.vocab_size)?;
    if a.seq_len > dims.max_positions {
        bail!(
            "--seq-len {} exceeds the model's {} positions",
            a.seq_len,
            dims.max_positions
        );
    }
    let objective_name = a.objective.as_str();
    let objective_kind = PretrainingObjective::parse(objective_name)?;
    auto::check_objective(&config, objective_kind)?;
    let store_opts = StoreOptions {
        trainable: true,
        seed: a.train.seed,
        precision: a.train.dtype,
        ..Default::default()
    };
    let store = match &weights_dir {
        Some(dir) => Pretrained {
            dir: dir.clone(),
            config: config.clone(),
        }
        .store(&store_opts)?,
        None => ParamStore::new(
            None,
            &[auto::family(&config)?.base_model_prefix()],
            &store_opts,
        ),
    };

    let cache = a
        .data_cache
        .clone()
        .unwrap_or_else(|| a.train.output.join("tokenized"));
    // Rank 0 tokenizes; the other ranks of a data-parallel run then read its cache.
    let train_corpus = lead_first(|| {
        tokenized(
            &a.train_files,
            &tokenizer,
            &cache.join("train"),
            a.line_limit,
        )
    })?;
    let eval_corpus = a
        .eval
        .as_ref()
        .map(|f| {
            lead_first(|| {
                tokenized(
                    std::slice::from_ref(f),
                    &tokenizer,
                    &cache.join("eval"),
                    a.line_limit,
                )
            })
        })
        .transpose()?;
    // The examples are the corpus's ids cut by the objective into --seq-len pieces.
    let fingerprint = sha256_of(&[
        train_corpus.fingerprint().as_bytes(),
        objective_name.as_bytes(),
        &a.seq_len.to_le_bytes(),
    ]);
    let run = |objective: &dyn Objective,
               eval: Option<&dyn Objective>,
               architecture: &str|
     -> Result<()> {
        let spec = ModelSpec {
            config: &config,
            architecture,
            store: &store,
            tokenizer: Some(&tokenizer),
        };
        let eval = eval.map(|objective| LossEvaluator {
            objective,
            batch_size: a.train.eval_batch_size(1),
        });
        let defaults = Defaults {
            lr: 5e-4,
            epochs: 1,
            eval_each_epoch: false,
            eval_at_start: true,
        };
        let outcome = a.train.run(
            objective,
            eval.as_ref().map(|e| e as &dyn Evaluator),
            &spec,
            &defaults,
            None,
            fingerprint.clone(),
        )?;
        if let (true, Some(first), Some(last)) =
            (is_lead(), outcome.evals.first(), outcome.evals.last())
        {
            let loss = |r: &ptm::train::EvalRecord| {
                r.metrics.get("eval_loss").copied().unwrap_or(f64::NAN)
            };
            eprintln!(
                "held-out loss {:.4} (step {}) -> {:.4} (step {})",
                loss(first),
                first.step,
                loss(last),
                last.step
            );
        }
        Ok(())
    };

    let root = store.root();
    match objective_kind {
        PretrainingObjective::Mlm | PretrainingObjective::MlmNsp => {
            let mask = tokenizer
                .special_id(|s| &s.mask)
                .context("the tokenizer has no mask token")?;
            let cls = tokenizer
                .special_id(|s| &s.cls)
                .context("the tokenizer has no [CLS] token")?;
            let sep = tokenizer
                .special_id(|s| &s.sep)
                .context("the tokenizer has no [SEP] token")?;
            let collator = MlmCollator {
                config: MlmConfig::new(mask, dims.vocab_size as u32),
                special_ids: special_ids(&tokenizer),
                pad_id: tokenizer.pad_id(),
                seed: a.train.seed,
            };
            collator.config.validate()?;
            anyhow::ensure!(
                a.seq_len > 4,
                "--seq-len must leave room for [CLS], [SEP] and text"
            );
            if objective_kind == PretrainingObjective::MlmNsp {
                let types = config.type_vocab_size();
                anyhow::ensure!(
                    types >= 2,
                    "--objective mlm+nsp needs type_vocab_size >= 2 for the sentence pair (the config has {types})"
                );
                let model = auto::pretraining(&config, &root)?;
                let objective = |corpus| -> Result<PreTrainingObjective> {
                    let pairs = nsp_pairs(corpus, a.seq_len, a.train.seed)?;
                    Ok(PreTrainingObjective {
                        model: model.as_ref(),
                        corpus,
                        pairs,
                        collator: collator.clone(),
                        cls_id: cls,
                        sep_id: sep,
                    })
                };
                let train_obj = objective(&train_corpus)?;
                let eval_obj = eval_corpus.as_ref().map(&objective).transpose()?;
                run(
                    &train_obj,
                    eval_obj.as_ref().map(|o| o as &dyn Objective),
                    model.architecture(),
                )
            } else {
                let model = auto::masked_lm(&config, &root)?;
                let train_blocks = Blocks::new(&train_corpus, a.seq_len - 2, Some((cls, sep)))?;
                let eval_blocks = eval_corpus
                    .as_ref()
                    .map(|c| Blocks::new(c, a.seq_len - 2, Some((cls, sep))))
                    .transpose()?;
                let objective = |examples| MaskedLmObjective {
                    model: model.as_ref(),
                    examples,
                    collator: collator.clone(),
                };
                let eval_obj = eval_blocks.as_ref().map(|b| objective(b));
                run(
                    &objective(&train_blocks),
                    eval_obj.as_ref().map(|o| o as &dyn Objective),
                    model.architecture(),
                )
            }
        }
        PretrainingObjective::Clm => {
            let model = auto::causal_lm(&config, &root)?;
            let train_blocks = Blocks::new(&train_corpus, a.seq_len, None)?;
            let eval_blocks = eval_corpus
                .as_ref()
                .map(|c| Blocks::new(c, a.seq_len, None))
                .transpose()?;
            let eval_obj = eval_blocks.as_ref().map(|b| CausalLmObjective {
                model: model.as_ref(),
                blocks: b,
            });
            let objective = CausalLmObjective {
                model: model.as_ref(),
                blocks: &train_blocks,
            };
            run(
                &objective,
                eval_obj.as_ref().map(|o| o as &dyn Objective),
                model.architecture(),
            )
        }
        PretrainingObjective::Plm => {
            let mask = tokenizer
                .special_id(|s| &s.mask)
                .context("the tokenizer has no mask token, which permutation LM needs")?;
            let plm = PlmConfig::new(mask);
            plm.validate(a.seq_len).context("--seq-len")?;
            let model = auto::permutation_lm(&config, &root)?;
            let train_blocks = Blocks::new(&train_corpus, a.seq_len, None)?;
            let eval_blocks = eval_corpus
                .as_ref()
                .map(|c| Blocks::new(c, a.seq_len, None))
                .transpose()?;
            let objective = |blocks| PermutationLmObjective {
                model: model.as_ref(),
                blocks,
                config: plm.clone(),
                special_ids: special_ids(&tokenizer),
                seed: a.train.seed,
            };
            let eval_obj = eval_blocks.as_ref().map(|b| objective(b));
            run(
                &objective(&train_blocks),
                eval_obj.as_ref().map(|o| o as &dyn Objective),
                model.architecture(),
            )
        }
    }
}

/// A checkpoint resumes only as the model it is: a `--config` given with `--resume` must agree
/// with the checkpoint's config, field by field (mem_len, sizes, dropout, ...).
fn same_model(
    checkpoint: &ModelConfig,
    given: &ModelConfig,
    dir: &Path,
    file: &Path,
) -> Result<()> {
    let fields = |c: &ModelConfig| -> Result<serde_json::Map<String, serde_json::Value>> {
        let serde_json::Value::Object(mut m) = c.to_json()? else {
            bail!("a config is not a JSON object")
        };
        m.remove("architectures");
        Ok(m)
    };
    let (a, b) = (fields(checkpoint)?, fields(given)?);
    let differ: Vec<String> = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} in the checkpoint, {} in {}",
                show(a.get(k)),
                show(b.get(k)),
                file.display()
            )
        })
        .collect();
    if !differ.is_empty() {
        bail!(
            "--resume {} is another model than --config describes ({}); resume without --config",
            dir.display(),
            differ.join("; ")
        );
    }
    Ok(())
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "absent".to_string(), serde_json::Value::to_string)
}

/// The corpus tokenized into `dir` (reused when its sources and the tokenizer are unchanged),
/// with skipped lines reported.
fn tokenized(
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    dir: &Path,
    limit: LineLimitArg,
) -> Result<TokenizedCorpus> {
    let started = std::time::Instant::now();
    let corpus = TokenizedCorpus::prepare_with_limit(files, tokenizer, dir, limit.max_line_bytes)
        .map_err(with_line_hint)?;
    if !is_lead() {
        return Ok(corpus);
    }
    if corpus.built {
        for line in corpus.skipped_lines() {
            eprintln!("skipped {line}: not valid UTF-8");
        }
        if !corpus.skipped_lines().is_empty() {
            eprintln!("{} lines skipped", corpus.skipped_lines().len());
        }
    }
    eprintln!(
        "{} documents, {} tokens {} {} ({:.1} s)",
        corpus.num_documents(),
        corpus.num_tokens(),
        if corpus.built {
            "tokenized into"
        } else {
            "reused from"
        },
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(corpus)
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
