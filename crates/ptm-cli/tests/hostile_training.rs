//! Training runs as a careless or hostile user starts them (issue 17): a reused or shared output
//! directory, absurd sizes, other data on resume, a forged trainer state, flags no run can use.
//! Each is refused with the cause named, exit status 1, and nothing already saved is lost.

mod common;

use std::path::{Path, PathBuf};

use common::{data, fails, ok, ptm, tiny_pretrain_args};

/// A small corpus (the first `chars` of Persuasion) in `dir`.
fn corpus(dir: &Path, chars: usize) -> PathBuf {
    let text = std::fs::read_to_string(data("austen/persuasion.txt")).unwrap();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, &text[..chars]).unwrap();
    path
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn steps_logged(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("loss")?;
            v["step"].as_u64()
        })
        .collect()
}

/// Finding 1: a second run on the same --output used to overwrite the first's model, append to
/// its log, and leave its higher checkpoints for a later --resume to pick.
#[test]
fn a_used_output_directory_is_refused_unless_resumed_or_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let train = corpus(dir.path(), 30_000);
    let out = dir.path().join("run");
    ok(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "3"],
    )));
    let model = std::fs::read(out.join("model.safetensors")).unwrap();

    let err = fails(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "2"],
    )));
    assert!(
        err.contains("holds another run")
            && err.contains("checkpoint-3")
            && err.contains("--resume")
            && err.contains("--overwrite-output-dir"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), model);
    assert_eq!(steps_logged(&out), [1, 2, 3]);

    // Resuming the finished run trains nothing and says so.
    let err = fails(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "3", "--resume", out.to_str().unwrap()],
    )));
    assert!(
        err.contains("that run finished (3 of 3 steps done)"),
        "{err}"
    );

    // Starting over removes the old run's checkpoints and log first.
    ok(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "2", "--overwrite-output-dir"],
    )));
    assert_eq!(steps_logged(&out), [1, 2]);
    assert!(!out.join("checkpoint-3").exists());
    assert!(out.join("checkpoint-2").is_dir());
    // --resume now continues this run, not the removed one.
    ok(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "4", "--resume", out.to_str().unwrap()],
    )));
    assert_eq!(steps_logged(&out), [1, 2, 3, 4]);

    let err = fails(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &[
            "--max-steps",
            "5",
            "--resume",
            out.to_str().unwrap(),
            "--overwrite-output-dir",
        ],
    )));
    assert!(err.contains("would remove the checkpoint"), "{err}");
}

/// Finding 2: two processes on one --output used to kill each other's checkpoints and cache.
#[test]
fn a_run_in_progress_holds_its_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let train = corpus(dir.path(), 20_000);
    let out = dir.path().join("run");
    let held = ptm::train::output_dir::claim(&out, ptm::train::output_dir::Reuse::Refuse).unwrap();
    let err = fails(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "1"],
    )));
    assert!(
        err.contains("another ptm run") && err.contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    assert!(!out.join("tokenized").exists(), "nothing was written");
    drop(held);
    ok(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "1"],
    )));

    // Two real processes started together: one trains, the other stops at once.
    let out = dir.path().join("race");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ptm"))
            .args(tiny_pretrain_args(&train, &out, &["--max-steps", "3"]))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    let errs: Vec<String> = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    // The one that lost found the lock taken, or (started after the winner finished) its run.
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{errs:?}");
    let lost = &errs[won.iter().position(|w| !w).unwrap()];
    assert!(
        lost.contains("another ptm run") || lost.contains("holds another run"),
        "{lost}"
    );
    assert_eq!(steps_logged(&out), [1, 2, 3]);
}

