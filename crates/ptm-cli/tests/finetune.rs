//! `ptm finetune`, `ptm eval` and `ptm predict` end to end on a tiny BERT for every task, and
//! the data errors each names by file and line.

mod common;

use std::path::Path;

use common::{fails, fixtures, ok, tiny};
use serde_json::{Value, json};

fn write_jsonl(path: &Path, rows: &[Value]) -> String {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A few steps on the tiny BERT fixture; returns the output directory.
fn finetune(
    dir: &Path,
    task: &str,
    train: &str,
    eval: &str,
    epochs: &str,
    lr: &str,
    extra: &[&str],
) -> String {
    finetune_model(&tiny("tiny-mlm"), dir, task, train, eval, epochs, lr, extra)
}

/// A few steps on `model`; returns the output directory.
#[allow(clippy::too_many_arguments)]
fn finetune_model(
    model: &str,
    dir: &Path,
    task: &str,
    train: &str,
    eval: &str,
    epochs: &str,
    lr: &str,
    extra: &[&str],
) -> String {
    let out = dir.join(format!("{task}-model")).display().to_string();
    let mut args = vec![
        "finetune",
        "--task",
        task,
        "--model",
        model,
        "--train",
        train,
        "--eval",
        eval,
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
    ];
    args.extend_from_slice(extra);
    let best: Value = serde_json::from_str(ok(&args).trim()).unwrap();
    assert!(best["metrics"].is_object(), "{best}");
    out
}

#[test]
fn sequence_classification_learns_labels_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..24)
        .map(|i| {
            if i % 2 == 0 {
                json!({"text": "the cat sat on the mat", "label": "cat"})
            } else {
                json!({"text": "paris is the capital of france", "label": "city"})
            }
        })
        .collect();
    let train = write_jsonl(&dir.path().join("train.jsonl"), &rows);
    let out = finetune(
        dir.path(),
        "seq-cls",
        &train,
        &train,
        "4",
        "1e-3",
        &["--class-weights", "balanced"],
    );
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"], json!({"0": "cat", "1": "city"}));
    let metrics: Value =
        serde_json::from_str(&ok(&["eval", "--model", &out, "--data", &train])).unwrap();
    assert_eq!(
        metrics["accuracy"], 1.0,
        "two fixed sentences are learned: {metrics}"
    );
    assert_eq!(metrics["confusion"], json!([[12, 0], [0, 12]]));
    // The evaluations of every epoch, drawn as a learning curve.
    let png = dir.path().join("curve.png");
    ok(&[
        "plot",
        &out,
        "--metric",
        "accuracy",
        "--output",
        png.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    assert!(fails(&["plot", &out, "--metric", "bleu"]).contains("no evaluation metric \"bleu\""));
    let input = write_jsonl(
        &dir.path().join("in.jsonl"),
        &[
            json!({"text": "paris is the capital of france", "id": 7}),
            json!({"text": "the cat sat on the mat"}),
        ],
    );
    let predicted = lines(&ok(&["predict", "--model", &out, "--input", &input]));
    assert_eq!(
        (predicted[0]["label"].as_str(), predicted[0]["id"].as_i64()),
        (Some("city"), Some(7))
    );
    assert_eq!(predicted[1]["label"], "cat");
    assert!(predicted[1]["score"].as_f64().unwrap() > 0.5);

    // A label outside the trained set, a missing field, an empty text: errors naming file and line.
    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        &[
            json!({"text": "a cat", "label": "cat"}),
            json!({"text": "a dog", "label": "dog"}),
        ],
    );
    let err = fails(&["eval", "--model", &out, "--data", &bad]);
    assert!(
        err.contains("bad.jsonl:2") && err.contains("\"dog\""),
        "{err}"
    );
    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        &[json!({"txt": "a cat", "label": "cat"})],
    );
    assert!(fails(&["eval", "--model", &out, "--data", &bad]).contains("bad.jsonl:1"));
    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        &[json!({"text": "  ", "label": "cat"})],
    );
    assert!(fails(&["eval", "--model", &out, "--data", &bad]).contains("empty \"text\""));
}

#[test]
fn token_classification_tags_entities_with_spans() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..16)
        .map(|_| json!({"tokens": ["the", "cat", "sat", "in", "paris"], "tags": ["O", "B-ANIMAL", "O", "O", "B-CITY"]}))
        .collect();
    let train = write_jsonl(&dir.path().join("train.jsonl"), &rows);
    let out = finetune(dir.path(), "token-cls", &train, &train, "10", "1e-2", &[]);
    let metrics: Value =
        serde_json::from_str(&ok(&["eval", "--model", &out, "--data", &train])).unwrap();
    assert_eq!(metrics["micro_avg"]["f1"], 1.0, "{metrics}");
    assert_eq!(metrics["per_type"]["CITY"]["support"], 16);
    let input = write_jsonl(
        &dir.path().join("in.jsonl"),
        &[json!({"text": "the cat  sat in paris"})],
    );
    let predicted = lines(&ok(&["predict", "--model", &out, "--input", &input]));
    assert_eq!(
        predicted[0]["tags"],
        json!(["O", "B-ANIMAL", "O", "O", "B-CITY"])
    );
    assert_eq!(
        predicted[0]["entities"][1],
        json!({"type": "CITY", "text": "paris", "start": 16, "end": 21, "score": predicted[0]["entities"][1]["score"]})
    );

    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        &[
            rows[0].clone(),
            json!({"tokens": ["a", "b"], "tags": ["O"]}),
        ],
    );
    let err = fails(&["eval", "--model", &out, "--data", &bad]);
    assert!(
        err.contains("bad.jsonl:2") && err.contains("1 tags for 2 tokens"),
        "{err}"
    );
}

