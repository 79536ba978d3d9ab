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

/// Rewrites one weight of a copied fixture.
fn set_weight(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&candle_core::Tensor) -> candle_core::Tensor,
) {
    let p = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    let t = edit(&tensors[name]);
    tensors.insert(name.to_string(), t);
    candle_core::safetensors::save(&tensors, &p).unwrap();
}

/// One NaN (or infinity) in one weight is refused at load with the weight's name, in every
/// precision the weights can be loaded in; it never reaches an output as `null`.
#[test]
fn non_finite_weights_are_refused_by_name() {
    let name = "encoder.layer.1.intermediate.dense.weight";
    for (bad, says) in [
        (f32::NAN, "NaN at index 5"),
        (f32::INFINITY, "inf at index 5"),
    ] {
        let (_t, dir) = copy_of("tiny-base");
        set_weight(&dir, name, |t| {
            let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[5] = bad;
            candle_core::Tensor::from_vec(v, t.shape(), &candle_core::Device::Cpu).unwrap()
        });
        for precision in [
            ptm::nn::Precision::F32,
            ptm::nn::Precision::Bf16,
            ptm::nn::Precision::Int8,
        ] {
            let p = Pretrained::from_dir(&dir).unwrap();
            let opts = StoreOptions {
                precision,
                ..Default::default()
            };
            let err = match load_architecture(&p, &opts) {
                Ok(_) => panic!("{precision:?}: a {bad} weight loaded"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(&format!(
                    "weight `{name}` holds a non-finite value ({says})"
                )) && err.contains("model.safetensors"),
                "{precision:?}: {err}"
            );
        }
    }
}

/// Integer tensors are never reinterpreted as float bits.
#[test]
fn an_integer_tensor_where_a_float_weight_belongs_is_refused() {
    let name = "pooler.dense.bias";
    for dtype in [
        safetensors::Dtype::I32,
        safetensors::Dtype::I64,
        safetensors::Dtype::U8,
    ] {
        let (_t, dir) = copy_of("tiny-base");
        // Written with the safetensors crate: I32 has no candle dtype to build it with.
        let p = dir.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let width = match dtype {
            safetensors::Dtype::I64 => 8,
            safetensors::Dtype::I32 => 4,
            _ => 1,
        };
        let mut views: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = file
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec(), v.dtype(), v.data().to_vec()))
            .collect();
        for v in views.iter_mut().filter(|v| v.0 == name) {
            v.2 = dtype;
            v.3 = vec![1u8; v.1.iter().product::<usize>() * width];
        }
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = views
            .iter()
            .map(|(n, shape, d, data)| {
                let view = safetensors::tensor::TensorView::new(*d, shape.clone(), data).unwrap();
                (n.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(tensors, None, &p).unwrap();
        let err = load_err(&dir);
        assert!(
            err.contains(&format!("weight `{name}` is stored as {dtype:?}"))
                && err.contains("an integer type"),
            "{dtype:?}: {err}"
        );
    }
}

/// Shard names in an index are file names inside the model directory: no absolute path, no
/// `..`, no symbolic link out of it.
#[test]
fn shard_index_paths_stay_inside_the_model_directory() {
    let outside = tempfile::tempdir().unwrap();
    for (shard, says) in [
        (
            "/etc/passwd",
            "is not a file name inside the model directory",
        ),
        (
            "../secret.safetensors",
            "is not a file name inside the model directory",
        ),
        ("link.safetensors", "leads outside the model directory"),
    ] {
        let (_t, dir) = copy_of("tiny-base-sharded");
        let target = outside.path().join("secret.safetensors");
        std::fs::copy(dir.join("model-00002-of-00003.safetensors"), &target).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link.safetensors")).unwrap();
        let index = dir.join("model.safetensors.index.json");
        let text = std::fs::read_to_string(&index)
            .unwrap()
            .replace("model-00002-of-00003.safetensors", shard);
        std::fs::write(&index, text).unwrap();
        let err = load_err(&dir);
        assert!(
            err.contains("model.safetensors.index.json")
                && err.contains("weight_map")
                && err.contains(says),
            "{shard}: {err}"
        );
    }
}

/// A config whose sizes cannot fit is refused before anything is allocated; zero layers too.
#[test]
fn absurd_config_sizes_are_refused_before_loading() {
    for (field, value, says) in [
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "must be at least 1",
        ),
        ("vocab_size", serde_json::json!(1u64 << 40), "32-bit ids"),
        (
            "intermediate_size",
            serde_json::json!(1u64 << 62),
            "overflows",
        ),
    ] {
        let (_t, dir) = copy_of("tiny-base");
        edit_config(&dir, |v| v[field] = value.clone());
        let err = Pretrained::from_dir(&dir).err().unwrap().to_string();
        assert!(
            err.contains("config.json") && err.contains(says),
            "{field}: {err}"
        );
    }
}