/// Finding 3: absurd sizes were allocated (an abort with exit 134, or the OOM killer).
#[test]
fn absurd_sizes_are_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let train = corpus(dir.path(), 5_000);
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("tiny-bert.json")).unwrap()).unwrap();
    for (field, value, says) in [
        (
            "hidden_size",
            serde_json::json!(1_000_000_000u64),
            "available",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(1_000_000_000u64),
            "available",
        ),
        (
            "intermediate_size",
            serde_json::json!(1u64 << 60),
            "overflows",
        ),
        ("vocab_size", serde_json::json!(1u64 << 40), "32-bit ids"),
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "must be at least 1",
        ),
    ] {
        let mut c = base.clone();
        c[field] = value;
        if field == "hidden_size" {
            c["num_attention_heads"] = 1.into();
        }
        let config = dir.path().join("config.json");
        std::fs::write(&config, c.to_string()).unwrap();
        let mut args = tiny_pretrain_args(&train, &dir.path().join("out"), &["--max-steps", "1"]);
        args[2] = config.display().to_string();
        let err = fails(&strs(&args));
        assert!(
            err.contains("config.json") && err.contains(says),
            "{field}: {err}"
        );
    }
    let err = fails(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "4000000000",
        "--output",
        dir.path().join("tok").to_str().unwrap(),
        train.to_str().unwrap(),
    ]);
    assert!(err.contains("--vocab-size 4000000000"), "{err}");
}

/// Finding 6: resume checked only the example count (a shuffled corpus resumed silently) and
/// accepted any trainer state.
#[test]
fn resume_verifies_the_data_and_the_trainer_state() {
    let dir = tempfile::tempdir().unwrap();
    let train = corpus(dir.path(), 30_000);
    let out = dir.path().join("run");
    ok(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "2"],
    )));
    let resume = ["--max-steps", "4", "--resume", out.to_str().unwrap()];

    // The same lines in another order: as many bytes, as many examples, other data.
    let text = std::fs::read_to_string(&train).unwrap();
    let mut paragraphs: Vec<&str> = text.split("\n\n").collect();
    paragraphs.reverse();
    let shuffled = dir.path().join("shuffled.txt");
    std::fs::write(&shuffled, paragraphs.join("\n\n")).unwrap();
    assert_eq!(
        std::fs::metadata(&shuffled).unwrap().len(),
        std::fs::metadata(&train).unwrap().len()
    );
    let err = fails(&strs(&tiny_pretrain_args(&shuffled, &out, &resume)));
    assert!(err.contains("other training data"), "{err}");

    let err = fails(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &[&resume[..], &["--lr", "1e-2"]].concat(),
    )));
    assert!(err.contains("learning rate 0.0005 (now 0.01)"), "{err}");

    // A forged step count is refused by field.
    let state_file = out.join("checkpoint-2/trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["global_step"] = 1_000_000_000u64.into();
    std::fs::write(&state_file, state.to_string()).unwrap();
    let err = fails(&strs(&tiny_pretrain_args(&train, &out, &resume)));
    assert!(
        err.contains("trainer_state.json") && err.contains("field `global_step`"),
        "{err}"
    );
}

/// Finding 9: flags no run can use were taken, and a NaN stop claimed an intact checkpoint
/// that did not exist.
#[test]
fn training_flags_are_checked_up_front_and_a_nan_stop_tells_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let train = corpus(dir.path(), 20_000);
    let out = dir.path().join("run");
    for (flag, value) in [
        ("--lr", "NaN"),
        ("--lr", "inf"),
        ("--lr=-1e-3", ""),
        ("--weight-decay", "NaN"),
        ("--max-grad-norm", "0"),
        ("--warmup-ratio", "2"),
        ("--grad-accum", "0"),
    ] {
        let given: Vec<&str> = [flag, value]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let err = fails(&strs(&tiny_pretrain_args(&train, &out, &given)));
        let name = flag.split('=').next().unwrap();
        assert!(err.contains(name), "{flag} {value}: {err}");
        assert!(
            !out.exists(),
            "{flag} {value}: refused before anything was written"
        );
    }
    // Step 2's rate (half of 1e30 after the warm-up's 0) overflows the weights; step 3's loss
    // is not finite. No checkpoint was saved (the first is due at step 500).
    let o = ptm(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "6", "--lr", "1e30", "--warmup-steps", "2"],
    )));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        (err.contains("the loss is") || err.contains("the gradient norm is"))
            && err.contains("no checkpoint was saved yet"),
        "{err}"
    );
}

