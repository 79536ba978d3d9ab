//! RoBERTa against transformers: every head's outputs and loss, and the gradient of the loss
//! with respect to every parameter, on tiny random checkpoints made by
//! tools/reference/make_roberta_fixtures.py; position ids on a right-padded batch of texts and
//! pairs; and the byte-level BPE tokenizer's ids, special tokens and pair template.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{Reference, assert_close, check_gradients, fixtures};
use ptm::config::{ModelConfig, RobertaConfig};
use ptm::models::roberta::*;
use ptm::models::{EncoderInput, Pretrained};
use ptm::nn::{DropoutRng, Mode, ParamBuilder, ParamStore, StoreOptions};
use ptm::pipelines::FillMask;
use ptm::tokenizer::Tokenizer;
use serde_json::Value;

const TOL: f32 = 1e-4;

fn dir(name: &str) -> std::path::PathBuf {
    fixtures().join("roberta").join(name)
}

fn open(name: &str, trainable: bool) -> (RobertaConfig, ParamStore, Reference) {
    let p = Pretrained::from_dir(&dir(name)).unwrap();
    let ModelConfig::Roberta(cfg) = p.config.clone() else {
        panic!("not a RoBERTa config")
    };
    let store = p
        .store(&StoreOptions {
            trainable,
            ..Default::default()
        })
        .unwrap();
    let r = Reference::load(dir(&format!("{name}.ref.safetensors")));
    (cfg, store, r)
}

/// The batch as RoBERTa's tokenizer gives it: ids and mask, no token types.
fn input(r: &Reference) -> EncoderInput {
    EncoderInput {
        token_type_ids: None,
        ..r.input()
    }
}

