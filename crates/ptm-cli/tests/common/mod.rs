//! Running the `ptm` binary from tests, and where their inputs are.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn tiny(name: &str) -> String {
    fixtures().join("bert").join(name).display().to_string()
}

pub fn ptm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ptm"))
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(args: &[&str]) -> String {
    let o = ptm(args);
    assert!(
        o.status.success(),
        "ptm {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs a command that must fail cleanly; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let o = ptm(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "ptm {args:?}: status {:?}, stderr {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn data(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(path)
        .display()
        .to_string()
}

/// `ptm pretrain` of the embedded tiny BERT on `train` into `out`, batches of 4 blocks of 32
/// tokens, every step logged, quiet, with `extra` flags.
pub fn tiny_pretrain_args(train: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "pretrain",
        "--config",
        &data("tiny-bert.json"),
        "--tokenizer",
        &data("tokenizer"),
        "--train",
        train.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--log-every",
        "1",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}
