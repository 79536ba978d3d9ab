//! Tokenizers against transformers' ids: the real bert-base-chinese vocabulary, pairs through
//! the all-MiniLM-L6-v2 tokenizer with truncation and offsets, and llama.cpp's vectors for the
//! bert-base-uncased vocabulary.

mod common;

use common::{fixtures, minilm_dir};
use ptm::tokenizer::{Padding, Tokenizer};

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(path)).unwrap()).unwrap()
}

#[test]
fn chinese_wordpiece_from_vocab_txt() {
    let tok = Tokenizer::from_dir(&fixtures().join("tokenizers/bert-base-chinese")).unwrap();
    assert_eq!(tok.vocab_size(), 21128);
    let v = json("tokenizers/bert-base-chinese/expected.json");
    let texts: Vec<String> = serde_json::from_value(v["texts"].clone()).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(v["input_ids"].clone()).unwrap();
    let decoded: Vec<String> = serde_json::from_value(v["decoded"].clone()).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tok = tok;
    tok.set_padding(Padding::None).unwrap();
    let enc = tok.encode_batch(&refs).unwrap();
    for (i, e) in enc.encodings.iter().enumerate() {
        assert_eq!(e.get_ids(), ids[i].as_slice(), "ids of {:?}", texts[i]);
        assert_eq!(
            tok.decode(e.get_ids(), true).unwrap(),
            decoded[i],
            "decode of {:?}",
            texts[i]
        );
    }
}

/// Byte offsets (ptm, like the Rust tokenizers crate) expressed as character offsets
/// (transformers' Python API).
fn char_offsets(text: &str, bytes: (usize, usize)) -> (usize, usize) {
    let to_char = |b: usize| text[..b].chars().count();
    (to_char(bytes.0), to_char(bytes.1))
}

#[test]
fn pairs_truncate_longest_first_with_offsets() {
    let v = json("tokenizers/minilm-pairs.json");
    let pairs: Vec<(String, String)> = serde_json::from_value(v["pairs"].clone()).unwrap();
    let mut tok = Tokenizer::from_dir(&minilm_dir()).unwrap();
    tok.set_truncation(Some(v["max_length"].as_u64().unwrap() as usize))
        .unwrap();
    tok.set_padding(Padding::Longest).unwrap();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let enc = tok.encode_pairs(&refs).unwrap();
    let field = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(v[k].clone()).unwrap() };
    let (ids, types, mask) = (
        field("input_ids"),
        field("token_type_ids"),
        field("attention_mask"),
    );
    let offsets: Vec<Vec<(usize, usize)>> =
        serde_json::from_value(v["char_offsets"].clone()).unwrap();
    for (i, e) in enc.encodings.iter().enumerate() {
        let (a, b) = refs[i];
        assert_eq!(e.get_ids(), ids[i].as_slice(), "ids of pair {i}");
        assert_eq!(e.get_type_ids(), types[i].as_slice(), "types of pair {i}");
        assert_eq!(
            e.get_attention_mask(),
            mask[i].as_slice(),
            "mask of pair {i}"
        );
        for (j, &off) in e.get_offsets().iter().enumerate() {
            let text = if e.get_sequence_ids()[j] == Some(1) {
                b
            } else {
                a
            };
            assert_eq!(
                char_offsets(text, off),
                offsets[i][j],
                "offset {j} of pair {i}"
            );
        }
    }
    // The batch as model input: padded tensors of one shape.
    let input = enc
        .to_input(tok.pad_spec(), &candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(input.input_ids.dims(), &[pairs.len(), ids[0].len()]);
}

#[test]
fn llama_cpp_bert_vectors() {
    let tok = Tokenizer::from_dir(&minilm_dir()).unwrap();
    for (text, want) in llama_vectors("bert-bge") {
        let enc = tok.encode_batch(&[text.as_str()]).unwrap();
        let ids = enc.encodings[0].get_ids();
        // The vectors carry no [CLS]/[SEP].
        assert_eq!(&ids[1..ids.len() - 1], want.as_slice(), "{text:?}");
    }
}

#[test]
fn truncation_must_leave_room_for_text() {
    let mut tok = Tokenizer::from_dir(&fixtures().join("bert/tiny-mlm")).unwrap();
    let err = tok.set_truncation(Some(3)).unwrap_err().to_string();
    assert!(err.contains("max length 3"), "{err}");
    tok.set_truncation(Some(5)).unwrap();
    let enc = tok
        .encode_batch(&["the cat sat on the mat", "a dog"])
        .unwrap();
    assert_eq!(enc.encodings[0].len(), 5);
    assert_eq!(enc.encodings[1].get_attention_mask(), &[1, 1, 1, 1, 0]);
}

#[test]
fn vocab_that_does_not_fit_the_model_is_an_error() {
    let tok = Tokenizer::from_dir(&minilm_dir()).unwrap();
    let err = tok.check_fits(99).unwrap_err().to_string();
    assert!(
        err.contains("30522 tokens") && err.contains("99 rows"),
        "{err}"
    );
}

fn llama_vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = fixtures().join("tokenizers/llama-cpp");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len() - 1, ids.len());
    texts
        .into_iter()
        .zip(ids)
        .map(|(t, i)| (t.to_string(), i))
        .collect()
}

