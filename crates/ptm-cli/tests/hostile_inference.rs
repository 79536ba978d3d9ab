//! The inference commands under hostile use (issue 17): absurd thread counts, models whose
//! finite weights overflow to NaN, endless input lines, texts longer than the model and flag
//! values out of range all end in a message (status 1, or 2 for a bad flag), never a panic, a
//! hang, `null` in the output or an internal error.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use common::{fails, fixtures, ok, ptm, tiny};

fn gpt2() -> String {
    fixtures().join("gpt2/tiny-lm").display().to_string()
}

/// A copy of a fixture model whose floating-point weights are all multiplied by `factor`: finite
/// weights (the load-time check passes them) whose products overflow f32 to inf, and inf - inf
/// to NaN, in the real forward pass.
fn overflowing(fixture: &str, factor: f64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join(fixture);
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let weights = dir.path().join("model.safetensors");
    let scaled: std::collections::HashMap<String, Tensor> =
        candle_core::safetensors::load(&weights, &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(name, t)| {
                let t = if t.dtype() == DType::F32 {
                    t.affine(factor, 0.0).unwrap()
                } else {
                    t
                };
                (name, t)
            })
            .collect();
    candle_core::safetensors::save(&scaled, &weights).unwrap();
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Status 2 (a bad flag, refused before anything runs) with every `needles` in the message.
fn bad_flag(args: &[&str], needles: &[&str]) {
    let o = ptm(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "ptm {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "ptm {args:?}: {n:?} not in {err}");
    }
}

/// A non-finite model output is an error naming `step`, with no `null` printed.
fn refused_as_non_finite(args: &[&str], step: &str) {
    let o = ptm(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "ptm {args:?}: {out} {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(step) && err.contains("not finite"),
        "ptm {args:?}: {err}"
    );
    assert!(!out.contains("null"), "{out}");
}

fn run_with_env(args: &[&str], key: &str, value: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ptm"))
        .args(args)
        .env(key, value)
        .output()
        .unwrap()
}

// 1. Threads.

#[test]
fn threads_beyond_four_per_core_or_zero_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("two.txt");
    std::fs::write(&input, "one line\nanother line\n").unwrap();
    let embed = |threads: &str| {
        vec![
            "--threads".to_string(),
            threads.to_string(),
            "embed".into(),
            "--model".into(),
            tiny("tiny-base"),
            "--input".into(),
            path_str(&input).into(),
        ]
    };
    let start = std::time::Instant::now();
    for n in ["10000", "0", "1025"] {
        let args = embed(n);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bad_flag(
            &args,
            &["--threads", "must be in 1..=", "cores, at most 1024"],
        );
    }
    // Refused while parsing: no model loaded, no pool started.
    assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
    let args = embed("2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(ok(&args).lines().count(), 2);
    let o = run_with_env(&args[2..], "RAYON_NUM_THREADS", "10000");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("RAYON_NUM_THREADS=10000: must be in 1..="),
        "{err}"
    );
}

/// Under a memory cap the worker threads may not start: that is an error (or, with no memory
/// left at all, the allocator's abort), never a panic. Caps around what ptm needs, so that some
/// runs fail while the pool starts.
#[test]
fn threads_under_a_memory_cap_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("two.txt");
    std::fs::write(&input, "one line\nanother line\n").unwrap();
    for cap_mb in (250..=450).step_by(20) {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {}; exec \"$0\" --threads 8 embed --model \"$1\" --input \"$2\"",
                cap_mb * 1024
            ))
            .args([
                env!("CARGO_BIN_EXE_ptm"),
                &tiny("tiny-base"),
                path_str(&input),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // With no memory left at all the allocator aborts; std's thread start may report its
        // own failure on the way (its alternate signal stack), which is part of that abort.
        let allocator_abort = o.status.code().is_none() && err.contains("memory allocation of");
        assert!(
            allocator_abort || !err.contains("panicked"),
            "cap {cap_mb} MB: {err}"
        );
        if o.status.code() == Some(1) {
            assert!(err.starts_with("error: "), "cap {cap_mb} MB: {err}");
        }
    }
}

// 2. Non-finite activations of a model with finite weights.

#[test]
fn embed_and_similarity_of_an_overflowing_model_name_the_text() {
    let model = overflowing("bert/tiny-base", 1e30);
    let m = path_str(model.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "the cat sat\na dog\n").unwrap();
    for dtype in ["f32", "bf16", "int8"] {
        let args = [
            "embed",
            "--model",
            m,
            "--input",
            path_str(&input),
            "--dtype",
            dtype,
        ];
        refused_as_non_finite(&args, "lines 1-2: embedding of text");
        let args = [
            "similarity",
            "--model",
            m,
            "--dtype",
            dtype,
            "a cat",
            "a dog",
        ];
        refused_as_non_finite(&args, "embedding of text");
    }
}

