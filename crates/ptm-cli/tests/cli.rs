//! The `ptm` binary end to end: outputs, formats, model lookup, and errors that exit with a
//! message (status 1), never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, fails, fixtures, ok, ptm, tiny, tiny_pretrain_args};

fn embeddings(jsonl: &str) -> Vec<Vec<f32>> {
    jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["embedding"].clone()).unwrap()
        })
        .collect()
}

#[test]
fn fill_mask_json_is_the_transformers_pipeline_output() {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("bert/tiny-mlm.fill-mask.json")).unwrap(),
    )
    .unwrap();
    for (text, expected) in want.as_object().unwrap() {
        let got: serde_json::Value = serde_json::from_str(&ok(&[
            "fill-mask",
            "--model",
            &tiny("tiny-mlm"),
            "--top-k",
            "3",
            "--format",
            "json",
            text,
        ]))
        .unwrap();
        // One mask: a list of predictions; several: a list per mask.
        let flat = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|x| x.as_array().cloned().unwrap_or_else(|| vec![x.clone()]))
                .collect()
        };
        assert_eq!(
            got.as_array().unwrap()[0].is_array(),
            expected.as_array().unwrap()[0].is_array(),
            "{text}"
        );
        for (g, e) in flat(&got).iter().zip(flat(expected)) {
            for key in ["token", "token_str", "sequence"] {
                assert_eq!(g[key], e[key], "{text}: {key}");
            }
            let (gs, es) = (g["score"].as_f64().unwrap(), e["score"].as_f64().unwrap());
            assert!((gs - es).abs() < 1e-4, "{text}: score {gs} vs {es}");
        }
    }
}

#[test]
fn fill_mask_without_a_mask_or_a_head_fails_clearly() {
    let err = fails(&["fill-mask", "--model", &tiny("tiny-mlm"), "no mask here"]);
    assert!(err.contains("no [MASK] token"), "{err}");
    let err = fails(&["fill-mask", "--model", &tiny("tiny-base"), "the [MASK] sat"]);
    assert!(err.contains("no masked-LM head"), "{err}");
}

#[test]
fn embed_keeps_input_order_in_every_input_format() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "the cat sat on the mat",
        "",
        "a dog",
        "the big big big dog sat on the small cat in paris",
    ];
    let plain = dir.path().join("in.txt");
    std::fs::write(&plain, texts.join("\n") + "\n").unwrap();
    let jsonl = dir.path().join("in.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({"text": t, "id": 1}).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();

    let from_plain = embeddings(&ok(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        plain.to_str().unwrap(),
        "--batch-size",
        "2",
    ]));
    let from_jsonl = embeddings(&ok(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        jsonl.to_str().unwrap(),
    ]));
    assert_eq!(from_plain.len(), texts.len());
    // Other batch sizes pad to other lengths: the same values up to rounding.
    assert_eq!(from_jsonl.len(), texts.len());
    for (a, b) in from_plain.iter().zip(&from_jsonl) {
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
    // Each line embedded alone gives its row: the batching and sorting keep the order.
    for (i, t) in texts.iter().enumerate() {
        let one = dir.path().join("one.txt");
        std::fs::write(&one, format!("{t}\n")).unwrap();
        let alone = embeddings(&ok(&[
            "embed",
            "--model",
            &tiny("tiny-base"),
            "--input",
            one.to_str().unwrap(),
        ]));
        let d: f32 = alone[0]
            .iter()
            .zip(&from_plain[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "line {i}: {d}");
    }
    // --output writes the same, and the normalisation flag gives unit vectors.
    let out = dir.path().join("out.jsonl");
    ok(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        plain.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--normalize",
    ]);
    let normed = embeddings(&std::fs::read_to_string(&out).unwrap());
    for v in &normed {
        let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "{n}");
    }
}

/// The texts of the MiniLM fixtures.
fn minilm_texts() -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm/texts.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(v["texts"].clone()).unwrap()
}

#[test]
fn embed_minilm_from_jsonl_equals_sentence_transformers() {
    let texts = minilm_texts();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let got = embeddings(&ok(&[
        "embed",
        "--model",
        minilm().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]));
    let want = candle_core::safetensors::load(
        fixtures().join("minilm/embeddings.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()["default"]
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let d = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-4, "text {i} ({:?}): max diff {d}", texts[i]);
    }
}

