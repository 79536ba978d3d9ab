//! Data-parallel training under `mpirun` (the `mpi` feature; Open MPI over shared memory on this
//! machine): 2 processes × batch B train as 1 process × batch 2B, a 2-process run resumes
//! exactly, and a failing rank ends the whole job with its rank and cause.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{data, fixtures, ptm};

/// `mpirun -np 2 ptm ARGS`, loopback only (shared memory between local processes).
fn mpirun(args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "--mca", "btl", "self,vader", env!("CARGO_BIN_EXE_ptm")])
        .args(args)
        .args(["--threads", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn succeeded(o: &Output) {
    assert!(o.status.success(), "status {:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

/// Every weight of two saved models within 1e-5 relative to the tensor's largest entry (the
/// attention key biases, whose gradient is rounding noise that Adam scales up, excluded).
fn same_weights(a: &Path, b: &Path) {
    let load = |d: &Path| candle_core::safetensors::load(d.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let (wa, wb) = (load(a), load(b));
    assert_eq!(wa.len(), wb.len());
    for (name, x) in &wa {
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let y = &wb[name];
        let scale = x.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5 * scale, "{name}: differs by {diff} (largest entry {scale})");
    }
}

fn assert_same_losses(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "step {}: {x} vs {y}", i + 1);
    }
}

/// The tiny BERT of the embedded default without dropout (its draws depend on the batch shape).
fn no_dropout_config(dir: &Path) -> String {
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data("tiny-bert.json")).unwrap()).unwrap();
    c["hidden_dropout_prob"] = 0.0.into();
    c["attention_probs_dropout_prob"] = 0.0.into();
    let path = dir.join("config.json");
    std::fs::write(&path, c.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn two_processes_pretrain_as_one_with_twice_the_batch_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_dropout_config(dir.path());
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, &std::fs::read_to_string(data("austen/persuasion.txt")).unwrap()[..40_000]).unwrap();
    let corpus = corpus.display().to_string();
    let tokenizer = data("tokenizer");
    let args = |out: &Path, batch: &'static str, steps: &'static str| -> Vec<String> {
        ["pretrain", "--config", &config, "--tokenizer", &tokenizer, "--train", &corpus, "--output", out.to_str().unwrap(),
         "--max-steps", steps, "--batch-size", batch, "--seq-len", "32", "--lr", "1e-3", "--warmup-steps", "2",
         "--log-every", "1", "--save-every", "3", "-q"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let run1 = |v: Vec<String>| ptm(&strs(&v));
    let run2 = |v: Vec<String>| mpirun(&strs(&v));

    let one = dir.path().join("one");
    succeeded(&run1(args(&one, "8", "6")));
    let two = dir.path().join("two");
    succeeded(&run2(args(&two, "4", "6")));
    assert_same_losses(&losses(&two), &losses(&one));
    same_weights(&two, &one);
    assert!(!losses(&one).windows(2).all(|w| w[0] == w[1]), "the loss moves");

    // Stopped after a checkpoint and resumed with 2 processes: the uninterrupted curve.
    let part = dir.path().join("part");
    succeeded(&run2(args(&part, "4", "3")));
    let mut resumed = args(&part, "4", "6");
    resumed.extend(["--resume".to_string(), part.join("checkpoint-3").display().to_string()]);
    succeeded(&run2(resumed));
    assert_same_losses(&losses(&part), &losses(&two));
    same_weights(&part, &two);
}

#[test]
fn two_processes_fine_tune_as_one_with_twice_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny BERT fixture with its dropout off.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join("bert/tiny-mlm").join(f), model.join(f)).unwrap();
    }
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("bert/tiny-mlm/config.json")).unwrap()).unwrap();
    c["hidden_dropout_prob"] = 0.0.into();
    c["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(model.join("config.json"), c.to_string()).unwrap();
    let texts = [("the cat sat on the mat", "cat"), ("paris is the capital of france", "city"), ("a big dog", "cat"), ("the city of paris", "city")];
    let rows: String = (0..32).map(|i| format!("{}\n", serde_json::json!({"text": texts[i % 4].0, "label": texts[i % 4].1}))).collect();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, rows).unwrap();
    let args = |out: &Path, batch: &'static str| -> Vec<String> {
        ["finetune", "--task", "seq-cls", "--model", model.to_str().unwrap(), "--train", train.to_str().unwrap(), "--eval",
         train.to_str().unwrap(), "--output", out.to_str().unwrap(), "--epochs", "2", "--batch-size", batch, "--lr", "1e-3", "-q"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let one = dir.path().join("one");
    succeeded(&ptm(&strs(&args(&one, "8"))));
    let two = dir.path().join("two");
    let o = mpirun(&strs(&args(&two, "4")));
    succeeded(&o);
    assert_same_losses(&losses(&two), &losses(&one));
    same_weights(&two, &one);
    // Rank 0 alone printed the kept model's evaluation.
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1, "{}", String::from_utf8_lossy(&o.stdout));
}

/// Rank 1 cannot read its training file: the job ends at once, naming the rank and the file,
/// instead of rank 0 waiting for it forever.
#[test]
fn a_failing_rank_ends_the_job_with_its_rank_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let started = std::time::Instant::now();
    let o = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "--mca", "btl", "self,vader", "sh", "-c"])
        .arg(format!(
            "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then t=/nonexistent/shard.txt; else t={}; fi; exec {} pretrain --config {} --tokenizer {} --train $t --output {} --max-steps 50 --batch-size 4 --seq-len 32 -q --threads 1",
            data("austen/persuasion.txt"),
            env!("CARGO_BIN_EXE_ptm"),
            data("tiny-bert.json"),
            data("tokenizer"),
            out.display()
        ))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("rank 1 of 2") && err.contains("/nonexistent/shard.txt"), "{err}");
    assert!(started.elapsed().as_secs() < 60, "the job took {:?}", started.elapsed());
}