/// Builds a model on a fixture, runs it, compares its outputs and loss, then checks that the
/// gradient of the loss reaches every parameter (finite, non-zero) and equals PyTorch's.
fn check<M>(
    name: &str,
    build: impl Fn(&RobertaConfig, &ParamBuilder) -> ptm::Result<M>,
    run: impl Fn(&M, &Reference) -> ptm::Result<(Tensor, Vec<(&'static str, Tensor)>)>,
) {
    let (cfg, store, r) = open(name, true);
    let model = build(&cfg, &store.root()).unwrap();
    assert!(
        store.newly_initialized().is_empty(),
        "{name}: {:?}",
        store.newly_initialized()
    );
    let (loss, outputs) = run(&model, &r).unwrap();
    for (field, t) in &outputs {
        assert_close(
            &format!("{name} {field}"),
            t,
            r.get(&format!("out.{field}")),
            TOL,
        );
    }
    assert_close(&format!("{name} loss"), &loss, r.get("out.loss"), TOL);
    check_gradients(name, &store, &loss, &r.grads(""), TOL);
}

fn l(r: &Reference, k: &str) -> Tensor {
    r.get(&format!("label.{k}")).clone()
}

#[test]
fn masked_lm() {
    check("tiny-mlm", RobertaForMaskedLM::new, |m, r| {
        let o = m.forward(&input(r), Some(&l(r, "mlm")), Mode::Eval)?;
        Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
    });
}

/// The trainer's path, which projects only the labelled positions onto the vocabulary: the
/// same loss and gradients as PyTorch's loss over all logits.
#[test]
fn masked_lm_loss_at_labelled_positions_only() {
    check("tiny-mlm", RobertaForMaskedLM::new, |m, r| {
        let loss = m.masked_lm_loss(&input(r), &l(r, "mlm"), Mode::Eval)?;
        Ok((loss.unwrap(), vec![]))
    });
    let (cfg, store, r) = open("tiny-mlm", false);
    let m = RobertaForMaskedLM::new(&cfg, &store.root()).unwrap();
    let none = Tensor::full(-100i64, l(&r, "mlm").shape(), &Device::Cpu).unwrap();
    assert!(
        m.masked_lm_loss(&input(&r), &none, Mode::Eval)
            .unwrap()
            .is_none()
    );
}

/// An untied decoder (`lm_head.decoder.*`, `lm_head.bias` unused) and `hidden_act` gelu_new in
/// the layers while the LM head keeps its exact GELU.
#[test]
fn masked_lm_untied_gelu_new() {
    check(
        "tiny-gelu-new-untied-mlm",
        RobertaForMaskedLM::new,
        |m, r| {
            let o = m.forward(&input(r), Some(&l(r, "mlm")), Mode::Eval)?;
            Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
        },
    );
}

#[test]
fn sequence_classification() {
    check(
        "tiny-seq-cls",
        RobertaForSequenceClassification::new,
        |m, r| {
            let o = m.forward(&input(r), Some(&l(r, "cls")), Mode::Eval)?;
            Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
        },
    );
}

#[test]
fn token_classification() {
    check(
        "tiny-tok-cls",
        RobertaForTokenClassification::new,
        |m, r| {
            let o = m.forward(&input(r), Some(&l(r, "tok")), Mode::Eval)?;
            Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
        },
    );
}

#[test]
fn question_answering() {
    check("tiny-qa", RobertaForQuestionAnswering::new, |m, r| {
        let (s, e) = (l(r, "start"), l(r, "end"));
        let o = m.forward(&input(r), Some((&s, &e)), Mode::Eval)?;
        Ok((
            o.loss.unwrap(),
            vec![
                ("start_logits", o.start_logits),
                ("end_logits", o.end_logits),
            ],
        ))
    });
}

/// The bare encoder saved with bare names (no `roberta.` prefix), with its pooler.
#[test]
fn bare_encoder_with_pooler() {
    check(
        "tiny-base",
        |c, vb| RobertaModel::new(c, vb, true),
        |m, r| {
            let o = m.forward(&input(r), Mode::Eval)?;
            let pooled = o.pooler_output.unwrap();
            // The loss the reference script used for this one: mean(h²) + sum(pooled).
            let loss = (o.last_hidden_state.sqr()?.mean_all()? + pooled.sum_all()?)?;
            Ok((
                loss,
                vec![
                    ("last_hidden_state", o.last_hidden_state),
                    ("pooler_output", pooled),
                ],
            ))
        },
    );
}

/// Positions count from padding_idx + 1 over the real tokens and padding sits at padding_idx,
/// as transformers made them for the right-padded batch; all-zero token types are the same as
/// none; the base weights under a head give the bare encoder's states.
#[test]
fn position_ids_token_types_and_prefixed_names() {
    let (cfg, store, r) = open("tiny-base", false);
    let m = RobertaModel::new(&cfg, &store.root(), false).unwrap();
    let positions = m.embeddings().position_ids(&r.u32("in.input_ids")).unwrap();
    assert_eq!(positions.dtype(), DType::U32);
    let want = r.get("in.position_ids").to_dtype(DType::U32).unwrap();
    assert_eq!(
        positions.to_vec2::<u32>().unwrap(),
        want.to_vec2::<u32>().unwrap()
    );
    let with_types = m.forward(&r.input(), Mode::Eval).unwrap();
    assert_close(
        "explicit zero token types",
        &with_types.last_hidden_state,
        r.get("out.last_hidden_state"),
        TOL,
    );
    let (cfg, store, _) = open("tiny-mlm", false);
    let head = RobertaForMaskedLM::new(&cfg, &store.root()).unwrap();
    let h = head.roberta.forward(&input(&r), Mode::Eval).unwrap();
    assert_close(
        "roberta.* under the masked-LM head",
        &h.last_hidden_state,
        r.get("out.last_hidden_state"),
        TOL,
    );
}

/// The position table holds max_position_embeddings - padding_idx - 1 = 64 tokens: 64 run, 65
/// are refused with a message naming the limit, and padding beyond 64 does not count.
#[test]
fn inputs_longer_than_the_position_table_are_refused() {
    let (cfg, store, _) = open("tiny-base", false);
    assert_eq!(cfg.max_positions(), 64);
    let m = RobertaModel::new(&cfg, &store.root(), false).unwrap();
    let ids = |tokens: usize, pads: usize| {
        let mut v = vec![5u32; tokens];
        v.extend(std::iter::repeat_n(cfg.padding_idx(), pads));
        let n = v.len();
        EncoderInput {
            input_ids: Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap(),
            attention_mask: None,
            token_type_ids: None,
        }
    };
    assert!(m.forward(&ids(64, 0), Mode::Eval).is_ok());
    assert!(m.forward(&ids(64, 10), Mode::Eval).is_ok());
    let err = match m.forward(&ids(65, 0), Mode::Eval) {
        Ok(_) => panic!("65 tokens ran"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("65 tokens") && err.contains("at most 64"),
        "{err}"
    );
}

/// A head on a checkpoint without it is initialised and reported, with transformers' names.
#[test]
fn missing_heads_are_initialised_with_transformers_names() {
    let (cfg, store, r) = open("tiny-mlm", false);
    let m = RobertaForSequenceClassification::new(&cfg, &store.root()).unwrap();
    assert_eq!(
        store.newly_initialized(),
        vec![
            "classifier.dense.weight",
            "classifier.dense.bias",
            "classifier.out_proj.weight",
            "classifier.out_proj.bias"
        ]
    );
    let logits = m.forward(&input(&r), None, Mode::Eval).unwrap().logits;
    assert_eq!(logits.dims(), &[4, 3]);
    let (cfg, store, _) = open("tiny-base", false);
    RobertaForMaskedLM::new(&cfg, &store.root()).unwrap();
    assert_eq!(
        store.newly_initialized(),
        vec![
            "lm_head.bias",
            "lm_head.dense.weight",
            "lm_head.dense.bias",
            "lm_head.layer_norm.weight",
            "lm_head.layer_norm.bias"
        ]
    );
}

/// Dropout (both of the classification head's too) is active in train mode only, and seeded.
#[test]
fn train_mode_applies_seeded_dropout() {
    let (cfg, store, r) = open("tiny-seq-cls", false);
    let m = RobertaForSequenceClassification::new(&cfg, &store.root()).unwrap();
    let run = |mode| m.forward(&input(&r), None, mode).unwrap().logits;
    let eval = run(Mode::Eval);
    let (r5, r5b, r6) = (DropoutRng::new(5), DropoutRng::new(5), DropoutRng::new(6));
    let a = run(Mode::Train(&r5));
    let b = run(Mode::Train(&r5b));
    let c = run(Mode::Train(&r6));
    assert_close("eval", &eval, r.get("out.logits"), TOL);
    assert_close("same seed", &a, &b, 0.0);
    assert!(
        common::max_abs_diff(&a, &eval) > 1e-3,
        "train mode changed nothing"
    );
    assert!(
        common::max_abs_diff(&a, &c) > 1e-3,
        "different seeds gave the same dropout"
    );
}

fn ids_of(v: &Value) -> Vec<u32> {
    serde_json::from_value(v["ids"].clone()).unwrap()
}

/// The fixture's tokenizer.json encodes texts and pairs to the ids RobertaTokenizerFast gives:
/// `<s> A </s>`, `<s> A </s></s> B </s>`, bytes beyond ASCII, `<mask>` taking the space before
/// it; and the models' batch, padded on the right with `<pad>`, is their `in.input_ids`.
#[test]
fn tokenizer_ids_special_tokens_and_pair_template_equal_transformers() {
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir("tokenizer-ids.json")).unwrap()).unwrap();
    let tok = Tokenizer::from_dir(&dir("tiny-mlm")).unwrap();
    assert_eq!(tok.vocab_size(), 300);
    for (token, id) in [
        ("<s>", 0),
        ("<pad>", 1),
        ("</s>", 2),
        ("<unk>", 3),
        ("<mask>", 299),
    ] {
        assert_eq!(tok.token_to_id(token), Some(id), "{token}");
    }
    assert_eq!(tok.pad_id(), 1);
    for case in want["singles"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode_batch(&[text]).unwrap();
        assert_eq!(got.encodings[0].get_ids(), ids_of(case), "{text:?}");
    }
    for case in want["pairs"].as_array().unwrap() {
        let (a, b) = (case["a"].as_str().unwrap(), case["b"].as_str().unwrap());
        let got = tok.encode_pairs(&[(a, b)]).unwrap();
        let e = &got.encodings[0];
        assert_eq!(e.get_ids(), ids_of(case), "{a:?} + {b:?}");
        // One segment, as RoBERTa's single-row token-type table needs.
        assert!(e.get_type_ids().iter().all(|&t| t == 0), "{a:?} + {b:?}");
    }

    let mut encodings = Vec::new();
    for case in want["batch"].as_array().unwrap() {
        let a = case["a"].as_str().unwrap();
        let enc = match case["b"].as_str() {
            Some(b) => tok.encode_pairs(&[(a, b)]).unwrap(),
            None => tok.encode_batch(&[a]).unwrap(),
        };
        encodings.extend(enc.encodings);
    }
    let refs: Vec<_> = encodings.iter().collect();
    let x = EncoderInput::from_encodings(&refs, tok.pad_spec(), &Device::Cpu).unwrap();
    let r = Reference::load(dir("tiny-mlm.ref.safetensors"));
    for (what, got, want) in [
        ("input_ids", &x.input_ids, "in.input_ids"),
        (
            "attention_mask",
            x.attention_mask.as_ref().unwrap(),
            "in.attention_mask",
        ),
        (
            "token_type_ids",
            x.token_type_ids.as_ref().unwrap(),
            "in.token_type_ids",
        ),
    ] {
        assert_eq!(
            got.to_vec2::<u32>().unwrap(),
            r.u32(want).to_vec2::<u32>().unwrap(),
            "{what}"
        );
    }
}

/// The fill-mask pipeline on the masked-LM fixture answers as transformers' did: tokens,
/// decoded strings (a lone byte of a UTF-8 sequence decodes to U+FFFD, `</s>` to nothing in a
/// one-mask sequence) and scores.
#[test]
fn fill_mask_equals_the_transformers_pipeline() {
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir("tiny-mlm.fill-mask.json")).unwrap())
            .unwrap();
    let fill = FillMask::load(dir("tiny-mlm").to_str().unwrap(), &StoreOptions::default()).unwrap();
    assert_eq!(fill.mask_token(), "<mask>");
    for (text, expected) in want.as_object().unwrap() {
        let got = fill.predict(text, 3).unwrap();
        // One mask: a list of predictions; several: a list per mask.
        let expected: Vec<Vec<Value>> = if expected[0].is_array() {
            serde_json::from_value(expected.clone()).unwrap()
        } else {
            vec![expected.as_array().unwrap().clone()]
        };
        assert_eq!(got.len(), expected.len(), "{text}: masks");
        for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
            assert_eq!(g.token as u64, e["token"].as_u64().unwrap(), "{text}");
            assert_eq!(g.token_str, e["token_str"].as_str().unwrap(), "{text}");
            assert_eq!(g.sequence, e["sequence"].as_str().unwrap(), "{text}");
            let score = e["score"].as_f64().unwrap() as f32;
            assert!(
                (g.score - score).abs() < 1e-4,
                "{text}: {} vs {score}",
                g.score
            );
        }
    }
}
