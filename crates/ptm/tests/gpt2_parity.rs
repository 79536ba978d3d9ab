//! GPT-2 against transformers (tools/reference/make_gpt2_fixtures.py): logits, causal-LM and
//! classification losses and every parameter's gradient, on right- and left-padded batches;
//! and the KV-cached step-by-step path against the full forward pass.

mod common;

use candle_core::{D, DType, Tensor};
use common::{Reference, assert_close, check_gradients, fixtures};
use ptm::config::{Gpt2Config, ModelConfig};
use ptm::models::Pretrained;
use ptm::models::gpt2::{DecoderInput, Gpt2ForSequenceClassification, Gpt2LMHeadModel};
use ptm::nn::{Mode, ParamStore, StoreOptions};

const TOL: f32 = 1e-4;

fn open(name: &str, trainable: bool) -> (Gpt2Config, ParamStore, Reference) {
    let p = Pretrained::from_dir(&fixtures().join("gpt2").join(name)).unwrap();
    let ModelConfig::Gpt2(cfg) = p.config.clone() else {
        panic!("not a GPT-2 config")
    };
    let store = p
        .store(&StoreOptions {
            trainable,
            ..Default::default()
        })
        .unwrap();
    (
        cfg,
        store,
        Reference::load(
            fixtures()
                .join("gpt2")
                .join(format!("{name}.ref.safetensors")),
        ),
    )
}

/// Rows of (batch, seq, n) at the positions the mask marks as tokens, stacked.
fn real_positions(t: &Tensor, mask: &Tensor) -> Tensor {
    let mask = mask.to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap();
    let mut rows = Vec::new();
    for (b, m) in mask.iter().enumerate() {
        for (s, keep) in m.iter().enumerate() {
            if *keep == 1 {
                rows.push(t.get(b).unwrap().get(s).unwrap());
            }
        }
    }
    Tensor::stack(&rows, 0).unwrap()
}

fn check_lm(name: &str) {
    for side in ["right", "left"] {
        let (cfg, store, r) = open(name, true);
        let m = Gpt2LMHeadModel::new(&cfg, &store.root()).unwrap();
        let ids = r.u32(&format!("{side}.in.input_ids"));
        let mask = r.u32(&format!("{side}.in.attention_mask"));
        let pos =
            r.0.get(&format!("{side}.in.position_ids"))
                .map(|p| p.to_dtype(DType::U32).unwrap());
        let input = DecoderInput {
            input_ids: &ids,
            attention_mask: Some(&mask),
            position_ids: pos.as_ref(),
        };
        let o = m
            .forward(
                input,
                Some(r.get(&format!("{side}.label"))),
                None,
                Mode::Eval,
            )
            .unwrap();
        // Padding rows attend to nothing; their values are arbitrary on both sides.
        assert_close(
            &format!("{name} {side} logits"),
            &real_positions(&o.logits, &mask),
            &real_positions(r.get(&format!("{side}.out.logits")), &mask),
            TOL,
        );
        let loss = o.loss.unwrap();
        assert_close(
            &format!("{name} {side} loss"),
            &loss,
            r.get(&format!("{side}.out.loss")),
            TOL,
        );
        check_gradients(
            &format!("{name} {side}"),
            &store,
            &loss,
            &r.grads(&format!("{side}.")),
            TOL,
        );
    }
}

#[test]
fn lm_head_gelu_new_tied() {
    check_lm("tiny-lm");
}

#[test]
fn lm_head_relu_untied_inverse_layer_scaling() {
    check_lm("tiny-relu-untied");
}

