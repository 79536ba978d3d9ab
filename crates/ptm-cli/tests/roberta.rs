//! Every command that works on BERT works on a RoBERTa directory, reached through the
//! registry alone: embed, fill-mask, fine-tuning for all four tasks with eval and predict, and
//! masked-LM pretraining from a config and from a checkpoint (no next-sentence objective).

mod common;

use std::path::Path;

use common::{fails, fixtures, ok};
use serde_json::{Value, json};

fn roberta(name: &str) -> String {
    fixtures().join("roberta").join(name).display().to_string()
}

fn write_jsonl(path: &Path, rows: &[Value]) -> String {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

fn architecture(dir: &str) -> Value {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(dir).join("config.json")).unwrap())
            .unwrap();
    config["architectures"][0].clone()
}

/// A few epochs of `task` on the tiny RoBERTa; returns the output directory.
fn finetune(dir: &Path, task: &str, train: &str, epochs: &str, lr: &str) -> String {
    let out = dir.join(format!("{task}-model")).display().to_string();
    let best: Value = serde_json::from_str(
        ok(&[
            "finetune",
            "--task",
            task,
            "--model",
            &roberta("tiny-base"),
            "--train",
            train,
            "--eval",
            train,
            "--output",
            &out,
            "--epochs",
            epochs,
            "--batch-size",
            "4",
            "--lr",
            lr,
            "--max-length",
            "32",
            "-q",
        ])
        .trim(),
    )
    .unwrap();
    assert!(best["metrics"].is_object(), "{best}");
    out
}

#[test]
fn embed_and_fill_mask_run_on_roberta() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "the cat sat\nparis is big\n").unwrap();
    let out = ok(&[
        "embed",
        "--model",
        &roberta("tiny-base"),
        "--input",
        input.to_str().unwrap(),
    ]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["embedding"].as_array().unwrap().len(),
        32,
        "hidden size"
    );

    let out = ok(&[
        "fill-mask",
        "--model",
        &roberta("tiny-mlm"),
        "the cat sat on the<mask>.",
    ]);
    // Five candidates, each with the filled sentence.
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("the cat sat on the"))
            .count(),
        5,
        "{out}"
    );
    // A bare model has no masked-LM head to fill with.
    let err = fails(&[
        "fill-mask",
        "--model",
        &roberta("tiny-base"),
        "the<mask> sat",
    ]);
    assert!(err.contains("masked-LM head"), "{err}");
}

