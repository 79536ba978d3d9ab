//! The training loop: seeded data order, gradient accumulation, clipping, AdamW with a
//! schedule, logging, checkpoints, and resumption that continues exactly where a run stopped.
//! What is trained and on what comes in through [`Objective`]; the loop knows neither.

use std::path::PathBuf;

use candle_core::Tensor;
use candle_core::backprop::GradStore;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use std::collections::BTreeMap;

use super::checkpoint::{BestSoFar, Checkpoint, TrainerState, save_checkpoint};
use super::distributed::{Collective, all_reduce_bucketed, all_reduce_stats, gather_batches};
use super::optim::scale_grads;
use super::{AdamW, AdamWConfig, Schedule, clip_grad_norm};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::{DropoutRng, Mode, ParamStore};
use crate::tokenizer::Tokenizer;

/// A training objective over a fixed, indexed set of examples.
pub trait Objective {
    fn num_examples(&self) -> usize;
    /// The mean loss over the targets of these examples, how many targets it averages and how
    /// many tokens the examples hold. `epoch` and the indices seed any per-example randomness
    /// (e.g. MLM masking).
    fn loss(&self, examples: &[usize], epoch: usize, mode: Mode) -> Result<LossTerms>;
}

/// One batch's loss, with what it is a mean of: the masked or predicted tokens of a language
/// model, the labeled tokens of a tagger, the examples of a classifier.
pub struct LossTerms {
    /// The scalar mean loss, attached to the graph.
    pub loss: Tensor,
    /// The targets the mean is over (0 when the batch has none).
    pub count: usize,
    /// Real tokens in the batch, for throughput.
    pub tokens: usize,
}

/// The knobs of a run.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub output: PathBuf,
    pub max_steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub schedule: Schedule,
    pub optimizer: AdamWConfig,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    /// Checkpoint every this many steps (and at the end); 0: only at the end.
    pub save_every: usize,
    pub keep_last: usize,
    pub log_every: usize,
    /// Evaluate every this many steps (and after the last); 0: only after the last.
    pub eval_every: usize,
    /// Evaluate before the first step too (a baseline for the curve).
    pub eval_at_start: bool,
    /// The processes of a data-parallel run (`None`: this one alone). `batch_size` is per
    /// process: step k trains on the same global batch of size × batch × accumulation examples
    /// whatever the world size, rank r on its slice; rank 0 alone writes files.
    pub world: Option<&'static dyn Collective>,
    /// Keep the model that scores best on a metric (and maybe stop when it no longer improves).
    pub best: Option<BestModel>,
    /// A content hash of the training data as the objective sees it (the tokenized examples'
    /// sources, the tokenizer and the settings that cut them), recorded in checkpoints: a run
    /// resumes only on the same data. `None`: not checked.
    pub data_fingerprint: Option<String>,
}

/// Which evaluation metric picks the model left in the output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct BestModel {
    pub metric: String,
    pub greater_is_better: bool,
    /// Stop after this many evaluations without improvement (early stopping).
    pub patience: Option<usize>,
}

/// Held-out evaluation during training: named metrics such as `eval_loss` or `accuracy`. In a
/// data-parallel run each rank evaluates its share of the batches and the outputs are gathered
/// ([`gather_batches`]), so every rank gets the metrics one process would.
pub trait Evaluator {
    fn evaluate(&self, world: Option<&dyn Collective>) -> Result<BTreeMap<String, f64>>;
}

/// The held-out loss of an objective, as `eval_loss`: the mean over every example (dropout
/// off; per-example randomness drawn for epoch 0), each batch's mean weighing by its examples
/// as transformers' evaluation loop does.
pub struct LossEvaluator<'a> {
    pub objective: &'a dyn Objective,
    pub batch_size: usize,
}

impl Evaluator for LossEvaluator<'_> {
    fn evaluate(&self, world: Option<&dyn Collective>) -> Result<BTreeMap<String, f64>> {
        let n = self.objective.num_examples();
        if n == 0 {
            return Err(Error::invalid("the evaluation data gives no example"));
        }
        let all: Vec<usize> = (0..n).collect();
        let chunks: Vec<&[usize]> = all.chunks(self.batch_size.max(1)).collect();
        let sums = gather_batches(world, chunks.len(), |i| {
            let loss = self.objective.loss(chunks[i], 0, Mode::Eval)?.loss;
            Ok(vec![
                loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?
                    * chunks[i].len() as f64,
            ])
        })?;
        let loss = sums.iter().map(|s| s[0]).sum::<f64>() / n as f64;
        Ok(BTreeMap::from([("eval_loss".to_string(), loss)]))
    }
}