fn minilm() -> PathBuf {
    let cache = std::env::var_os("PTM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("ptm")
        });
    let dir = std::env::var_os("PTM_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "run `bash tools/fetch-minilm.sh` first ({} is missing)",
        dir.display()
    );
    dir
}

#[test]
fn embed_input_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "previous results\n").unwrap();

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"fine\nalso fine\nbroken \xff\xfe bytes\n").unwrap();
    let err = fails(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        bad.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("bad.txt:3") && err.contains("not valid UTF-8"),
        "{err}"
    );
    // The earlier output file is untouched and no temp file is left.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous results\n");
    assert!(!dir.path().join("out.jsonl.tmp").exists());

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let err = fails(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert!(
        err.contains("bad.jsonl:2") && err.contains("no \"text\" field"),
        "{err}"
    );
    std::fs::write(&bad, "{\"text\": \"ok\"}\nnot json\n").unwrap();
    let err = fails(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert!(
        err.contains("bad.jsonl:2") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn model_errors_exit_cleanly() {
    let err = fails(&["info", "--model", "/nonexistent/model"]);
    assert!(err.contains("/nonexistent/model"), "{err}");
    // A bad flag value is a usage error: status 2, from the argument parser.
    let o = ptm(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--pooling",
        "weighted",
        "--input",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown pooling \"weighted\""));
    let err = fails(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        "/nonexistent/input.txt",
    ]);
    assert!(err.contains("/nonexistent/input.txt"), "{err}");
}

/// `org/name` is found in the Hugging Face cache layout under HF_HOME; nothing is downloaded.
#[test]
fn model_from_the_hugging_face_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--acme--tiny-bert");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for e in std::fs::read_dir(fixtures().join("bert/tiny-mlm")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
    let run = |model: &str| {
        Command::new(env!("CARGO_BIN_EXE_ptm"))
            .args(["info", "--model", model, "--format", "json"])
            .env("HF_HOME", home.path())
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap()
    };
    let o = run("acme/tiny-bert");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["architecture"], "BertForMaskedLM");
    assert!(
        info["path"]
            .as_str()
            .unwrap()
            .ends_with("snapshots/0123abcd")
    );
    let o = run("acme/other");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("does not download"),
        "{err}"
    );
}

#[test]
fn info_reports_the_architecture_and_size() {
    let info: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "--model",
        &tiny("tiny-pretraining"),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(info["architecture"], "BertForPreTraining");
    assert_eq!(info["model_type"], "bert");
    assert_eq!(info["layers"], 2);
    assert_eq!(info["attention_heads"], 4);
    assert_eq!(info["vocab_size"], 99);
    assert_eq!(info["max_position_embeddings"], 64);
    assert!(info["parameters"].as_u64().unwrap() > 20_000);
}

/// A PyTorch pickle converts to safetensors that give the same embeddings.
#[test]
fn convert_pytorch_bin_to_safetensors() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("converted");
    ok(&[
        "convert",
        "--model",
        &tiny("tiny-base-bin"),
        "--output",
        target.to_str().unwrap(),
    ]);
    assert!(target.join("model.safetensors").is_file() && target.join("config.json").is_file());
    // tiny-base-bin has no tokenizer; compare through the tokenizer of tiny-base.
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(Path::new(&tiny("tiny-base")).join(f), target.join(f)).unwrap();
    }
    let input = out.path().join("in.txt");
    std::fs::write(&input, "the cat sat on the mat\na dog in paris\n").unwrap();
    let a = ok(&[
        "embed",
        "--model",
        &tiny("tiny-base"),
        "--input",
        input.to_str().unwrap(),
    ]);
    let b = ok(&[
        "embed",
        "--model",
        target.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(a.lines().count(), 2);
    assert_eq!(a, b);
    let err = fails(&[
        "convert",
        "--model",
        &tiny("tiny-base"),
        "--output",
        &tiny("tiny-base"),
    ]);
    assert!(err.contains("must differ"), "{err}");
}

fn gpt2() -> String {
    fixtures().join("gpt2/tiny-lm").display().to_string()
}

/// `ptm generate --format json` gives transformers' greedy ids; text mode prints the same
/// continuation after the prompt.
#[test]
fn generate_json_and_text_agree_with_transformers() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gpt2/tiny-lm.generate.json")).unwrap(),
    )
    .unwrap();
    let case = &cases[0];
    let prompt = case["prompts"][0].as_str().unwrap();
    let out: serde_json::Value = serde_json::from_str(&ok(&[
        "generate",
        "--model",
        &gpt2(),
        "--max-new-tokens",
        "12",
        "--format",
        "json",
        prompt,
    ]))
    .unwrap();
    assert_eq!(out["token_ids"], case["new_tokens"][0]);
    let text = ok(&[
        "generate",
        "--model",
        &gpt2(),
        "--max-new-tokens",
        "12",
        prompt,
    ]);
    assert_eq!(
        text.trim_end_matches('\n'),
        out["generated_text"].as_str().unwrap()
    );
}