#[test]
fn roberta_fine_tunes_for_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..24)
        .map(|i| {
            if i % 2 == 0 {
                json!({"text": "the cat sat on the mat", "label": "cat"})
            } else {
                json!({"text": "paris is the capital of a big country far away", "label": "city"})
            }
        })
        .collect();
    let train = write_jsonl(&dir.path().join("seq.jsonl"), &rows);
    let out = finetune(dir.path(), "seq-cls", &train, "4", "1e-2");
    assert_eq!(architecture(&out), "RobertaForSequenceClassification");
    let metrics: Value =
        serde_json::from_str(&ok(&["eval", "--model", &out, "--data", &train])).unwrap();
    assert_eq!(metrics["accuracy"], 1.0, "{metrics}");
    let input = write_jsonl(
        &dir.path().join("in.jsonl"),
        &[json!({"text": "the cat sat on the mat"})],
    );
    let predicted = ok(&["predict", "--model", &out, "--input", &input]);
    assert!(predicted.contains("\"label\":\"cat\""), "{predicted}");

    let tagged: Vec<Value> = (0..16)
        .map(|_| json!({"tokens": ["the", "cat", "sat", "in", "Tokyo"], "tags": ["O", "B-ANIMAL", "O", "O", "B-CITY"]}))
        .collect();
    let train = write_jsonl(&dir.path().join("tags.jsonl"), &tagged);
    let out = finetune(dir.path(), "token-cls", &train, "10", "1e-2");
    assert_eq!(architecture(&out), "RobertaForTokenClassification");
    let metrics: Value =
        serde_json::from_str(&ok(&["eval", "--model", &out, "--data", &train])).unwrap();
    assert_eq!(metrics["micro_avg"]["f1"], 1.0, "{metrics}");

    let contexts = ["the cat sat on the mat", "Tokyo is a big city"];
    let answers = ["the mat", "a big city"];
    let qa: Vec<Value> = (0..12)
        .map(|i| {
            let (c, a) = (contexts[i % 2], answers[i % 2]);
            json!({"context": c, "question": "where ?", "answers": {"text": [a], "answer_start": [c.find(a).unwrap()]}})
        })
        .collect();
    let train = write_jsonl(&dir.path().join("qa.jsonl"), &qa);
    let out = finetune(dir.path(), "qa", &train, "8", "1e-3");
    assert_eq!(architecture(&out), "RobertaForQuestionAnswering");
    let metrics: Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        &out,
        "--data",
        &train,
        "--max-length",
        "32",
    ]))
    .unwrap();
    assert!(metrics["f1"].as_f64().unwrap() > 50.0, "{metrics}");

    let texts = ["the cat sat on the mat", "Tokyo is a big city"];
    let pairs: Vec<Value> = (0..16)
        .map(|i| {
            let (a, b) = (texts[i % 2], texts[(i / 2) % 2]);
            json!({"text": a, "text_pair": b, "score": if a == b { 1.0 } else { 0.0 }})
        })
        .collect();
    let train = write_jsonl(&dir.path().join("pairs.jsonl"), &pairs);
    let out = finetune(dir.path(), "similarity", &train, "2", "1e-3");
    assert_eq!(architecture(&out), "RobertaModel");
    let predicted = ok(&["predict", "--model", &out, "--input", &train]);
    assert!(predicted.contains("\"cosine\""), "{predicted}");
}

#[test]
fn roberta_pretrains_with_masked_lm_from_a_config_and_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("train.txt");
    let para = "the cat sat on the mat and paris is the capital of france. ".repeat(4);
    std::fs::write(&text, format!("{para}\n\n").repeat(12)).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"model_type": "roberta", "vocab_size": 300, "hidden_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
               "max_position_embeddings": 66, "type_vocab_size": 1, "layer_norm_eps": 1e-5})
        .to_string(),
    )
    .unwrap();
    let common = |out: &Path| -> Vec<String> {
        [
            "pretrain",
            "--train",
            text.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--objective",
            "mlm",
            "--batch-size",
            "4",
            "--seq-len",
            "32",
            "--max-steps",
            "3",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |out: &Path, from: &[&str]| {
        let mut args = common(out);
        args.extend(from.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);
        architecture(out.to_str().unwrap())
    };
    let tokenizer = roberta("tiny-mlm");
    let scratch = dir.path().join("scratch");
    assert_eq!(
        run(
            &scratch,
            &[
                "--config",
                config.to_str().unwrap(),
                "--tokenizer",
                &tokenizer
            ]
        ),
        "RobertaForMaskedLM"
    );
    let continued = dir.path().join("continued");
    assert_eq!(
        run(&continued, &["--init-from", &roberta("tiny-mlm")]),
        "RobertaForMaskedLM"
    );
    // The pretrained model fills masks.
    let out = ok(&[
        "fill-mask",
        "--model",
        continued.to_str().unwrap(),
        "the cat<mask> on the mat.",
    ]);
    assert_eq!(
        out.lines().filter(|l| l.contains("on the mat")).count(),
        5,
        "{out}"
    );

    // RoBERTa has no next-sentence head.
    let mut args = common(&dir.path().join("nsp"));
    args.extend(["--init-from".to_string(), roberta("tiny-mlm")]);
    args[6] = "mlm+nsp".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&args);
    assert!(
        err.contains("does not fit a roberta model") && err.contains("mlm: bert, roberta"),
        "{err}"
    );
}