/// What the model being trained is, for saving it.
pub struct ModelSpec<'a> {
    pub config: &'a ModelConfig,
    pub architecture: &'a str,
    pub store: &'a ParamStore,
    pub tokenizer: Option<&'a Tokenizer>,
}

/// One line of `train_log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
}

/// An evaluation line of `train_log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRecord {
    pub step: usize,
    #[serde(flatten)]
    pub metrics: BTreeMap<String, f64>,
}

/// What a call to [`train`] did.
#[derive(Debug, Clone, Default)]
pub struct TrainOutcome {
    /// The loss of every step taken in this call.
    pub losses: Vec<f64>,
    pub evals: Vec<EvalRecord>,
    /// The best evaluation so far when a best model is kept (the output directory holds it).
    pub best: Option<BestSoFar>,
    /// Training stopped early: the metric stopped improving.
    pub stopped_early: bool,
    /// Seconds of the training steps (evaluation and saving left out), and of them the
    /// seconds spent summing gradients and statistics over the ranks.
    pub step_secs: f64,
    pub all_reduce_secs: f64,
    /// Seconds spent evaluating (with a best model kept, saving it too).
    pub eval_secs: f64,
}

pub const TRAIN_LOG: &str = "train_log.jsonl";
/// Where the best model so far is kept, inside the output directory.
pub const BEST_MODEL: &str = "best-model";

