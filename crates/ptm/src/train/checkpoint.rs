//! Training checkpoints in the HF Trainer's layout, `OUTPUT/checkpoint-STEP/`: the model as
//! `save_pretrained` writes it (so any checkpoint loads in transformers), plus the optimizer
//! moments and `trainer_state.json` (step, data position, generator states, schedule). A
//! checkpoint is assembled in a hidden temp folder and renamed into place when complete, so a
//! kill at any moment leaves every earlier checkpoint whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{AdamW, AdamWConfig, Schedule};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::{ParamStore, RngState};
use crate::tokenizer::Tokenizer;

pub const TRAINER_STATE: &str = "trainer_state.json";
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Everything besides weights and moments that resuming needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub global_step: usize,
    /// The epoch in progress and how many of its examples were consumed.
    pub epoch: usize,
    pub epoch_position: usize,
    pub seed: u64,
    pub dropout_rng: RngState,
    pub schedule: Schedule,
    pub optimizer: AdamWConfig,
    /// The data the run was stepping through, checked on resume (0: not recorded).
    #[serde(default)]
    pub num_examples: usize,
    #[serde(default)]
    pub batch_size: usize,
    #[serde(default)]
    pub grad_accum: usize,
    /// Processes of the data-parallel run (1 for an ordinary one).
    #[serde(default = "one")]
    pub world_size: usize,
    #[serde(default)]
    pub best: Option<BestSoFar>,
    /// The content hash of the training data (see `TrainArgs::data_fingerprint`; `None`: not
    /// recorded by an older ptm).
    #[serde(default)]
    pub data_fingerprint: Option<String>,
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
}

impl TrainerState {
    /// Values no run of ptm writes are refused before they steer the optimizer (bias
    /// corrections), the data position or the schedule.
    fn check(&self, path: &Path) -> Result<()> {
        let field = |name: &str, why: String| Err(Error::config(path, name, why));
        let n = self.num_examples;
        if n > 0 && self.epoch_position > n {
            return field(
                "epoch_position",
                format!("{} is past the {n} examples", self.epoch_position),
            );
        }
        // Every step consumes at least one example of the epoch it belongs to.
        let most = (self.epoch as u128 + 1) * n.max(1) as u128;
        if n > 0 && self.global_step as u128 > most {
            return field(
                "global_step",
                format!(
                    "{} steps cannot fit in {} epochs of {n} examples",
                    self.global_step,
                    self.epoch + 1
                ),
            );
        }
        if self.epoch > self.global_step {
            return field(
                "epoch",
                format!("{} is past global_step {}", self.epoch, self.global_step),
            );
        }
        if self.world_size == 0 {
            return field("world_size", "must be at least 1".into());
        }
        let s = &self.schedule;
        if !(s.base_lr.is_finite() && s.base_lr >= 0.0) {
            return field(
                "schedule.base_lr",
                format!("{} is not a learning rate", s.base_lr),
            );
        }
        let o = &self.optimizer;
        let finite = [
            ("optimizer.weight_decay", o.weight_decay),
            ("optimizer.eps", o.eps),
            ("optimizer.beta1", o.beta1),
            ("optimizer.beta2", o.beta2),
        ];
        if let Some((name, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return field(name, format!("{v} is not finite"));
        }
        Ok(())
    }
}

fn one() -> usize {
    1
}

/// The best evaluation of a run so far, for keeping the best model across a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSoFar {
    pub metric: String,
    pub value: f64,
    pub step: usize,
    /// Evaluations since the last improvement (for early stopping).
    pub evals_since: usize,
}

/// What a checkpoint holds, besides the model weights (read from its directory as a model).
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub optimizer: HashMap<String, Tensor>,
}

/// Writes `output/checkpoint-STEP` and keeps only the newest `keep_last` checkpoints.
#[allow(clippy::too_many_arguments)]
pub fn save_checkpoint(
    output: &Path,
    config: &ModelConfig,
    architecture: &str,
    store: &ParamStore,
    tokenizer: Option<&Tokenizer>,
    optimizer: &AdamW,
    state: &TrainerState,
    keep_last: usize,
) -> Result<PathBuf> {
    crate::io::create_dir_all(output)?;
    let dir = output.join(format!("{CHECKPOINT_PREFIX}{}", state.global_step));
    crate::io::write_dir_atomically(&dir, |tmp| {
        crate::models::save_pretrained(tmp, config, architecture, store, tokenizer)?;
        crate::checkpoint::save_safetensors(
            &optimizer.state_tensors(),
            &tmp.join(OPTIMIZER_STATE),
        )?;
        let json = serde_json::to_string_pretty(state).map_err(|source| Error::Json {
            path: tmp.join(TRAINER_STATE),
            cause: source,
        })?;
        crate::io::write_atomic(&tmp.join(TRAINER_STATE), json.as_bytes())
    })?;
    for old in checkpoints(output)?
        .into_iter()
        .rev()
        .skip(keep_last.max(1))
    {
        std::fs::remove_dir_all(&old.1).map_err(|e| Error::io(&old.1, e))?;
    }
    Ok(dir)
}

