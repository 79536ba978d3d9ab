//! The trainer's options, shared by `ptm pretrain` and `ptm finetune`, and the run around
//! the library's loop: progress bar, summary, resume.

use std::cell::Cell;
use std::path::PathBuf;

use anyhow::{Result, bail};
use ptm::train::checkpoint::{load_checkpoint, resolve_resume};
use ptm::train::distributed::Collective;
use ptm::train::output_dir::{OutputLock, Reuse, claim};
use ptm::train::{
    AdamWConfig, BestModel, Evaluator, ModelSpec, Objective, Schedule, ScheduleKind, TrainArgs,
    TrainOutcome, train,
};

#[derive(clap::Args, Debug, Clone)]
pub struct TrainOptions {
    /// Where the model, checkpoints and train_log.jsonl go.
    #[arg(long)]
    pub output: PathBuf,
    /// Optimizer steps (instead of --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per step, before accumulation.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate (default 5e-4 for pretrain, 5e-5 for finetune).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Warm-up as a share of all steps (instead of --warmup-steps).
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// linear, cosine or constant (each with warmup).
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Checkpoint every N steps (always at the end).
    #[arg(long, default_value_t = 500)]
    pub save_every: usize,
    #[arg(long, default_value_t = 2)]
    pub keep_last: usize,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Evaluate every N steps (default: pretrain only at the start and end, finetune every epoch).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Examples per evaluation batch, per process (default: the batch size for pretrain, twice
    /// it for finetune). The evaluation batches are shared among the processes of a
    /// data-parallel run, so the same value gives the same metrics whatever their number.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Resume from a checkpoint directory or an output directory's latest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start over in an --output that holds another run: its checkpoints, log and model are
    /// removed first (without this, such a directory is refused).
    #[arg(long)]
    pub overwrite_output_dir: bool,
    /// A JSON file of these options (keys as the option names, e.g. "batch_size": 32);
    /// options on the command line win.
    #[arg(long, value_name = "FILE.json")]
    pub train_config: Option<PathBuf>,
    /// f32, or bf16: mixed precision (f32 master weights and optimizer state; each linear
    /// layer multiplies its bf16-rounded input and weight, accumulating in f32).
    #[arg(long = "dtype", default_value = "f32")]
    pub dtype: ptm::nn::Precision,
}

/// Whether a checkpoint's folder is `output` (compared as the file system resolves them).
fn same_dir(parent: Option<&std::path::Path>, output: &std::path::Path) -> bool {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    parent.is_some_and(|p| canonical(p).is_some() && canonical(p) == canonical(output))
}

thread_local! {
    /// The processes of a data-parallel run (`mpirun`), set once by main; `None`: this one.
    static WORLD: Cell<Option<&'static dyn Collective>> = const { Cell::new(None) };
}

pub fn set_world(world: Option<&'static dyn Collective>) {
    WORLD.with(|w| w.set(world));
}

pub fn world() -> Option<&'static dyn Collective> {
    WORLD.with(Cell::get)
}

/// Whether this process speaks for the run (rank 0, or the only one).
pub fn is_lead() -> bool {
    world().is_none_or(|w| w.rank() == 0)
}

/// Runs `f` on rank 0 first and on the other ranks after it (e.g. building a cache they then
/// reuse); every rank waits for rank 0 to finish.
pub fn lead_first<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(w) = world() else { return f() };
    let barrier = || w.all_reduce_sum_f64(&mut [0.0]);
    if w.rank() == 0 {
        let out = f()?;
        barrier()?;
        Ok(out)
    } else {
        barrier()?;
        f()
    }
}

/// How a command's defaults differ.
pub struct Defaults {
    pub lr: f64,
    pub epochs: usize,
    /// Evaluate every epoch (else only at the start and the end).
    pub eval_each_epoch: bool,
    pub eval_at_start: bool,
}

impl TrainOptions {
    /// `--eval-batch-size`, else `times` the batch size.
    pub fn eval_batch_size(&self, times: usize) -> usize {
        self.eval_batch_size.unwrap_or(self.batch_size * times)
    }

    pub fn resume_dir(&self) -> Result<Option<PathBuf>> {
        Ok(self.resume.as_deref().map(resolve_resume).transpose()?)
    }

    /// Checks the options, then takes the output directory for this run (rank 0 of a
    /// data-parallel run; the others write nothing): call before anything is written there.
    pub fn claim_output(&self) -> Result<Option<OutputLock>> {
        self.validate()?;
        if !is_lead() {
            return Ok(None);
        }
        let continuing = match self.resume_dir()? {
            Some(checkpoint) => same_dir(checkpoint.parent(), &self.output),
            None => false,
        };
        let reuse = match (continuing, self.overwrite_output_dir) {
            (true, true) => bail!(
                "--overwrite-output-dir would remove the checkpoint that --resume continues from"
            ),
            (true, false) => Reuse::Continue,
            (false, true) => Reuse::Overwrite,
            (false, false) => Reuse::Refuse,
        };
        Ok(Some(claim(&self.output, reuse)?))
    }