/// Runs `args.max_steps` optimizer steps (fewer remain after a resume), evaluating on `eval`
/// as `args.eval_every` says. `on_log` sees every logged step (for a progress bar).
pub fn train(
    objective: &dyn Objective,
    eval: Option<&dyn Evaluator>,
    model: &ModelSpec,
    args: &TrainArgs,
    resume: Option<Checkpoint>,
    on_log: &mut dyn FnMut(&LogRecord),
) -> Result<TrainOutcome> {
    let (rank, world_size) = args.world.map_or((0, 1), |w| (w.rank(), w.size()));
    let per_rank = args.batch_size * args.grad_accum.max(1);
    let per_step = per_rank * world_size;
    let n = objective.num_examples();
    if args.batch_size == 0 || per_step > n {
        return Err(Error::invalid(format!(
            "{n} examples cannot fill one step of {per_step} (batch size {} x accumulation {} x {world_size} processes)",
            args.batch_size,
            args.grad_accum.max(1)
        )));
    }
    let writer = rank == 0;
    let params = model.store.params();
    let mut opt = AdamW::new(params.clone(), args.optimizer)?;
    let (mut step, mut epoch, mut position, dropout, best) = match &resume {
        Some(ck) => {
            check_resumable(&ck.state, &ck.dir, n, args)?;
            if ck.state.global_step >= args.max_steps {
                return Err(Error::invalid(format!(
                    "{}: that run finished ({} of {} steps done); nothing to resume (a larger \
                     --max-steps trains it further)",
                    ck.dir.display(),
                    ck.state.global_step,
                    args.max_steps
                )));
            }
            opt.load_state(&ck.optimizer, ck.state.global_step)?;
            let s = &ck.state;
            (
                s.global_step,
                s.epoch,
                s.epoch_position,
                DropoutRng::from_state(&s.dropout_rng)?,
                s.best.clone(),
            )
        }
        None => (0, 0, 0, DropoutRng::new(args.seed), None),
    };
    crate::io::create_dir_all(&args.output)?;
    let log_path = args.output.join(TRAIN_LOG);
    if resume.is_some() {
        // Records a killed run wrote after its last checkpoint are replayed now; drop them.
        if writer {
            truncate_log(&log_path, step)?;
        }
    }
    let mut order = epoch_order(n, args.seed, epoch);
    // Named when a run stops on a non-finite loss: what is left to resume from.
    let mut last_checkpoint = resume.as_ref().map(|ck| ck.dir.clone());
    let mut outcome = TrainOutcome {
        best,
        ..Default::default()
    };
    let best_dir = args.output.join(BEST_MODEL);
    // Evaluates, keeps the best model, and returns the seconds it took, which are left out of
    // the tokens/s of training.
    let run_eval = |step: usize, outcome: &mut TrainOutcome| -> Result<f64> {
        let started = std::time::Instant::now();
        let Some(e) = eval else { return Ok(0.0) };
        // The ranks share the evaluation and all get its metrics; rank 0 writes.
        let record = EvalRecord {
            step,
            metrics: e.evaluate(args.world)?,
        };
        if writer {
            append_log(&log_path, &record)?;
        }
        if let Some(b) = &args.best {
            let value = *record.metrics.get(&b.metric).ok_or_else(|| {
                let names: Vec<&String> = record.metrics.keys().collect();
                Error::invalid(format!(
                    "the metric {:?} is not among the evaluation's {names:?}",
                    b.metric
                ))
            })?;
            let improved = outcome.best.as_ref().is_none_or(|old| {
                if b.greater_is_better {
                    value > old.value
                } else {
                    value < old.value
                }
            });
            if improved && writer {
                crate::io::write_dir_atomically(&best_dir, |tmp| {
                    crate::models::save_pretrained(
                        tmp,
                        model.config,
                        model.architecture,
                        model.store,
                        model.tokenizer,
                    )
                })?;
            }
            if improved {
                outcome.best = Some(BestSoFar {
                    metric: b.metric.clone(),
                    value,
                    step,
                    evals_since: 0,
                });
            } else if let Some(old) = &mut outcome.best {
                old.evals_since += 1;
                outcome.stopped_early = b.patience.is_some_and(|p| old.evals_since >= p);
            }
        }
        outcome.evals.push(record);
        let secs = started.elapsed().as_secs_f64();
        outcome.eval_secs += secs;
        Ok(secs)
    };
    if resume.is_none() && args.eval_at_start {
        run_eval(0, &mut outcome)?;
    }
    let mut eval_secs = 0f64;
    let started = std::time::Instant::now();
    let mut tokens_since_log = 0usize;
    let mut last_log = started;
    while step < args.max_steps {
        // Examples that do not fill a whole step end the epoch (as drop_last does).
        if position + per_step > n {
            epoch += 1;
            position = 0;
            order = epoch_order(n, args.seed, epoch);
        }
        // Accumulated micro-batches (and ranks) weigh by their targets, so the step's loss is
        // the mean over all its targets, as one batch of them all would give (transformers'
        // num_items_in_batch): each backward takes the sum of its targets' losses, and the sum
        // of gradients is divided by the step's target count. One micro-batch needs neither.
        let accumulating = args.grad_accum.max(1) > 1 || world_size > 1;
        let step_started = std::time::Instant::now();
        let mut grads: Option<GradStore> = None;
        let (mut loss_sum, mut targets, mut step_tokens) = (0f64, 0usize, 0usize);
        let mine = position + rank * per_rank;
        for micro in order[mine..mine + per_rank].chunks(args.batch_size) {
            let LossTerms {
                loss,
                count,
                tokens,
            } = objective.loss(micro, epoch, Mode::Train(&dropout))?;
            let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(Error::invalid(format!(
                    "the loss is {value} at step {}; stopping ({})",
                    step + 1,
                    intact(&last_checkpoint)
                )));
            }
            loss_sum += value * count as f64;
            targets += count;
            step_tokens += tokens;
            let g = if accumulating {
                (loss * count as f64)?.backward()?
            } else {
                loss.backward()?
            };
            grads = Some(match grads {
                None => g,
                Some(acc) => add_grads(acc, g, &params)?,
            });
        }
        position += per_step;
        let mut grads = grads.ok_or_else(|| Error::internal("a step with no batch"))?;
        if world_size > 1 {
            let reduce_started = std::time::Instant::now();
            // Every rank's targets weigh the step and its tokens count in the throughput.
            let mut stats = [loss_sum, targets as f64, step_tokens as f64];
            all_reduce_stats(args.world, &mut stats)?;
            (loss_sum, targets, step_tokens) = (stats[0], stats[1] as usize, stats[2] as usize);
            all_reduce_grads(args.world, &mut grads, &params)?;
            outcome.all_reduce_secs += reduce_started.elapsed().as_secs_f64();
        }
        tokens_since_log += step_tokens;
        if accumulating && targets > 0 {
            scale_grads(&mut grads, &params, 1.0 / targets as f64)?;
        }
        let grad_norm = match args.max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, &params, max)?,
            None => clip_grad_norm(&mut grads, &params, f64::INFINITY)?,
        };
        // Checked after the all-reduce, so every rank stops here together, before a bad step
        // reaches the parameters (and a checkpoint).
        if !grad_norm.is_finite() {
            return Err(Error::invalid(format!(
                "the gradient norm is {grad_norm} at step {}; stopping ({})",
                step + 1,
                intact(&last_checkpoint)
            )));
        }
        let lr = args.schedule.lr(step);
        opt.step(&grads, lr)?;
        outcome.step_secs += step_started.elapsed().as_secs_f64();
        step += 1;
        let loss = if targets > 0 {
            loss_sum / targets as f64
        } else {
            0.0
        };
        outcome.losses.push(loss);

        if args.log_every > 0 && (step % args.log_every == 0 || step == args.max_steps) {
            let now = std::time::Instant::now();
            let secs = (now.duration_since(last_log).as_secs_f64() - eval_secs).max(1e-9);
            eval_secs = 0.0;
            let record = LogRecord {
                step,
                epoch,
                loss,
                lr,
                grad_norm,
                tokens_per_s: tokens_since_log as f64 / secs,
            };
            if writer {
                append_log(&log_path, &record)?;
                on_log(&record);
            }
            tokens_since_log = 0;
            last_log = now;
        }
        if (args.eval_every > 0 && step % args.eval_every == 0) || step == args.max_steps {
            eval_secs += run_eval(step, &mut outcome)?;
        }
        let last = step == args.max_steps || outcome.stopped_early;
        if writer && ((args.save_every > 0 && step % args.save_every == 0) || last) {
            let state = TrainerState {
                global_step: step,
                epoch,
                epoch_position: position,
                seed: args.seed,
                dropout_rng: dropout.state(),
                schedule: args.schedule,
                optimizer: args.optimizer,
                num_examples: n,
                batch_size: args.batch_size,
                grad_accum: args.grad_accum.max(1),
                world_size,
                best: outcome.best.clone(),
                data_fingerprint: args.data_fingerprint.clone(),
                max_grad_norm: args.max_grad_norm,
            };
            last_checkpoint = Some(save_checkpoint(
                &args.output,
                model.config,
                model.architecture,
                model.store,
                model.tokenizer,
                &opt,
                &state,
                args.keep_last,
            )?);
        }
        if outcome.stopped_early {
            break;
        }
    }
    // The final model (the best one when kept) and its tokenizer in the output directory
    // itself, as from_pretrained reads it.
    if !writer {
        return Ok(outcome);
    }
    if outcome.best.is_some() && best_dir.is_dir() {
        copy_files(&best_dir, &args.output)?;
    } else {
        crate::models::save_pretrained(
            &args.output,
            model.config,
            model.architecture,
            model.store,
            model.tokenizer,
        )?;
    }
    Ok(outcome)
}

