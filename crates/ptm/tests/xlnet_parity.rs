//! XLNet against transformers (tools/reference/make_xlnet_fixtures.py), for attn_type bi (with
//! memory), uni (same_length, clamp_len, reuse_len) and bi_data: the content stream over a
//! padded batch with segment ids, the next segment reading the memory, and the two streams with
//! a permutation mask and target mapping, whose PLM loss and every gradient must match.

mod common;

use candle_core::{DType, Tensor};
use common::{Reference, assert_close, check_gradients, fixtures};
use ptm::config::{ModelConfig, XlnetConfig};
use ptm::models::Pretrained;
use ptm::models::xlnet::{XlnetInput, XlnetLMHeadModel};
use ptm::nn::{Mode, ParamStore, StoreOptions};

const TOL: f32 = 1e-4;

fn open(name: &str) -> (XlnetConfig, ParamStore, Reference) {
    let p = Pretrained::from_dir(&fixtures().join("xlnet").join(name)).unwrap();
    let ModelConfig::Xlnet(cfg) = p.config.clone() else { panic!("not an XLNet config") };
    let store = p.store(&StoreOptions { trainable: true, ..Default::default() }).unwrap();
    (cfg, store, Reference::load(fixtures().join("xlnet").join(format!("{name}.ref.safetensors"))))
}

fn mems(r: &Reference, prefix: &str, layers: usize) -> Vec<Tensor> {
    (0..layers).map(|l| r.get(&format!("{prefix}.mems.{l}")).clone()).collect()
}

fn check(name: &str) {
    let (cfg, store, r) = open(name);
    let m = XlnetLMHeadModel::new(&cfg, &store.root()).unwrap();
    let layers = cfg.n_layer;

    // Segment 1: content stream, padding, segments; the memory it leaves.
    let (ids, mask, tt) = (r.u32("seg1.input_ids"), r.get("seg1.attention_mask").clone(), r.u32("seg1.token_type_ids"));
    let input = XlnetInput {
        input_ids: Some(&ids),
        attention_mask: Some(&mask),
        token_type_ids: Some(&tt),
        use_mems: true,
        ..Default::default()
    };
    let o = m.forward(input, None, Mode::Eval).unwrap();
    assert_close(&format!("{name} seg1 logits"), &o.logits, r.get("seg1.logits"), TOL);
    for (l, (got, want)) in o.mems.iter().zip(mems(&r, "seg1", layers)).enumerate() {
        assert_close(&format!("{name} seg1 mems {l}"), got, &want, TOL);
    }

    // Segment 2 attends to segment 1's memory.
    let ids2 = r.u32("seg2.input_ids");
    let prev = mems(&r, "seg1", layers);
    let input = XlnetInput { input_ids: Some(&ids2), mems: Some(&prev), use_mems: true, ..Default::default() };
    let o2 = m.transformer.forward(input, Mode::Eval).unwrap();
    assert_close(&format!("{name} seg2 hidden"), &o2.last_hidden_state, r.get("seg2.hidden"), TOL);
    for (l, (got, want)) in o2.mems.iter().zip(mems(&r, "seg2", layers)).enumerate() {
        assert_close(&format!("{name} seg2 mems {l}"), got, &want, TOL);
    }

    // Two streams: the query stream predicts the targets the mapping picks.
    let (ids3, perm, tm) = (r.u32("plm.input_ids"), r.get("plm.perm_mask").clone(), r.get("plm.target_mapping").clone());
    let labels = r.get("plm.labels").to_dtype(DType::I64).unwrap();
    let input = XlnetInput { input_ids: Some(&ids3), perm_mask: Some(&perm), target_mapping: Some(&tm), ..Default::default() };
    let o3 = m.forward(input, Some(&labels), Mode::Eval).unwrap();
    assert_close(&format!("{name} plm logits"), &o3.logits, r.get("plm.logits"), TOL);
    let loss = o3.loss.unwrap();
    assert_close(&format!("{name} plm loss"), &loss, r.get("plm.loss"), TOL);
    check_gradients(&format!("{name} plm"), &store, &loss, &r.grads(""), TOL);
}

#[test]
fn attn_type_bi_with_memory() {
    check("bi");
}

#[test]
fn attn_type_uni_same_length_clamped() {
    check("uni");
}

#[test]
fn bi_data_both_directions() {
    check("bidata");
}
