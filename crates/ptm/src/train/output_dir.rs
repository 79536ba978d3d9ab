//! An output directory belongs to one run. A run holds an advisory lock on `OUTPUT/.ptm.lock`
//! while it trains (the kernel drops it when the process ends, crash included), so a second
//! process on the same directory stops at once instead of interleaving checkpoints, logs and
//! the token cache. A directory that already holds a run's files (checkpoints, log, a model) is
//! only continued (`--resume`) or explicitly started over (`--overwrite-output-dir`, as
//! transformers names it), never silently mixed with a new run.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::checkpoint::CHECKPOINT_PREFIX;
use super::trainer::{BEST_MODEL, TRAIN_LOG};
use crate::checkpoint::SAFETENSORS;
use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".ptm.lock";
/// Where the config of a finished model lies (written last by `save_pretrained`).
const CONFIG: &str = "config.json";

/// What a run may do with an output directory that already holds another run's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A new run: the directory must not hold another run.
    Refuse,
    /// `--resume` from a checkpoint of this directory: continue the run it holds.
    Continue,
    /// `--overwrite-output-dir`: remove the old run's checkpoints, log and model first.
    Overwrite,
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    dir: PathBuf,
}

impl OutputLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Creates `dir` if needed, takes its lock and applies `reuse` to what an earlier run left.
pub fn claim(dir: &Path, reuse: Reuse) -> Result<OutputLock> {
    crate::io::create_dir_all(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("process {pid}"),
            };
            return Err(Error::invalid(format!(
                "{}: another ptm run ({holder}) is using this output directory; wait for it to \
                 end or choose another --output",
                dir.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    // Whoever finds the lock taken can name its holder.
    let pid = std::process::id().to_string();
    (|| {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(pid.as_bytes())?;
        file.sync_all()
    })()
    .map_err(|e| Error::io(&path, e))?;
    let found = run_files(dir)?;
    match reuse {
        Reuse::Continue => {}
        _ if found.is_empty() => {}
        Reuse::Refuse => {
            let names: Vec<String> = found
                .iter()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into())
                .collect();
            return Err(Error::invalid(format!(
                "{} holds another run ({}); continue it with --resume {0}, start over with \
                 --overwrite-output-dir (removing its checkpoints, log and model), or choose \
                 another --output",
                dir.display(),
                names.join(", ")
            )));
        }
        Reuse::Overwrite => {
            for p in found {
                let removed = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                removed.map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    Ok(OutputLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

/// The files a run leaves in its output directory: checkpoints (whole or half-written), the
/// kept best model, the log, and the final model. The config goes first, so a directory
/// overwritten half-way never looks like a complete model. The token cache is not among them:
/// it is keyed on content and safe to share.
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = [CONFIG, SAFETENSORS, TRAIN_LOG]
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .collect();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let name = name.trim_start_matches('.').trim_end_matches(".tmp");
            name.starts_with(CHECKPOINT_PREFIX) || name == BEST_MODEL
        })
        .collect();
    entries.sort();
    found.extend(entries);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_names_the_holder_and_a_dropped_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let held = claim(dir.path(), Reuse::Refuse).unwrap();
        let err = claim(dir.path(), Reuse::Refuse).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id()))
                && err.contains("another ptm run"),
            "{err}"
        );
        drop(held);
        claim(dir.path(), Reuse::Refuse).unwrap();
    }

    #[test]
    fn another_runs_files_are_refused_kept_on_resume_and_removed_on_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "checkpoint-4",
            ".checkpoint-6.tmp",
            "best-model",
            "tokenized",
        ] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        for f in [TRAIN_LOG, CONFIG, SAFETENSORS, "notes.txt"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let err = claim(d, Reuse::Refuse).unwrap_err().to_string();
        assert!(
            err.contains(
                "holds another run (config.json, model.safetensors, train_log.jsonl, \
                 .checkpoint-6.tmp, best-model, checkpoint-4)"
            ) && err.contains("--overwrite-output-dir"),
            "{err}"
        );
        drop(claim(d, Reuse::Continue).unwrap());
        assert!(d.join("checkpoint-4").is_dir());
        drop(claim(d, Reuse::Overwrite).unwrap());
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        left.sort();
        // The user's own file and the content-keyed token cache stay.
        assert_eq!(left, [LOCK_FILE, "notes.txt", "tokenized"]);
        drop(claim(d, Reuse::Refuse).unwrap());
    }
}