/// What a stopped run leaves to resume from.
fn intact(last_checkpoint: &Option<PathBuf>) -> String {
    match last_checkpoint {
        Some(dir) => format!("the last checkpoint, {}, is intact", dir.display()),
        None => "no checkpoint was saved yet".to_string(),
    }
}

/// The files of `from` (not folders) copied into `to`, each atomically.
fn copy_files(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            crate::io::write_atomic(&to.join(path.file_name().unwrap_or_default()), &bytes)?;
        }
    }
    Ok(())
}

/// The example order of an epoch: a permutation drawn from the seed and the epoch alone.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    order
}

/// A resumed run continues the interrupted one only over the same examples in the same order.
fn check_resumable(
    state: &TrainerState,
    dir: &std::path::Path,
    n: usize,
    args: &TrainArgs,
) -> Result<()> {
    let mut differ = Vec::new();
    let mut check = |what: &str, was: usize, now: usize| {
        if was != 0 && was != now {
            differ.push(format!("{what} {was} (now {now})"));
        }
    };
    check("examples", state.num_examples, n);
    check("batch size", state.batch_size, args.batch_size);
    check(
        "gradient accumulation",
        state.grad_accum,
        args.grad_accum.max(1),
    );
    let world_size = args.world.map_or(1, |w| w.size());
    if state.world_size != world_size {
        // The batch per process stays; the global batch, and so the grouping of the examples
        // still to come, changes. The examples keep their order.
        tracing::warn!(
            "{}: resuming a run of {} processes with {world_size}: from step {} each step takes {} examples instead of {}",
            dir.display(),
            state.world_size,
            state.global_step + 1,
            args.batch_size * args.grad_accum.max(1) * world_size,
            args.batch_size * args.grad_accum.max(1) * state.world_size
        );
    }
    if state.seed != args.seed {
        differ.push(format!("seed {} (now {})", state.seed, args.seed));
    }
    if let (Some(was), Some(now)) = (&state.data_fingerprint, &args.data_fingerprint)
        && was != now
    {
        differ.push(format!(
            "other training data (content hash {}, now {})",
            short(was),
            short(now)
        ));
    }
    let (was, now) = (&state.schedule, &args.schedule);
    if was.kind != now.kind {
        differ.push(format!("schedule {:?} (now {:?})", was.kind, now.kind));
    }
    let mut float = |what: &str, was: f64, now: f64| {
        // Exact: both come from the same decimal flag through the same parse.
        if was != now {
            differ.push(format!("{what} {was} (now {now})"));
        }
    };
    float("learning rate", was.base_lr, now.base_lr);
    float(
        "weight decay",
        state.optimizer.weight_decay,
        args.optimizer.weight_decay,
    );
    float("adam beta1", state.optimizer.beta1, args.optimizer.beta1);
    float("adam beta2", state.optimizer.beta2, args.optimizer.beta2);
    float("adam epsilon", state.optimizer.eps, args.optimizer.eps);
    if let Some(was) = state.max_grad_norm {
        float(
            "max grad norm",
            was,
            args.max_grad_norm.unwrap_or(f64::INFINITY),
        );
    }
    // A warm-up given as a ratio scales with a changed length; that change is warned below.
    if was.total_steps == now.total_steps && was.warmup_steps != now.warmup_steps {
        differ.push(format!(
            "warmup steps {} (now {})",
            was.warmup_steps, now.warmup_steps
        ));
    }
    if differ.is_empty() {
        if was.total_steps != now.total_steps {
            // A longer (or shorter) run: the decay stretches from the resumed step on.
            tracing::warn!(
                "{}: the run was planned for {} steps, now {}: the learning-rate schedule changes from step {}",
                dir.display(),
                was.total_steps,
                now.total_steps,
                state.global_step + 1
            );
        }
        return Ok(());
    }
    Err(Error::invalid(format!(
        "cannot resume from {}: it was trained with {}; resume with the same data and settings",
        dir.display(),
        differ.join(", ")
    )))
}