#[test]
fn fill_mask_of_an_overflowing_model_names_the_mask() {
    let model = overflowing("bert/tiny-mlm", 1e30);
    for dtype in ["f32", "bf16", "int8"] {
        let args = [
            "fill-mask",
            "--model",
            path_str(model.path()),
            "--format",
            "json",
            "--dtype",
            dtype,
            "the [MASK] sat",
        ];
        refused_as_non_finite(&args, "fill-mask: the scores of mask 1");
    }
}

#[test]
fn generate_of_an_overflowing_model_names_the_decoding_step() {
    let model = overflowing("gpt2/tiny-lm", 1e30);
    let m = path_str(model.path());
    let base = ["generate", "--model", m, "--max-new-tokens", "4"];
    for extra in [
        &["--format", "json"][..],
        &["--do-sample", "--seed", "1"],
        &["--num-beams", "3", "--format", "json"],
        &["--dtype", "bf16"],
    ] {
        let args: Vec<&str> = base
            .iter()
            .chain(extra)
            .chain(&["hello"])
            .copied()
            .collect();
        refused_as_non_finite(&args, "generate: decoding step 1 of prompt 1");
    }
    let args: Vec<&str> = base
        .iter()
        .chain(&["--dtype", "int8", "--format", "json", "hello"])
        .copied()
        .collect();
    refused_as_non_finite(&args, "generate: decoding step");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(&input, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n").unwrap();
    let args: Vec<&str> = base
        .iter()
        .chain(&["--input", path_str(&input)])
        .copied()
        .collect();
    refused_as_non_finite(&args, "prompts 1-2 of --input: generate: decoding step 1");
}

#[test]
fn perplexity_of_an_overflowing_model_names_the_window() {
    let model = overflowing("gpt2/tiny-lm", 1e30);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("text.txt");
    std::fs::write(&input, "the cat sat on the mat\n").unwrap();
    for dtype in ["f32", "bf16", "int8"] {
        let args = [
            "perplexity",
            "--model",
            path_str(model.path()),
            "--input",
            path_str(&input),
            "--format",
            "json",
            "--dtype",
            dtype,
        ];
        let step = "perplexity: the loss of the window at tokens 0..";
        refused_as_non_finite(&args, step);
    }
}

#[test]
fn predict_and_eval_of_an_overflowing_model_name_the_record() {
    let model = overflowing("bert/tiny-seq-cls", 1e30);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"a fine film\", \"label\": \"LABEL_1\"}\n{\"text\": \"dull\", \"label\": \"LABEL_0\"}\n",
    )
    .unwrap();
    for dtype in ["f32", "bf16", "int8"] {
        let m = path_str(model.path());
        let d = path_str(&data);
        let predict = ["predict", "--model", m, "--input", d, "--dtype", dtype];
        let eval = ["eval", "--model", m, "--data", d, "--dtype", dtype];
        for args in [&predict[..], &eval[..]] {
            refused_as_non_finite(args, "data.jsonl: record ");
        }
    }
}

// 3. Endless lines.

#[test]
fn an_endless_input_line_stops_at_the_line_limit() {
    let start = std::time::Instant::now();
    let err = fails(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        "/dev/zero",
    ]);
    assert!(
        err.contains("/dev/zero:1: a line longer than 16777216 bytes")
            && err.contains("--max-line-bytes"),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 60, "{:?}", start.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, format!("short\n{}\n", "x ".repeat(50))).unwrap();
    let small = ["--max-line-bytes", "64"];
    let embed = [
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        path_str(&input),
    ];
    let args: Vec<&str> = embed.iter().chain(&small).copied().collect();
    let err = fails(&args);
    assert!(
        err.contains("texts.txt:2: a line longer than 64 bytes"),
        "{err}"
    );
    let args: Vec<&str> = embed
        .iter()
        .chain(&["--max-line-bytes", "100"])
        .copied()
        .collect();
    assert_eq!(ok(&args).lines().count(), 2);
    bad_flag(
        &embed
            .iter()
            .chain(&["--max-line-bytes", "0"])
            .copied()
            .collect::<Vec<_>>(),
        &["--max-line-bytes"],
    );

    let err = fails(&["generate", "--model", &gpt2(), "--input", "/dev/zero"]);
    assert!(err.contains("/dev/zero:1: a line longer than"), "{err}");
    let g = gpt2();
    let args = [
        "perplexity",
        "--model",
        &g,
        "--input",
        "/dev/zero",
        "--max-line-bytes",
        "1000",
    ];
    let err = fails(&args);
    assert!(
        err.contains("/dev/zero:1: a line longer than 1000 bytes"),
        "{err}"
    );
}

