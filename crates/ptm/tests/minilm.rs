//! The real sentence-transformers/all-MiniLM-L6-v2 against sentence-transformers' own
//! embeddings (tools/reference/make_minilm_fixtures.py): tokens, every pooling, normalisation.

mod common;

use candle_core::{Device, Tensor};
use common::{Reference, assert_close, fixtures, minilm_dir};
use ptm::heads::Pooling;
use ptm::pipelines::{EmbeddingOptions, SentenceEmbedder};
use ptm::tokenizer::Tokenizer;

struct Texts {
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
}

fn texts() -> Texts {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm/texts.json")).unwrap(),
    )
    .unwrap();
    Texts {
        texts: serde_json::from_value(v["texts"].clone()).unwrap(),
        input_ids: serde_json::from_value(v["input_ids"].clone()).unwrap(),
    }
}

fn embed(opts: EmbeddingOptions, texts: &[String]) -> Tensor {
    let e = SentenceEmbedder::load(minilm_dir().to_str().unwrap(), &opts).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let rows = e.embed(&refs).unwrap();
    let dim = rows[0].len();
    Tensor::from_vec(rows.concat(), (texts.len(), dim), &Device::Cpu).unwrap()
}

#[test]
fn tokens_match_sentence_transformers() {
    let t = texts();
    assert!(t.texts.len() >= 20);
    let e = SentenceEmbedder::load(minilm_dir().to_str().unwrap(), &EmbeddingOptions::default())
        .unwrap();
    assert_eq!(
        e.max_length(),
        256,
        "max_seq_length from sentence_bert_config.json"
    );
    let refs: Vec<&str> = t.texts.iter().map(String::as_str).collect();
    let enc = e.tokenizer().encode_batch(&refs).unwrap();
    for ((text, got), want) in t.texts.iter().zip(&enc.encodings).zip(&t.input_ids) {
        assert_eq!(got.get_ids(), want.as_slice(), "ids of {text:?}");
    }
}

#[test]
fn default_embeddings_match_sentence_transformers() {
    let t = texts();
    let r = Reference::load(fixtures().join("minilm/embeddings.safetensors"));
    // Small batches mix lengths differently from the reference's batches of 8.
    let got = embed(
        EmbeddingOptions {
            batch_size: Some(5),
            ..Default::default()
        },
        &t.texts,
    );
    assert_close("normalised mean embeddings", &got, r.get("default"), 1e-4);
}

#[test]
fn every_pooling_matches() {
    let t = texts();
    let r = Reference::load(fixtures().join("minilm/embeddings.safetensors"));
    for (pooling, name) in [
        (Pooling::Mean, "mean"),
        (Pooling::Cls, "cls"),
        (Pooling::Max, "max"),
    ] {
        let opts = EmbeddingOptions {
            pooling: Some(vec![pooling]),
            normalize: Some(false),
            ..Default::default()
        };
        assert_close(name, &embed(opts, &t.texts), r.get(name), 1e-4);
    }
}

/// Without tokenizer.json, WordPiece is built from vocab.txt and tokenizer_config.json and
/// gives the same ids.
#[test]
fn wordpiece_from_vocab_txt_equals_tokenizer_json() {
    let src = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let from_vocab = Tokenizer::from_dir(dir.path()).unwrap();
    let from_json = Tokenizer::from_dir(&src).unwrap();
    let t = texts();
    let refs: Vec<&str> = t.texts.iter().map(String::as_str).collect();
    let a = from_vocab.encode_batch(&refs).unwrap();
    let b = from_json.encode_batch(&refs).unwrap();
    for ((text, x), y) in refs.iter().zip(&a.encodings).zip(&b.encodings) {
        assert_eq!(x.get_ids(), y.get_ids(), "{text:?}");
        assert_eq!(x.get_offsets(), y.get_offsets(), "{text:?}");
    }
}