/// The first 12 hex digits of a hash, enough to tell two apart in a message.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Sums every parameter's gradient over the ranks, flattened into one f32 buffer (a parameter
/// without a gradient on this rank contributes zeros).
fn all_reduce_grads(
    world: Option<&dyn Collective>,
    grads: &mut GradStore,
    params: &[crate::nn::Param],
) -> Result<()> {
    let mut flat = Vec::new();
    let mut shapes = Vec::new();
    for p in params {
        let Some(var) = &p.var else { continue };
        let t = var.as_tensor();
        let g = match grads.get(t) {
            Some(g) => g
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            None => vec![0f32; t.elem_count()],
        };
        shapes.push((t.clone(), g.len()));
        flat.extend(g);
    }
    all_reduce_bucketed(world, &mut flat)?;
    let mut at = 0;
    for (t, len) in shapes {
        let g =
            Tensor::from_slice(&flat[at..at + len], t.shape(), t.device())?.to_dtype(t.dtype())?;
        grads.insert(&t, g);
        at += len;
    }
    Ok(())
}

fn add_grads(
    mut acc: GradStore,
    more: GradStore,
    params: &[crate::nn::Param],
) -> Result<GradStore> {
    for p in params {
        let Some(var) = &p.var else { continue };
        let t = var.as_tensor();
        if let Some(g) = more.get(t) {
            let sum = match acc.get(t) {
                Some(a) => (a + g)?,
                None => g.clone(),
            };
            acc.insert(t, sum);
        }
    }
    Ok(acc)
}

fn truncate_log(path: &std::path::Path, step: usize) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text = crate::io::read_to_string(path)?;
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::io::write_atomic(path, kept.as_bytes())
}

fn append_log(path: &std::path::Path, record: &impl Serialize) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let line = serde_json::to_string(record).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        cause: source,
    })?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}