const ROUND_TRIP: &[&str] = &[
    "Hello world",
    "我爱北京天安门，今天天气很好。",
    "emoji 🦙🍕 and flags 🇫🇷, skin tones 👍🏽",
    "Café naïve résumé Ångström",
    "   spaces   \t tabs \n\n newlines \r\n",
    "",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 beyond the BMP",
];

#[test]
fn gpt2_bpe_from_vocab_json_and_merges() {
    let tok = Tokenizer::from_dir(&fixtures().join("tokenizers/gpt2")).unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(50256));
    assert_eq!(tok.special_id(|s| &s.eos), Some(50256));
    for (text, want) in llama_vectors("gpt-2") {
        let enc = tok.encode_batch(&[text.as_str()]).unwrap();
        assert_eq!(enc.encodings[0].get_ids(), want.as_slice(), "{text:?}");
    }
}

/// Byte-level BPE decodes every UTF-8 text back exactly, and streaming never emits half a
/// character.
#[test]
fn byte_level_round_trip_and_streaming() {
    let mut tok = Tokenizer::from_dir(&fixtures().join("tokenizers/gpt2")).unwrap();
    tok.set_padding(Padding::None).unwrap();
    for text in ROUND_TRIP {
        let ids = tok.encode_batch(&[text]).unwrap().encodings[0]
            .get_ids()
            .to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), *text);
        let mut stream = ptm::tokenizer::StreamDecoder::new(&tok);
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(id).unwrap();
            assert!(
                !piece.contains('\u{FFFD}'),
                "{text:?}: half a character in {piece:?}"
            );
            out.push_str(&piece);
        }
        assert_eq!(out, *text);
    }
}

/// A real SentencePiece Unigram `spiece.model` read as transformers' XLNetTokenizer reads it:
/// ids, `<sep> <cls>` ending with `<cls>` in segment 2, pairs, left padding, decoding, and plain
/// SentencePiece's ids where XLNet's normalisation changes nothing.
#[test]
fn xlnet_spiece_model_equals_transformers() {
    let v = json("tokenizers/xlnet-spiece/expected.json");
    let field = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(v[k].clone()).unwrap() };
    let mut tok = Tokenizer::from_dir(&fixtures().join("tokenizers/xlnet-spiece")).unwrap();
    let special: std::collections::BTreeMap<String, u32> =
        serde_json::from_value(v["special"].clone()).unwrap();
    for (t, id) in &special {
        assert_eq!(tok.token_to_id(t), Some(*id), "special token {t}");
    }
    assert!(tok.pad_spec().left, "XLNet pads on the left");
    tok.set_padding(Padding::None).unwrap();
    let texts: Vec<String> = serde_json::from_value(v["texts"].clone()).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let decoded: Vec<String> = serde_json::from_value(v["decoded"].clone()).unwrap();
    let (ids, types) = (field("input_ids"), field("token_type_ids"));
    for (i, e) in tok
        .encode_batch(&refs)
        .unwrap()
        .encodings
        .iter()
        .enumerate()
    {
        assert_eq!(e.get_ids(), ids[i].as_slice(), "ids of {:?}", texts[i]);
        assert_eq!(
            e.get_type_ids(),
            types[i].as_slice(),
            "segments of {:?}",
            texts[i]
        );
        assert_eq!(
            tok.decode(e.get_ids(), true).unwrap(),
            decoded[i],
            "decode of {:?}",
            texts[i]
        );
    }
    let pairs: Vec<(String, String)> = serde_json::from_value(v["pairs"].clone()).unwrap();
    let pair_refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (pair_ids, pair_types) = (field("pair_input_ids"), field("pair_token_type_ids"));
    for (i, e) in tok
        .encode_pairs(&pair_refs)
        .unwrap()
        .encodings
        .iter()
        .enumerate()
    {
        assert_eq!(e.get_ids(), pair_ids[i].as_slice(), "ids of pair {i}");
        assert_eq!(
            e.get_type_ids(),
            pair_types[i].as_slice(),
            "segments of pair {i}"
        );
    }
    tok.set_padding(Padding::Longest).unwrap();
    let batch = tok.encode_batch(&refs[..3]).unwrap();
    let (bids, bmask, btypes) = (
        field("batch_input_ids"),
        field("batch_attention_mask"),
        field("batch_token_type_ids"),
    );
    for (i, e) in batch.encodings.iter().enumerate() {
        assert_eq!(
            (e.get_ids(), e.get_attention_mask(), e.get_type_ids()),
            (
                bids[i].as_slice(),
                bmask[i].as_slice(),
                btypes[i].as_slice()
            ),
            "padded row {i}"
        );
    }
    let input = batch
        .to_input(tok.pad_spec(), &candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(
        input.input_ids.to_vec2::<u32>().unwrap(),
        bids,
        "collated batch pads on the left too"
    );

    let sp_texts: Vec<String> = serde_json::from_value(v["sp_texts"].clone()).unwrap();
    let plain = tok
        .encode_plain(&sp_texts.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(plain, field("sp_ids"), "plain SentencePiece ids");
}

/// A BPE SentencePiece model is refused by name, and a tokenizer.json without XLNet's tokens
/// cannot be given XLNet's template.
#[test]
fn spiece_bpe_model_is_refused_by_name() {
    let err = Tokenizer::from_dir(&fixtures().join("tokenizers/xlnet-spiece-bpe"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("spiece.model") && err.contains("BPE"), "{err}");
}