/// A full disk while a checkpoint is written (here: a file-size limit, which fails writes the
/// same way) ends the run with the file named, and the checkpoint before it stays whole and
/// resumable.
#[test]
fn a_failed_checkpoint_write_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let train = corpus(dir.path(), 20_000);
    let out = dir.path().join("run");
    ok(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "1"],
    )));
    let weights = std::fs::metadata(out.join("checkpoint-1/model.safetensors"))
        .unwrap()
        .len();
    // Files may grow to half the model's size: the next model.safetensors cannot be written.
    let limit_kb = weights / 2048;
    let args = tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "3", "--resume", out.to_str().unwrap()],
    );
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -f {limit_kb}; trap '' XFSZ; exec '{}' {}",
            env!("CARGO_BIN_EXE_ptm"),
            quoted.join(" ")
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("model.safetensors") && err.contains("File too large"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint"))
        .collect();
    assert_eq!(
        names,
        ["checkpoint-1"],
        "no half-written checkpoint is left"
    );
    ok(&strs(&args));
    assert_eq!(steps_logged(&out), [1, 2, 3]);
}

/// Finding 5, the writing side: `ptm quantize --int8` of a model with one NaN weight used to
/// write plausible int8 numbers; it refuses, naming the weight, and writes nothing.
#[test]
fn quantize_refuses_a_non_finite_weight() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(common::fixtures().join("bert/tiny-base")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let file = model.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let name = "encoder.layer.0.attention.self.query.weight";
    let t = &tensors[name];
    let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    let t = candle_core::Tensor::from_vec(v, t.shape(), &candle_core::Device::Cpu).unwrap();
    tensors.insert(name.to_string(), t);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let output = dir.path().join("int8");
    let err = fails(&[
        "quantize",
        "--int8",
        "--model",
        model.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "weight `{name}` holds a non-finite value (NaN at index 3)"
        )),
        "{err}"
    );
    assert!(!output.join("model.safetensors").exists());
}

/// Finding 8, the training side: a corpus line without end is refused at the line limit, which
/// --max-line-bytes moves.
#[test]
fn an_endless_corpus_line_stops_at_the_line_limit() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("long.txt");
    std::fs::write(&train, format!("short line\n{}\n", "x".repeat(5000))).unwrap();
    let out = dir.path().join("run");
    let err = fails(&strs(&tiny_pretrain_args(
        &train,
        &out,
        &["--max-steps", "1", "--max-line-bytes", "4096"],
    )));
    assert!(
        err.contains("long.txt:2: a line longer than 4096 bytes")
            && err.contains("--max-line-bytes raises it"),
        "{err}"
    );
    let err = fails(&[
        "tokenizer",
        "train",
        "--max-line-bytes",
        "4096",
        "--output",
        dir.path().join("tok").to_str().unwrap(),
        train.to_str().unwrap(),
    ]);
    assert!(
        err.contains("long.txt:2: a line longer than 4096 bytes"),
        "{err}"
    );
}

/// Finding 8 for labeled data: fine-tuning, evaluation and prediction read their JSONL one line
/// at a time, so a file without line breaks stops at the line limit instead of filling memory.
#[test]
fn labeled_data_without_line_breaks_stops_at_the_line_limit() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny("tiny-seq-cls");
    let out = dir.path().join("run");
    for args in [
        vec![
            "finetune",
            "--task",
            "seq-cls",
            "--model",
            &model,
            "--train",
            "/dev/zero",
        ],
        vec!["eval", "--model", &model, "--data", "/dev/zero"],
        vec!["predict", "--model", &model, "--input", "/dev/zero"],
    ] {
        let mut args = args;
        if args[0] == "finetune" {
            args.extend(["--output", out.to_str().unwrap()]);
        }
        let err = fails(&args);
        assert!(
            err.contains("/dev/zero:1: a line longer than 16777216 bytes"),
            "{}: {err}",
            args[0]
        );
    }
}
