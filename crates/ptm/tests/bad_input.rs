//! Broken model directories give errors that name the file, field or weight; never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, minilm_dir};
use ptm::models::{Pretrained, load_architecture};
use ptm::nn::StoreOptions;
use ptm::pipelines::{EmbeddingOptions, SentenceEmbedder};

/// A copy of a fixture model directory to break.
fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(fixtures().join("bert").join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

fn load_err(dir: &Path) -> String {
    let result =
        Pretrained::from_dir(dir).and_then(|p| load_architecture(&p, &StoreOptions::default()));
    match result {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

#[test]
fn missing_directory() {
    let err = Pretrained::open("/no/such/model-dir")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("/no/such/model-dir") && err.contains("no such directory"),
        "{err}"
    );
}

#[test]
fn missing_weights_file() {
    let (_t, dir) = copy_of("tiny-base");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("no weights found")
            && err.contains("model.safetensors")
            && err.contains("pytorch_model.bin"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors() {
    let (_t, dir) = copy_of("tiny-base");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("cannot read weights"),
        "{err}"
    );
}

#[test]
fn garbage_safetensors_header() {
    let (_t, dir) = copy_of("tiny-base");
    std::fs::write(
        dir.join("model.safetensors"),
        b"not a safetensors file at all",
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn malformed_config_json() {
    let (_t, dir) = copy_of("tiny-base");
    std::fs::write(
        dir.join("config.json"),
        "{\"model_type\": \"bert\",\n \"hidden_size\": 32,,}",
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("invalid JSON") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn config_field_of_the_wrong_type() {
    let (_t, dir) = copy_of("tiny-base");
    edit_config(&dir, |v| v["num_hidden_layers"] = "two".into());
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("`num_hidden_layers`"),
        "{err}"
    );
}

#[test]
fn unknown_model_type() {
    let (_t, dir) = copy_of("tiny-base");
    edit_config(&dir, |v| v["model_type"] = "bort".into());
    let err = load_err(&dir);
    assert!(
        err.contains("\"bort\"") && err.contains("supported: bert"),
        "{err}"
    );
}

#[test]
fn wrong_shapes_name_the_weight_and_both_shapes() {
    let (_t, dir) = copy_of("tiny-base");
    edit_config(&dir, |v| v["intermediate_size"] = 40.into());
    let err = load_err(&dir);
    assert!(
        err.contains("encoder.layer.0.intermediate.dense.weight")
            && err.contains("[40, 32]")
            && err.contains("[37, 32]"),
        "{err}"
    );
}

#[test]
fn missing_weight_is_named() {
    let (_t, dir) = copy_of("tiny-base");
    let p = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    tensors.remove("encoder.layer.1.attention.output.dense.bias");
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("`encoder.layer.1.attention.output.dense.bias` is missing")
            && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn missing_shard_is_named() {
    let (_t, dir) = copy_of("tiny-base-sharded");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors.index.json")
            && err.contains("model-00002-of-00003.safetensors"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture() {
    let (_t, dir) = copy_of("tiny-base");
    edit_config(&dir, |v| {
        v["architectures"] = serde_json::json!(["BertForMultipleChoice"])
    });
    let err = load_err(&dir);
    assert!(
        err.contains("BertForMultipleChoice is not supported"),
        "{err}"
    );
}

#[test]
fn tokenizer_that_does_not_fit_the_embeddings() {
    let (_t, dir) = copy_of("tiny-base");
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let err = SentenceEmbedder::load(dir.to_str().unwrap(), &EmbeddingOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("30522 tokens") && err.contains("99 rows"),
        "{err}"
    );
}

#[test]
fn max_length_beyond_the_positions() {
    let err = SentenceEmbedder::load(
        fixtures().join("bert/tiny-base").to_str().unwrap(),
        &EmbeddingOptions {
            max_length: Some(65),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("65") && err.contains("64 positions"), "{err}");
}

#[test]
fn no_tokenizer_files() {
    let (_t, dir) = copy_of("tiny-base");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = SentenceEmbedder::load(dir.to_str().unwrap(), &EmbeddingOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no tokenizer found") && err.contains("vocab.txt"),
        "{err}"
    );
}