#[test]
fn sequence_classification_on_the_last_token() {
    for side in ["right", "left"] {
        let (cfg, store, r) = open("tiny-seq-cls", true);
        let m = Gpt2ForSequenceClassification::new(&cfg, &store.root()).unwrap();
        let ids = r.u32(&format!("{side}.in.input_ids"));
        let mask = r.u32(&format!("{side}.in.attention_mask"));
        let input = DecoderInput {
            input_ids: &ids,
            attention_mask: Some(&mask),
            position_ids: None,
        };
        let o = m
            .forward(input, Some(r.get(&format!("{side}.label"))), Mode::Eval)
            .unwrap();
        assert_close(
            &format!("seq-cls {side} logits"),
            &o.logits,
            r.get(&format!("{side}.out.logits")),
            TOL,
        );
        let loss = o.loss.unwrap();
        assert_close(
            &format!("seq-cls {side} loss"),
            &loss,
            r.get(&format!("{side}.out.loss")),
            TOL,
        );
        check_gradients(
            &format!("tiny-seq-cls {side}"),
            &store,
            &loss,
            &r.grads(&format!("{side}.")),
            TOL,
        );
    }
}

/// Feeding a left-padded batch one token at a time through the cache gives the logits of the
/// full forward pass.
#[test]
fn kv_cache_steps_equal_the_full_pass() {
    let (cfg, store, r) = open("tiny-lm", false);
    let m = Gpt2LMHeadModel::new(&cfg, &store.root()).unwrap();
    let ids = r.u32("left.in.input_ids");
    let mask = r.u32("left.in.attention_mask");
    let pos = r.u32("left.in.position_ids");
    let full = m
        .forward(
            DecoderInput {
                input_ids: &ids,
                attention_mask: Some(&mask),
                position_ids: Some(&pos),
            },
            None,
            None,
            Mode::Eval,
        )
        .unwrap()
        .logits;
    let seq = ids.dim(1).unwrap();
    let mut cache = m.new_cache();
    // A prefix of 3 positions at once, then one position per step.
    let mut start = 0;
    let mut steps = Vec::new();
    for len in std::iter::once(3).chain(std::iter::repeat_n(1, seq - 3)) {
        let step_ids = ids.narrow(1, start, len).unwrap();
        let step_pos = pos.narrow(1, start, len).unwrap();
        let seen = mask.narrow(1, 0, start + len).unwrap();
        let input = DecoderInput {
            input_ids: &step_ids,
            attention_mask: Some(&seen),
            position_ids: Some(&step_pos),
        };
        steps.push(
            m.forward(input, None, Some(&mut cache), Mode::Eval)
                .unwrap()
                .logits,
        );
        start += len;
    }
    assert_eq!(cache.seq_len(), seq);
    let stepped = Tensor::cat(&steps, 1).unwrap();
    assert_close(
        "cached vs full",
        &real_positions(&stepped, &mask),
        &real_positions(&full, &mask),
        1e-5,
    );
    // And the next-token choice at the last position is the same.
    let a = full
        .narrow(1, seq - 1, 1)
        .unwrap()
        .argmax(D::Minus1)
        .unwrap();
    let b = stepped
        .narrow(1, seq - 1, 1)
        .unwrap()
        .argmax(D::Minus1)
        .unwrap();
    assert_eq!(a.to_vec2::<u32>().unwrap(), b.to_vec2::<u32>().unwrap());
}

/// A `transformer.`-prefixed checkpoint loads as the bare `GPT2Model` (and the LM head's
/// decoder states are the bare model's).
#[test]
fn bare_model_from_a_prefixed_checkpoint() {
    let (cfg, store, r) = open("tiny-lm", false);
    let bare = ptm::models::gpt2::Gpt2Model::new(&cfg, &store.root()).unwrap();
    assert!(store.newly_initialized().is_empty());
    let ids = r.u32("right.in.input_ids");
    let mask = r.u32("right.in.attention_mask");
    let input = DecoderInput {
        input_ids: &ids,
        attention_mask: Some(&mask),
        position_ids: None,
    };
    let h = bare.forward(input, None, Mode::Eval).unwrap();
    let (cfg2, store2, _) = open("tiny-lm", false);
    let lm = Gpt2LMHeadModel::new(&cfg2, &store2.root()).unwrap();
    let h2 = lm.transformer.forward(input, None, Mode::Eval).unwrap();
    assert_close("bare vs head", &h, &h2, 0.0);
}