/// Complete checkpoints under `output`, oldest first.
fn checkpoints(output: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output)
        .map_err(|e| Error::io(output, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix(CHECKPOINT_PREFIX)?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// `--resume PATH`: a checkpoint directory, or an output directory meaning its latest one.
pub fn resolve_resume(path: &Path) -> Result<PathBuf> {
    if path.join(TRAINER_STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(Error::ModelNotFound {
            spec: path.display().to_string(),
            message: "no such checkpoint or output directory".into(),
        });
    }
    checkpoints(path)?.pop().map(|(_, p)| p).ok_or_else(|| {
        Error::invalid(format!(
            "{}: no checkpoint-STEP directory to resume from",
            path.display()
        ))
    })
}

/// Reads a checkpoint's trainer state and optimizer moments.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let state: TrainerState = crate::io::read_json(&dir.join(TRAINER_STATE))?;
    state.check(&dir.join(TRAINER_STATE))?;
    crate::nn::DropoutRng::from_state(&state.dropout_rng)
        .map_err(|e| Error::config(dir.join(TRAINER_STATE), "dropout_rng", e.to_string()))?;
    let opt_path = dir.join(OPTIMIZER_STATE);
    let optimizer =
        candle_core::safetensors::load(&opt_path, &Device::Cpu).map_err(|e| Error::BadWeights {
            path: opt_path.clone(),
            message: e.to_string(),
        })?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        optimizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Pretrained;
    use crate::nn::{DropoutRng, StoreOptions};
    use crate::train::ScheduleKind;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bert/tiny-mlm")
    }

    fn state(step: usize) -> TrainerState {
        TrainerState {
            global_step: step,
            epoch: 0,
            epoch_position: step * 4,
            seed: 1,
            dropout_rng: DropoutRng::new(1).state(),
            schedule: Schedule {
                kind: ScheduleKind::Linear,
                base_lr: 1e-3,
                warmup_steps: 1,
                total_steps: 10,
            },
            optimizer: AdamWConfig::default(),
            num_examples: 40,
            batch_size: 2,
            grad_accum: 2,
            world_size: 1,
            best: None,
            data_fingerprint: Some("abc".into()),
            max_grad_norm: Some(1.0),
        }
    }

    #[test]
    fn save_keep_last_and_resume() {
        let p = Pretrained::from_dir(&fixture()).unwrap();
        let store = p
            .store(&StoreOptions {
                trainable: true,
                ..Default::default()
            })
            .unwrap();
        let ModelConfig::Bert(cfg) = &p.config else {
            unreachable!("a BERT fixture")
        };
        crate::models::bert::BertForMaskedLM::new(cfg, &store.root()).unwrap();
        let opt = AdamW::new(store.params(), AdamWConfig::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        for step in [2, 4, 6] {
            save_checkpoint(
                out.path(),
                &p.config,
                "BertForMaskedLM",
                &store,
                None,
                &opt,
                &state(step),
                2,
            )
            .unwrap();
        }
        // A save killed half-way leaves only a hidden temp folder behind.
        std::fs::create_dir(out.path().join(".checkpoint-8.tmp")).unwrap();
        let names: Vec<String> = checkpoints(out.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s.to_string())
            .collect();
        assert_eq!(names, ["4", "6"]);
        let latest = resolve_resume(out.path()).unwrap();
        assert_eq!(latest, out.path().join("checkpoint-6"));
        assert_eq!(resolve_resume(&latest).unwrap(), latest);
        let ck = load_checkpoint(&latest).unwrap();
        assert_eq!(ck.state, state(6));
        assert_eq!(ck.optimizer.len(), 2 * store.params().len());
        // The checkpoint is a model directory too.
        assert!(
            Pretrained::from_dir(&latest)
                .unwrap()
                .store(&StoreOptions::default())
                .is_ok()
        );
    }

    #[test]
    fn resume_errors_are_clear() {
        let out = tempfile::tempdir().unwrap();
        let err = resolve_resume(out.path()).unwrap_err().to_string();
        assert!(err.contains("no checkpoint-STEP"), "{err}");
        let err = resolve_resume(&out.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let broken = out.path().join("checkpoint-3");
        std::fs::create_dir(&broken).unwrap();
        std::fs::write(broken.join(TRAINER_STATE), "{\"global_step\": 3}").unwrap();
        let err = load_checkpoint(&broken).err().unwrap().to_string();
        assert!(err.contains("trainer_state.json"), "{err}");
        // Well-formed but impossible values are refused by field.
        for (field, value, says) in [
            (
                "global_step",
                serde_json::json!(1_000_000_000u64),
                "cannot fit in 1 epochs",
            ),
            (
                "epoch_position",
                serde_json::json!(41),
                "past the 40 examples",
            ),
            ("world_size", serde_json::json!(0), "at least 1"),
        ] {
            let mut v = serde_json::to_value(state(6)).unwrap();
            v[field] = value;
            std::fs::write(broken.join(TRAINER_STATE), v.to_string()).unwrap();
            let err = load_checkpoint(&broken).err().unwrap().to_string();
            assert!(
                err.contains(&format!("field `{field}`")) && err.contains(says),
                "{err}"
            );
        }
    }
}