#[test]
fn question_answering_finds_the_span() {
    let dir = tempfile::tempdir().unwrap();
    let contexts = [
        "the cat sat on the mat",
        "paris is the capital of france",
        "the dog was in the city",
    ];
    let answers = ["the mat", "france", "the city"];
    let rows: Vec<Value> = (0..18)
        .map(|i| {
            let (c, a) = (contexts[i % 3], answers[i % 3]);
            json!({"id": format!("q{i}"), "context": c, "question": "where ?", "answers": {"text": [a], "answer_start": [c.find(a).unwrap()]}})
        })
        .collect();
    let train = write_jsonl(&dir.path().join("train.jsonl"), &rows);
    let out = finetune(
        dir.path(),
        "qa",
        &train,
        &train,
        "8",
        "1e-3",
        &["--doc-stride", "8"],
    );
    let metrics: Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        &out,
        "--data",
        &train,
        "--max-length",
        "32",
        "--doc-stride",
        "8",
    ]))
    .unwrap();
    assert!(metrics["f1"].as_f64().unwrap() > 50.0, "{metrics}");
    let predicted = lines(&ok(&[
        "predict",
        "--model",
        &out,
        "--input",
        &train,
        "--max-length",
        "32",
        "--doc-stride",
        "8",
    ]));
    assert_eq!(predicted.len(), 18);
    let p = &predicted[1];
    let (s, e) = (
        p["start"].as_u64().unwrap() as usize,
        p["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(
        &contexts[1][s..e],
        p["answer"].as_str().unwrap(),
        "the span is the answer's place: {p}"
    );
    assert_eq!(p["id"], "q1");

    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        &[
            json!({"context": "abc def", "question": "q", "answers": {"text": ["def"], "answer_start": [1]}}),
        ],
    );
    let err = fails(&[
        "eval",
        "--model",
        &out,
        "--data",
        &bad,
        "--max-length",
        "32",
    ]);
    assert!(
        err.contains("bad.jsonl:1") && err.contains("not at answer_start 1"),
        "{err}"
    );
}

#[test]
fn similarity_bi_encoder_correlates_and_saves_sentence_transformers_files() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "the cat sat on the mat",
        "paris is the capital of france",
        "a big dog in the city",
        "we said it was good",
    ];
    let mut rows = Vec::new();
    for i in 0..4 {
        rows.push(json!({"text": texts[i], "text_pair": texts[i], "score": 1.0}));
        rows.push(json!({"text": texts[i], "text_pair": texts[(i + 1) % 4], "score": 0.0}));
    }
    let train = write_jsonl(
        &dir.path().join("train.jsonl"),
        &[rows.clone(), rows.clone(), rows].concat(),
    );
    let out = finetune(dir.path(), "similarity", &train, &train, "2", "1e-3", &[]);
    assert!(
        Path::new(&out).join("modules.json").is_file()
            && Path::new(&out).join("1_Pooling/config.json").is_file()
    );
    let metrics: Value =
        serde_json::from_str(&ok(&["eval", "--model", &out, "--data", &train])).unwrap();
    assert!(metrics["spearman"].as_f64().unwrap() > 0.5, "{metrics}");
    let predicted = lines(&ok(&["predict", "--model", &out, "--input", &train]));
    assert!(
        (predicted[0]["cosine"].as_f64().unwrap() - 1.0).abs() < 1e-4,
        "identical texts: {}",
        predicted[0]
    );
    // The saved bi-encoder embeds as a sentence-transformers model.
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "the cat sat\n").unwrap();
    assert!(
        ok(&["embed", "--model", &out, "--input", input.to_str().unwrap()]).contains("embedding")
    );

    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        &[json!({"text": "a", "text_pair": "b"})],
    );
    assert!(
        fails(&["eval", "--model", &out, "--data", &bad]).contains("bad.jsonl:1: no \"score\"")
    );
}

