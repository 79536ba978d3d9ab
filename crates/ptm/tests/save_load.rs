//! save_pretrained writes what loads back unchanged (and what transformers loads: checked by
//! tools/reference/check_transformers_loads.py).

mod common;

use candle_core::Tensor;
use common::{Reference, assert_close, fixtures};
use ptm::models::bert::BertForPreTraining;
use ptm::models::{Pretrained, load_architecture, save_pretrained};
use ptm::nn::{Mode, StoreOptions};

/// Pretraining logits of the model in `dir` on the reference inputs; every weight used.
fn logits(dir: &std::path::Path, r: &Reference) -> (Tensor, Tensor) {
    let p = Pretrained::from_dir(dir).unwrap();
    let ptm::config::ModelConfig::Bert(cfg) = &p.config else {
        panic!("not a BERT config")
    };
    let store = p.store(&StoreOptions::default()).unwrap();
    let m = BertForPreTraining::new(cfg, &store.root()).unwrap();
    assert!(store.newly_initialized().is_empty() && store.unused_weights().is_empty());
    let o = m.forward(&r.input(), None, None, Mode::Eval).unwrap();
    (o.prediction_logits, o.seq_relationship_logits)
}

/// The saved model computes exactly what the original does.
fn reload_and_compare(dir: &std::path::Path, r: &Reference) {
    let (a, b) = logits(&fixtures().join("bert/tiny-pretraining"), r);
    let (x, y) = logits(dir, r);
    assert_close("prediction_logits", &x, &a, 0.0);
    assert_close("seq_relationship_logits", &y, &b, 0.0);
}

#[test]
fn saved_directory_loads_back_identically() {
    let src = Pretrained::from_dir(&fixtures().join("bert/tiny-pretraining")).unwrap();
    let (arch, store) = load_architecture(&src, &StoreOptions::default()).unwrap();
    assert_eq!(arch, "BertForPreTraining");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("saved");
    save_pretrained(
        &dir,
        &src.config,
        &arch,
        &store,
        Some(&src.tokenizer().unwrap()),
    )
    .unwrap();

    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt"
        ]
    );

    // HF names, the tied decoder left out as transformers does, the metadata transformers needs.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
    let tensors = meta.tensors();
    let names: Vec<&String> = tensors.keys().collect();
    assert!(
        names
            .iter()
            .any(|n| *n == "bert.embeddings.word_embeddings.weight")
    );
    assert!(names.iter().any(|n| *n == "cls.predictions.bias"));
    assert!(!names.iter().any(|n| n.contains("decoder")));

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["BertForPreTraining"])
    );
    assert_eq!(config["model_type"], "bert");
    assert_eq!(
        config["transformers_version"], "5.23.0",
        "unknown keys are kept"
    );

    let r = Reference::load(fixtures().join("bert/tiny-pretraining.ref.safetensors"));
    reload_and_compare(&dir, &r);

    // Saving again over the directory replaces every file and leaves no temp file.
    save_pretrained(&dir, &src.config, &arch, &store, None).unwrap();
    assert!(
        std::fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp"))
    );
    reload_and_compare(&dir, &r);

    let a = src
        .tokenizer()
        .unwrap()
        .encode_batch(&["the big cat sat"])
        .unwrap();
    let b = ptm::tokenizer::Tokenizer::from_dir(&dir)
        .unwrap()
        .encode_batch(&["the big cat sat"])
        .unwrap();
    assert_eq!(a.encodings[0].get_ids(), b.encodings[0].get_ids());
}

#[test]
fn untied_decoder_is_saved() {
    let src = Pretrained::from_dir(&fixtures().join("bert/tiny-gelu-new-untied-mlm")).unwrap();
    let (arch, store) = load_architecture(&src, &StoreOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(out.path(), &src.config, &arch, &store, None).unwrap();
    let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert!(
        meta.tensors()
            .contains_key("cls.predictions.decoder.weight")
    );
    assert!(meta.tensors().contains_key("cls.predictions.decoder.bias"));
    assert!(
        meta.tensors().contains_key("cls.predictions.bias"),
        "kept, as transformers has it"
    );
}

/// The parameter count equals transformers' `sum(p.numel() for p in model.parameters())`,
/// which is the total size of the reference gradients (one per parameter).
#[test]
fn parameter_count_matches_transformers() {
    let r = Reference::load(fixtures().join("bert/tiny-pretraining.ref.safetensors"));
    let want: usize = r.grads("").values().map(|g| g.elem_count()).sum();
    let src = Pretrained::from_dir(&fixtures().join("bert/tiny-pretraining")).unwrap();
    let (_, store) = load_architecture(&src, &StoreOptions::default()).unwrap();
    assert_eq!(store.num_parameters(), want);
}