// 4. Texts longer than the model.

#[test]
fn texts_longer_than_the_model_are_truncated_or_refused_with_the_limit() {
    let long = "the cat sat on the mat ".repeat(40);
    let err = fails(&[
        "fill-mask",
        "--model",
        &tiny("tiny-mlm"),
        &format!("{long} [MASK]"),
    ]);
    assert!(
        err.contains("the model takes at most 64") && !err.contains("narrow"),
        "{err}"
    );
    // Encoders truncate, as sentence-transformers does.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.txt");
    std::fs::write(&input, format!("{long}\nshort\n")).unwrap();
    let out = ok(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        path_str(&input),
    ]);
    assert_eq!(out.lines().count(), 2);
    ok(&["similarity", "--model", &tiny("tiny-base"), &long, "short"]);
    let err = fails(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        path_str(&input),
        "--max-length",
        "65",
    ]);
    assert!(err.contains("64 positions"), "{err}");

    // GPT-2: the prompt and the new tokens share n_positions.
    let err = fails(&[
        "generate",
        "--model",
        &gpt2(),
        "--max-new-tokens",
        "64",
        "hi",
    ]);
    assert!(
        err.contains("--max-new-tokens 64 leaves no room for a prompt in the model's 64 positions"),
        "{err}"
    );
    let args = [
        "generate",
        "--model",
        &gpt2(),
        "--max-new-tokens",
        "60",
        &long,
    ];
    let err = fails(&args);
    assert!(
        err.contains("allow 4") && err.contains("--truncate-left"),
        "{err}"
    );

    // Perplexity slides its windows over a long text; a window past the model is refused.
    let text = dir.path().join("text.txt");
    std::fs::write(&text, &long).unwrap();
    let g = gpt2();
    let ppl = ["perplexity", "--model", &g, "--input", path_str(&text)];
    ok(&ppl);
    let args: Vec<&str> = ppl.iter().chain(&["--max-length", "65"]).copied().collect();
    let err = fails(&args);
    assert!(err.contains("must be in 2..=64"), "{err}");

    // Task models truncate to --max-length, whose default fits the model.
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        format!("{{\"text\": \"{long}\", \"label\": \"LABEL_1\"}}\n"),
    )
    .unwrap();
    let m = tiny("tiny-seq-cls");
    let d = path_str(&data);
    let out = ok(&["predict", "--model", &m, "--input", d]);
    assert!(out.contains("\"label\""), "{out}");
    ok(&["eval", "--model", &m, "--data", d]);
    let err = fails(&[
        "predict",
        "--model",
        &m,
        "--input",
        d,
        "--max-length",
        "128",
    ]);
    assert!(
        err.contains("--max-length 128 exceeds the model's 64 positions"),
        "{err}"
    );
}

// 5. Flag values.

#[test]
fn generation_flags_out_of_range_are_refused_up_front() {
    let g = gpt2();
    let cases: &[(&str, &str, &str)] = &[
        ("--temperature", "nan", "not a finite number"),
        ("--temperature", "inf", "not a finite number"),
        ("--temperature", "0", "not above 0"),
        ("--temperature", "-1", "not above 0"),
        ("--top-p", "0", "not in (0, 1]"),
        ("--top-p", "1.5", "not in (0, 1]"),
        ("--top-p", "NaN", "not a finite number"),
        ("--top-k", "-1", "--top-k"),
        ("--repetition-penalty", "nan", "not a finite number"),
        ("--repetition-penalty", "0", "not above 0"),
        ("--length-penalty", "nan", "not a finite number"),
        ("--length-penalty", "-inf", "not a finite number"),
        ("--num-beams", "0", "not in 1..=1024"),
        ("--num-beams", "100000", "not in 1..=1024"),
        ("--num-return-sequences", "0", "not in 1..=1024"),
        ("--stop", "", "--stop"),
    ];
    for (flag, value, says) in cases {
        // flag=value, so that "-1" is not read as a flag.
        let arg = format!("{flag}={value}");
        let args = ["generate", "--model", &g, "--do-sample", &arg, "x"];
        bad_flag(&args, &[flag, says]);
    }
    // Values in range still run.
    ok(&[
        "generate",
        "--model",
        &g,
        "--num-beams",
        "2",
        "--length-penalty",
        "-0.5",
        "--repetition-penalty",
        "1.2",
        "--max-new-tokens",
        "6",
        "x",
    ]);
}