/// The same tasks take an XLNet model unchanged: its heads (sequence summary of the last token,
/// so batches pad on the left), its SentencePiece tokenizer and `<sep> <cls>` ending.
#[test]
fn xlnet_fine_tunes_for_every_task() {
    let model = fixtures().join("xlnet/tiny-spiece").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let architecture = |out: &str| -> Value {
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(out).join("config.json")).unwrap(),
        )
        .unwrap();
        config["architectures"][0].clone()
    };
    let rows: Vec<Value> = (0..24)
        .map(|i| {
            if i % 2 == 0 {
                json!({"text": "the cat sat on the mat", "label": "cat"})
            } else {
                json!({"text": "Botchan went to a school far away in the country", "label": "city"})
            }
        })
        .collect();
    let train = write_jsonl(&dir.path().join("seq.jsonl"), &rows);
    let out = finetune_model(
        &model,
        dir.path(),
        "seq-cls",
        &train,
        &train,
        "4",
        "1e-3",
        &[],
    );
    assert_eq!(architecture(&out), "XLNetForSequenceClassification");
    let metrics: Value =
        serde_json::from_str(&ok(&["eval", "--model", &out, "--data", &train])).unwrap();
    assert_eq!(
        metrics["accuracy"], 1.0,
        "two fixed sentences of different lengths are learned: {metrics}"
    );
    let input = write_jsonl(
        &dir.path().join("in.jsonl"),
        &[
            json!({"text": "the cat sat on the mat"}),
            json!({"text": "Botchan went to a school far away in the country"}),
        ],
    );
    let predicted = lines(&ok(&[
        "predict",
        "--model",
        &out,
        "--input",
        &input,
        "--batch-size",
        "2",
    ]));
    assert_eq!(
        (
            predicted[0]["label"].as_str(),
            predicted[1]["label"].as_str()
        ),
        (Some("cat"), Some("city"))
    );

    let tagged: Vec<Value> = (0..16)
        .map(|_| json!({"tokens": ["the", "cat", "sat", "in", "Tokyo"], "tags": ["O", "B-ANIMAL", "O", "O", "B-CITY"]}))
        .collect();
    let train = write_jsonl(&dir.path().join("tags.jsonl"), &tagged);
    let out = finetune_model(
        &model,
        dir.path(),
        "token-cls",
        &train,
        &train,
        "10",
        "1e-2",
        &[],
    );
    assert_eq!(architecture(&out), "XLNetForTokenClassification");
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
    let out = finetune_model(&model, dir.path(), "qa", &train, &train, "8", "1e-3", &[]);
    assert_eq!(architecture(&out), "XLNetForQuestionAnsweringSimple");
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

    let pairs: Vec<Value> = (0..12)
        .map(|i| json!({"text": contexts[i % 2], "text_pair": contexts[(i / 2) % 2], "score": if i % 2 == (i / 2) % 2 { 1.0 } else { 0.0 }}))
        .collect();
    let train = write_jsonl(&dir.path().join("pairs.jsonl"), &pairs);
    let out = finetune_model(
        &model,
        dir.path(),
        "similarity",
        &train,
        &train,
        "2",
        "1e-3",
        &[],
    );
    assert_eq!(architecture(&out), "XLNetModel");
    assert!(Path::new(&out).join("modules.json").is_file());
    ok(&["eval", "--model", &out, "--data", &train]);

    // An XLNet with a tokenizer that does not end inputs with <cls> (BERT's) is refused.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(&model).join(f), mixed.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join("bert/tiny-mlm").join(f), mixed.join(f)).unwrap();
    }
    let seq = dir.path().join("seq.jsonl").display().to_string();
    let err = fails(&[
        "finetune",
        "--task",
        "seq-cls",
        "--model",
        mixed.to_str().unwrap(),
        "--train",
        &seq,
        "--output",
        dir.path().join("x").to_str().unwrap(),
        "-q",
    ]);
    assert!(
        err.contains("ends every input with <cls>") && err.contains("mixed"),
        "{err}"
    );
}

/// `ptm predict --aggregation-strategy S` prints transformers' token-classification pipeline
/// output (tools/reference/make_pipeline_fixtures.py) for each strategy: groups, words and
/// character spans exactly, scores within 1e-4.
#[test]
fn predict_with_an_aggregation_strategy_prints_the_pipelines_entities() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("pipelines/tiny-ner.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<Value> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({ "text": t }))
        .collect();
    let input = write_jsonl(&dir.path().join("in.jsonl"), &texts);
    let model = fixtures().join("pipelines/tiny-ner").display().to_string();
    for strategy in ["none", "simple", "first", "average", "max"] {
        let got = lines(&ok(&[
            "predict",
            "--model",
            &model,
            "--input",
            &input,
            "--aggregation-strategy",
            strategy,
        ]));
        let want = reference["answers"][strategy].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{strategy}");
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.as_array().unwrap(), w.as_array().unwrap());
            assert_eq!(g.len(), w.len(), "{strategy}: {g:?} vs {w:?}");
            for (ge, we) in g.iter().zip(w) {
                for key in ["entity", "entity_group", "word", "start", "end", "index"] {
                    assert_eq!(ge.get(key), we.get(key), "{strategy} {key}: {ge} vs {we}");
                }
                let (a, b) = (ge["score"].as_f64().unwrap(), we["score"].as_f64().unwrap());
                assert!((a - b).abs() < 1e-4, "{strategy}: {ge} vs {we}");
            }
        }
    }
}