#[test]
fn generate_from_a_jsonl_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"The quick brown\"}\n{\"prompt\": \"A\"}\n{\"prompt\": \"To be, or not\"}\n",
    )
    .unwrap();
    let out = ok(&[
        "generate",
        "--model",
        &gpt2(),
        "--input",
        input.to_str().unwrap(),
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, prompt) in lines.iter().zip(["The quick brown", "A", "To be, or not"]) {
        assert!(line["generated_text"].as_str().unwrap().starts_with(prompt));
        // Batched with left padding, each prompt gets what it gets alone.
        let alone: serde_json::Value = serde_json::from_str(&ok(&[
            "generate",
            "--model",
            &gpt2(),
            "--max-new-tokens",
            "4",
            "--format",
            "json",
            prompt,
        ]))
        .unwrap();
        assert_eq!(line["token_ids"], alone["token_ids"], "{prompt}");
    }
    std::fs::write(&input, b"{\"prompt\": \"ok\"}\n{\"prompt\": \"\xff\"}\n").unwrap();
    let err = fails(&[
        "generate",
        "--model",
        &gpt2(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        err.contains("prompts.jsonl:2") && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn generate_rejects_what_does_not_fit() {
    let long = "the ".repeat(80);
    let err = fails(&[
        "generate",
        "--model",
        &gpt2(),
        "--max-new-tokens",
        "10",
        &long,
    ]);
    assert!(
        err.contains("--truncate-left") && err.contains("64 positions"),
        "{err}"
    );
    ok(&[
        "generate",
        "--model",
        &gpt2(),
        "--max-new-tokens",
        "10",
        "--truncate-left",
        &long,
    ]);
    // Values out of range are usage errors (status 2), found before the model loads.
    for (flag, value) in [("--top-p", "0"), ("--num-beams", "0")] {
        let o = ptm(&[
            "generate",
            "--model",
            &gpt2(),
            "--do-sample",
            flag,
            value,
            "x",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(flag), "{err}");
    }
}

/// A few steps of masked-LM pretraining from scratch (options partly from a --train-config
/// file), then a resume to more steps, a plot of the log, and fill-mask on the result.
#[test]
fn pretrain_from_scratch_resume_and_use() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text = std::fs::read_to_string(data("austen/persuasion.txt")).unwrap();
    std::fs::write(&corpus, &text[..60_000]).unwrap();
    let eval = dir.path().join("eval.txt");
    std::fs::write(&eval, &text[60_000..70_000]).unwrap();
    let out = dir.path().join("run");
    let settings = dir.path().join("run.json");
    std::fs::write(
        &settings,
        r#"{"batch_size": 4, "seq_len": 32, "save_every": 2, "log_every": 1, "lr": 0.5}"#,
    )
    .unwrap();
    let base = |steps: &str| -> Vec<String> {
        [
            "pretrain",
            "--config",
            &data("tiny-bert.json"),
            "--tokenizer",
            &data("tokenizer"),
            "--train",
            corpus.to_str().unwrap(),
            "--eval",
            eval.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-steps",
            steps,
            "--train-config",
            settings.to_str().unwrap(),
            "--lr",
            "1e-3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = base("3");
    let first = ptm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("tokenized into") && stderr.contains("training examples, 3 steps of 4"),
        "{stderr}"
    );
    assert!(out.join("checkpoint-3").is_dir() && out.join("config.json").is_file());
    assert!(out.join("tokenized/train/index.json").is_file());
    let mut args = base("5");
    args.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
    let second = ptm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("reused from"),
        "the tokenized corpus is reused"
    );
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train_steps: Vec<u64> = records
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(train_steps, [1, 2, 3, 4, 5], "{log}");
    let lr = records[1]["lr"].as_f64().unwrap();
    assert!(
        (lr - 1e-3).abs() < 1e-12,
        "the command line wins over the file: {lr}"
    );
    let eval_steps: Vec<u64> = records
        .iter()
        .filter(|r| r.get("eval_loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(eval_steps, [0, 3, 5], "{log}");

    // Resuming with other settings would not continue the same run.
    let mut args = base("7");
    args.extend(["--resume", out.to_str().unwrap(), "--batch-size", "2"].map(String::from));
    let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("batch size 4 (now 2)"), "{err}");

    let png = ok(&["plot", out.to_str().unwrap()]);
    let bytes = std::fs::read(png.trim()).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
    let predictions: serde_json::Value = serde_json::from_str(&ok(&[
        "fill-mask",
        "--model",
        out.to_str().unwrap(),
        "--format",
        "json",
        "she was the [MASK] of the family.",
    ]))
    .unwrap();
    assert_eq!(predictions.as_array().unwrap().len(), 5);
}

#[test]
fn pretrain_rejects_bad_setups() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let (config, tokenizer) = (data("tiny-bert.json"), data("tokenizer"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "pretrain",
            "--config",
            &config,
            "--tokenizer",
            &tokenizer,
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let persuasion = data("austen/persuasion.txt");
    assert!(run(&["--train", empty.to_str().unwrap()]).contains("has no text"));
    assert!(run(&["--train", &persuasion, "--seq-len", "256"]).contains("128 positions"));
    assert!(
        run(&["--train", &persuasion, "--objective", "clm"]).contains("does not fit a bert model")
    );
    assert!(
        run(&[
            "--train",
            &persuasion,
            "--resume",
            dir.path().join("nothing").to_str().unwrap()
        ])
        .contains("nothing")
    );
    let err = fails(&[
        "pretrain",
        "--config",
        &data("tiny-bert.json"),
        "--tokenizer",
        &fixtures().join("tokenizers/gpt2").display().to_string(),
        "--train",
        &persuasion,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("50257 tokens") && err.contains("5000 rows"),
        "{err}"
    );
    let one_doc = dir.path().join("one.txt");
    std::fs::write(&one_doc, "Just one document. With two sentences.").unwrap();
    let err = run(&[
        "--train",
        one_doc.to_str().unwrap(),
        "--objective",
        "mlm+nsp",
    ]);
    assert!(err.contains("at least 2 documents"), "{err}");
    assert!(
        run(&["--train", &persuasion, "--objective", "sop"])
            .contains("supported: mlm, mlm+nsp, clm, plm")
    );
    assert!(
        run(&["--train", &persuasion, "--objective", "plm"]).contains("does not fit a bert model")
    );
    assert!(run(&["--train", &persuasion, "--dtype", "int8"]).contains("int8 is for inference"));
    let settings = dir.path().join("bad.json");
    std::fs::write(&settings, r#"{"batch_size": 4, "lerning_rate": 1}"#).unwrap();
    let bad = ptm(&[
        "pretrain",
        "--train",
        &persuasion,
        "--output",
        "x",
        "--train-config",
        settings.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(
        err.contains("bad.json") && err.contains("lerning_rate"),
        "{err}"
    );
    let err = fails(&["plot", dir.path().to_str().unwrap()]);
    assert!(err.contains("train_log.jsonl"), "{err}");
}

/// BERT's own pretraining (masked LM + next-sentence prediction) writes a BertForPreTraining
/// checkpoint whose MLM head fills masks.
#[test]
fn pretrain_mlm_and_next_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let text = std::fs::read_to_string(data("austen/persuasion.txt")).unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, &text[..40_000]).unwrap();
    ok(&[
        "pretrain",
        "--objective",
        "mlm+nsp",
        "--config",
        &data("tiny-bert.json"),
        "--tokenizer",
        &data("tokenizer"),
        "--train",
        corpus.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--seq-len",
        "48",
        "-q",
    ]);
    let info: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "--model",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(info["architecture"], "BertForPreTraining", "{info}");
    let predictions: serde_json::Value = serde_json::from_str(&ok(&[
        "fill-mask",
        "--model",
        out.to_str().unwrap(),
        "--format",
        "json",
        "she was the [MASK] of the family.",
    ]))
    .unwrap();
    assert_eq!(predictions.as_array().unwrap().len(), 5);
}

/// Killing a run at arbitrary moments (checkpoints are saved every step, so kills land
/// mid-save too) always leaves a latest checkpoint that loads and resumes.
#[test]
fn a_killed_run_leaves_a_whole_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text = std::fs::read_to_string(data("austen/persuasion.txt")).unwrap();
    std::fs::write(&corpus, &text[..40_000]).unwrap();
    for (i, delay_ms) in [0u64, 37, 113, 271].into_iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ptm"))
            .args([
                "pretrain",
                "--config",
                &data("tiny-bert.json"),
                "--tokenizer",
                &data("tokenizer"),
                "--train",
            ])
            .arg(&corpus)
            .args([
                "--output",
                out.to_str().unwrap(),
                "--max-steps",
                "100000",
                "--batch-size",
                "2",
                "--seq-len",
                "32",
            ])
            .args(["--save-every", "1", "--keep-last", "2", "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Once the first checkpoint exists, kill after a delay that lands anywhere in later saves.
        let start = std::time::Instant::now();
        let has_checkpoint = || {
            std::fs::read_dir(&out)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
                })
                .unwrap_or(false)
        };
        while !has_checkpoint() {
            assert!(
                start.elapsed().as_secs() < 120,
                "no checkpoint after two minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let ck = ptm::train::checkpoint::resolve_resume(&out).unwrap();
        ptm::train::checkpoint::load_checkpoint(&ck)
            .unwrap_or_else(|e| panic!("{}: {e}", ck.display()));
        let out_text = ok(&[
            "fill-mask",
            "--model",
            ck.to_str().unwrap(),
            "--top-k",
            "1",
            "the [MASK] was there",
        ]);
        assert!(!out_text.is_empty());
    }
}

#[test]
fn bench_reports_each_workload_it_runs() {
    let out = ok(&[
        "bench",
        "--only",
        "encode-1x16",
        "train-bert-mlm",
        "--rounds",
        "1",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = v["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["encode-1x16", "train-bert-mlm"]);
    for r in results {
        assert_eq!(r["rounds"].as_array().unwrap().len(), 1);
        assert!(r["median"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(v["threads"].as_u64().unwrap() >= 1);
    let err = fails(&["bench", "--only", "encode-2x2"]);
    assert!(
        err.contains("unknown workload \"encode-2x2\"") && err.contains("encode-32x128"),
        "{err}"
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// `--dtype bf16` and `--dtype int8` keep MiniLM's embeddings close to f32's, and a model
/// written by `ptm quantize --int8` is smaller and gives exactly what `--dtype int8` gives.
#[test]
fn reduced_precision_embeddings_and_quantized_checkpoints() {
    let texts = minilm_texts();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        texts
            .iter()
            .map(|t| t.replace('\n', " "))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .unwrap();
    let (model, input) = (minilm(), input.to_str().unwrap().to_string());
    let embed = |model: &str, dtype: &str| {
        embeddings(&ok(&[
            "embed", "--model", model, "--input", &input, "--dtype", dtype,
        ]))
    };
    let f32 = embed(model.to_str().unwrap(), "f32");
    for (dtype, floor) in [("bf16", 0.999), ("int8", 0.98)] {
        let got = embed(model.to_str().unwrap(), dtype);
        for (i, (a, b)) in f32.iter().zip(&got).enumerate() {
            let c = cosine(a, b);
            assert!(
                c >= floor && c <= 1.0 + 1e-5,
                "{dtype}, text {i}: cosine {c}"
            );
        }
    }
    let quantized = dir.path().join("minilm-int8");
    ok(&[
        "quantize",
        "--int8",
        "--model",
        model.to_str().unwrap(),
        "--output",
        quantized.to_str().unwrap(),
    ]);
    let size = |d: &Path| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len() as f64
    };
    assert!(
        size(&quantized) < 0.75 * size(&model),
        "{} vs {} bytes",
        size(&quantized),
        size(&model)
    );
    assert_eq!(
        embed(quantized.to_str().unwrap(), "f32"),
        embed(model.to_str().unwrap(), "int8")
    );

    // GPT-2 stores its Conv1D weights (in, out): quantized per output feature all the same.
    let gpt2_int8 = dir.path().join("gpt2-int8");
    ok(&[
        "quantize",
        "--int8",
        "--model",
        &gpt2(),
        "--output",
        gpt2_int8.to_str().unwrap(),
    ]);
    let generate = |model: &str, dtype: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&[
            "generate",
            "--model",
            model,
            "--max-new-tokens",
            "8",
            "--format",
            "json",
            "--dtype",
            dtype,
            "The quick brown",
        ]))
        .unwrap()
    };
    let int8 = generate(&gpt2(), "int8");
    assert_eq!(
        generate(gpt2_int8.to_str().unwrap(), "f32")["token_ids"],
        int8["token_ids"]
    );
    assert_eq!(int8["token_ids"].as_array().unwrap().len(), 8);
    assert_eq!(
        generate(&gpt2(), "bf16")["token_ids"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    let err = fails(&[
        "quantize",
        "--model",
        &gpt2(),
        "--output",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("--int8"), "{err}");
    let bad = ptm(&["embed", "--model", &gpt2(), "--dtype", "fp8"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("fp8") && err.contains("bf16"),
        "{err}"
    );
}

/// Mixed-precision pretraining (`--dtype bf16`) follows the f32 run's losses closely.
#[test]
fn pretrain_in_bf16_tracks_f32() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        &std::fs::read_to_string(data("austen/persuasion.txt")).unwrap()[..40_000],
    )
    .unwrap();
    let losses = |dtype: &str| -> Vec<f64> {
        let out = dir.path().join(dtype);
        let args = tiny_pretrain_args(
            &corpus,
            &out,
            &["--max-steps", "6", "--lr", "1e-3", "--dtype", dtype],
        );
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        std::fs::read_to_string(out.join("train_log.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let (f32, bf16) = (losses("f32"), losses("bf16"));
    assert_eq!(f32.len(), 6);
    assert_eq!(bf16.len(), 6);
    for (step, (a, b)) in f32.iter().zip(&bf16).enumerate() {
        assert!(
            (a - b).abs() <= 0.02 * a && a != b,
            "step {step}: f32 {a}, bf16 {b}"
        );
    }
}

/// XLNet pretrains with the permutation objective; an odd --seq-len is refused by name.
#[test]
fn pretrain_xlnet_with_permutation_lm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xlnet.json");
    std::fs::write(&config, r#"{"model_type": "xlnet", "vocab_size": 5000, "d_model": 32, "n_layer": 2, "n_head": 4, "d_inner": 48, "mem_len": null}"#).unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        &std::fs::read_to_string(data("austen/persuasion.txt")).unwrap()[..20_000],
    )
    .unwrap();
    let out = dir.path().join("run");
    let args = |seq_len: &'static str| {
        vec![
            "pretrain".to_string(),
            "--objective".into(),
            "plm".into(),
            "--config".into(),
            config.display().to_string(),
            "--tokenizer".into(),
            data("tokenizer"),
            "--train".into(),
            corpus.display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--max-steps".into(),
            "4".into(),
            "--batch-size".into(),
            "4".into(),
            "--seq-len".into(),
            seq_len.into(),
            "--log-every".into(),
            "1".into(),
            "-q".into(),
        ]
    };
    let run = |seq_len| ptm(&args(seq_len).iter().map(String::as_str).collect::<Vec<_>>());
    let o = run("32");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses: Vec<f64> = std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    let info = ok(&["info", "--model", out.to_str().unwrap()]);
    assert!(info.contains("XLNetLMHeadModel"), "{info}");
    std::fs::remove_dir_all(&out).unwrap();
    let o = run("31");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("even sequence length") && err.contains("31"),
        "{err}"
    );
}

fn xlnet_spiece() -> (String, serde_json::Value) {
    let dir = fixtures().join("xlnet/tiny-spiece");
    let want = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("xlnet/tiny-spiece.json")).unwrap(),
    )
    .unwrap();
    (dir.display().to_string(), want)
}

/// `ptm embed --pooling mean` on XLNet with its SentencePiece tokenizer: transformers' mean of
/// the last hidden states over the non-padding tokens of a left-padded batch.
#[test]
fn xlnet_embed_mean_equals_transformers() {
    let (model, want) = xlnet_spiece();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let texts: Vec<String> = serde_json::from_value(want["texts"].clone()).unwrap();
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let got = embeddings(&ok(&[
        "embed",
        "--model",
        &model,
        "--input",
        input.to_str().unwrap(),
        "--pooling",
        "mean",
        "--no-normalize",
    ]));
    let expected: Vec<Vec<f32>> = serde_json::from_value(want["mean_embeddings"].clone()).unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let d = g
            .iter()
            .zip(e)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "text {i}: max diff {d}");
    }
}

/// `ptm generate` on XLNet: without a prefix the continuation equals transformers' greedy one;
/// by default the padding text goes first, and the prompt alone is printed.
#[test]
fn xlnet_generates_from_the_command_line() {
    let (model, want) = xlnet_spiece();
    let prompt = want["prompt"].as_str().unwrap();
    let out: serde_json::Value = serde_json::from_str(
        ok(&[
            "generate",
            "--model",
            &model,
            "--prefix",
            "",
            "--max-new-tokens",
            "6",
            "--format",
            "json",
            prompt,
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(out["token_ids"], want["greedy"], "{out}");
    assert!(out["generated_text"].as_str().unwrap().starts_with(prompt));
    let padded: serde_json::Value = serde_json::from_str(
        ok(&[
            "generate",
            "--model",
            &model,
            "--max-new-tokens",
            "3",
            "--format",
            "json",
            prompt,
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(padded["token_ids"].as_array().unwrap().len(), 3);
    assert!(
        padded["generated_text"]
            .as_str()
            .unwrap()
            .starts_with(prompt),
        "{padded}"
    );
    let err = fails(&[
        "perplexity",
        "--model",
        &model,
        "--input",
        &data("austen/persuasion.txt"),
    ]);
    assert!(err.contains("causal LM"), "{err}");
    // Relative positions: no length limit.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--model", &model, "--format", "json"])).unwrap();
    assert!(info["max_position_embeddings"].is_null(), "{info}");
}

/// Continued PLM pretraining from an XLNet checkpoint (`--init-from`), a resume that keeps the
/// losses, and a `--config` that disagrees with the checkpoint (mem_len) refused by field.
#[test]
fn xlnet_continues_pretraining_and_resume_checks_the_config() {
    let (model, _) = xlnet_spiece();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        &std::fs::read_to_string(data("austen/persuasion.txt")).unwrap()[..12_000],
    )
    .unwrap();
    let out = dir.path().join("run");
    let common = |max_steps: &str| -> Vec<String> {
        [
            "pretrain",
            "--objective",
            "plm",
            "--train",
            corpus.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-steps",
            max_steps,
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--save-every",
            "2",
            "--log-every",
            "1",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |extra: &[&str], max_steps: &str| {
        let mut args = common(max_steps);
        args.extend(extra.iter().map(|s| s.to_string()));
        ptm(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let losses = || -> Vec<f64> {
        std::fs::read_to_string(out.join("train_log.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let o = run(&["--init-from", &model], "4");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = losses();
    assert_eq!(full.len(), 4);
    // The random-init loss of a 1,004-token vocabulary is ln(1004) = 6.9; the checkpoint's own
    // weights (O(1), not trained on text) start elsewhere.
    assert!(full.iter().all(|l| l.is_finite()), "{full:?}");
    let checkpoint = out.join("checkpoint-2");
    let config = dir.path().join("other.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint.join("config.json")).unwrap())
            .unwrap();
    cfg["mem_len"] = 16.into();
    std::fs::write(&config, cfg.to_string()).unwrap();
    let o = run(
        &[
            "--resume",
            checkpoint.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        "4",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("mem_len: null in the checkpoint, 16 in"),
        "{err}"
    );
    cfg["mem_len"] = serde_json::Value::Null;
    std::fs::write(&config, cfg.to_string()).unwrap();
    let o = run(
        &[
            "--resume",
            checkpoint.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        "4",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = losses();
    assert_eq!(
        &resumed[resumed.len() - 2..],
        &full[2..],
        "the resumed steps repeat the uninterrupted ones"
    );
}