    /// Values no training run can use are refused before anything starts.
    fn validate(&self) -> Result<()> {
        let positive = [
            ("--lr", self.lr),
            ("--max-grad-norm", Some(self.max_grad_norm)),
        ];
        for (flag, v) in positive {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                bail!("{flag} {v} must be a positive, finite number");
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "--weight-decay {} must be a finite number of at least 0",
                self.weight_decay
            );
        }
        if let Some(r) = self.warmup_ratio.filter(|r| !(0.0..=1.0).contains(r)) {
            bail!("--warmup-ratio {r} is not between 0 and 1");
        }
        for (flag, v) in [
            ("--batch-size", Some(self.batch_size)),
            ("--grad-accum", Some(self.grad_accum)),
            ("--eval-batch-size", self.eval_batch_size),
            ("--keep-last", Some(self.keep_last)),
        ] {
            if v == Some(0) {
                bail!("{flag} must be at least 1");
            }
        }
        Ok(())
    }

    fn train_args(
        &self,
        num_examples: usize,
        defaults: &Defaults,
        best: Option<BestModel>,
        data_fingerprint: String,
    ) -> Result<TrainArgs> {
        // Examples per optimizer step, over all the processes of a data-parallel run.
        let per_step = self
            .batch_size
            .checked_mul(self.grad_accum.max(1))
            .and_then(|b| b.checked_mul(world().map_or(1, |w| w.size())));
        let Some(per_step) = per_step else {
            bail!("--batch-size x --grad-accum x processes overflows");
        };
        let steps_per_epoch = (num_examples / per_step.max(1)).max(1);
        let max_steps = match (self.max_steps, self.epochs) {
            (Some(s), _) => s,
            (None, e) => {
                let epochs = e.unwrap_or(defaults.epochs);
                let Some(steps) = epochs.checked_mul(steps_per_epoch) else {
                    bail!("--epochs {epochs} x {steps_per_epoch} steps per epoch overflows");
                };
                steps
            }
        };
        let kind = match self.schedule.as_str() {
            "linear" => ScheduleKind::Linear,
            "cosine" => ScheduleKind::Cosine,
            "constant" => ScheduleKind::ConstantWithWarmup,
            other => bail!("unknown --schedule {other:?}; supported: linear, cosine, constant"),
        };
        let warmup_steps = match self.warmup_ratio {
            Some(r) => (r * max_steps as f64).ceil() as usize,
            None => self.warmup_steps,
        };
        let lr = self.lr.unwrap_or(defaults.lr);
        Ok(TrainArgs {
            output: self.output.clone(),
            max_steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            schedule: Schedule {
                kind,
                base_lr: lr,
                warmup_steps,
                total_steps: max_steps,
            },
            optimizer: AdamWConfig {
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            max_grad_norm: Some(self.max_grad_norm),
            seed: self.seed,
            save_every: self.save_every,
            keep_last: self.keep_last,
            log_every: self.log_every,
            eval_every: self.eval_every.unwrap_or(if defaults.eval_each_epoch {
                steps_per_epoch
            } else {
                0
            }),
            eval_at_start: defaults.eval_at_start,
            best,
            world: world(),
            data_fingerprint: Some(data_fingerprint),
        })
    }

    /// Trains with a progress bar and prints a summary. `data_fingerprint` identifies the
    /// training data (see `TrainArgs`), so a resume on other data is refused.
    pub fn run(
        &self,
        objective: &dyn Objective,
        eval: Option<&dyn Evaluator>,
        spec: &ModelSpec,
        defaults: &Defaults,
        best: Option<BestModel>,
        data_fingerprint: String,
    ) -> Result<TrainOutcome> {
        let n = objective.num_examples();
        let args = self.train_args(n, defaults, best, data_fingerprint)?;
        let checkpoint = self
            .resume_dir()?
            .as_deref()
            .map(load_checkpoint)
            .transpose()?;
        let lead = is_lead();
        let progress = if lead {
            indicatif::ProgressBar::new(args.max_steps as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        progress.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps, {msg} [{elapsed} < {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut on_log = |r: &ptm::train::LogRecord| {
            progress.set_position(r.step as u64);
            progress.set_message(format!(
                "loss {:.4}, lr {:.2e}, {:.0} tokens/s",
                r.loss, r.lr, r.tokens_per_s
            ));
        };
        let ranks = args.world.map_or(1, |w| w.size());
        if lead {
            let per_rank = args.batch_size * args.grad_accum.max(1);
            match ranks {
                1 => eprintln!(
                    "{n} training examples, {} steps of {per_rank}",
                    args.max_steps
                ),
                r => eprintln!(
                    "{n} training examples, {} steps of {} ({r} processes x {per_rank})",
                    args.max_steps,
                    per_rank * r
                ),
            }
        }
        let outcome = train(objective, eval, spec, &args, checkpoint, &mut on_log)?;
        progress.finish();
        if !lead {
            return Ok(outcome);
        }
        if ranks > 1 {
            eprintln!(
                "all-reduce: {:.1} of {:.1} s of training steps ({:.1}%) on rank 0",
                outcome.all_reduce_secs,
                outcome.step_secs,
                100.0 * outcome.all_reduce_secs / outcome.step_secs.max(1e-9)
            );
        }
        if !outcome.evals.is_empty() {
            let shared = if ranks > 1 {
                format!(", shared by {ranks} processes")
            } else {
                String::new()
            };
            eprintln!(
                "evaluation: {} runs in {:.1} s{shared}",
                outcome.evals.len(),
                outcome.eval_secs
            );
        }
        if let (Some(first), Some(last)) = (outcome.losses.first(), outcome.losses.last()) {
            eprintln!(
                "training loss {first:.4} -> {last:.4} over {} steps; model saved to {}",
                outcome.losses.len(),
                self.output.display()
            );
        }
        if outcome.stopped_early {
            eprintln!(
                "stopped early: no improvement in {} evaluations",
                args.best.as_ref().and_then(|b| b.patience).unwrap_or(0)
            );
        }
        if let Some(b) = &outcome.best {
            eprintln!(
                "best {} {:.4} at step {} (the model in {})",
                b.metric,
                b.value,
                b.step,
                self.output.display()
            );
        }
        Ok(outcome)
    }
}
