//! XLNet against transformers (tools/reference/make_xlnet_fixtures.py), for attn_type bi (with
//! memory), uni (same_length, clamp_len, reuse_len) and bi_data: the content stream over a
//! padded batch with segment ids, the next segment reading the memory, and the two streams with
//! a permutation mask and target mapping, whose PLM loss and every gradient must match; and the
//! sequence-classification, token-classification and simple QA heads with their losses and
//! gradients on a left-padded batch.

mod common;

use candle_core::{DType, Tensor};
use common::{Reference, assert_close, check_gradients, fixtures};
use ptm::config::{ModelConfig, XlnetConfig};
use ptm::models::Pretrained;
use ptm::models::xlnet::{
    XlnetForQuestionAnsweringSimple, XlnetForSequenceClassification, XlnetForTokenClassification,
    XlnetInput, XlnetLMHeadModel,
};
use ptm::nn::{Mode, ParamStore, StoreOptions};

const TOL: f32 = 1e-4;

fn open(name: &str) -> (XlnetConfig, ParamStore, Reference) {
    let p = Pretrained::from_dir(&fixtures().join("xlnet").join(name)).unwrap();
    let ModelConfig::Xlnet(cfg) = p.config.clone() else {
        panic!("not an XLNet config")
    };
    let store = p
        .store(&StoreOptions {
            trainable: true,
            ..Default::default()
        })
        .unwrap();
    (
        cfg,
        store,
        Reference::load(
            fixtures()
                .join("xlnet")
                .join(format!("{name}.ref.safetensors")),
        ),
    )
}

fn mems(r: &Reference, prefix: &str, layers: usize) -> Vec<Tensor> {
    (0..layers)
        .map(|l| r.get(&format!("{prefix}.mems.{l}")).clone())
        .collect()
}

fn check(name: &str) {
    let (cfg, store, r) = open(name);
    let m = XlnetLMHeadModel::new(&cfg, &store.root()).unwrap();
    let layers = cfg.n_layer;

    // Segment 1: content stream, padding, segments; the memory it leaves.
    let (ids, mask, tt) = (
        r.u32("seg1.input_ids"),
        r.get("seg1.attention_mask").clone(),
        r.u32("seg1.token_type_ids"),
    );
    let input = XlnetInput {
        input_ids: Some(&ids),
        attention_mask: Some(&mask),
        token_type_ids: Some(&tt),
        use_mems: true,
        ..Default::default()
    };
    let o = m.forward(input, None, Mode::Eval).unwrap();
    assert_close(
        &format!("{name} seg1 logits"),
        &o.logits,
        r.get("seg1.logits"),
        TOL,
    );
    for (l, (got, want)) in o.mems.iter().zip(mems(&r, "seg1", layers)).enumerate() {
        assert_close(&format!("{name} seg1 mems {l}"), got, &want, TOL);
    }

    // Segment 2 attends to segment 1's memory.
    let ids2 = r.u32("seg2.input_ids");
    let prev = mems(&r, "seg1", layers);
    let input = XlnetInput {
        input_ids: Some(&ids2),
        mems: Some(&prev),
        use_mems: true,
        ..Default::default()
    };
    let o2 = m.transformer.forward(input, Mode::Eval).unwrap();
    assert_close(
        &format!("{name} seg2 hidden"),
        &o2.last_hidden_state,
        r.get("seg2.hidden"),
        TOL,
    );
    for (l, (got, want)) in o2.mems.iter().zip(mems(&r, "seg2", layers)).enumerate() {
        assert_close(&format!("{name} seg2 mems {l}"), got, &want, TOL);
    }

    // Two streams: the query stream predicts the targets the mapping picks.
    let (ids3, perm, tm) = (
        r.u32("plm.input_ids"),
        r.get("plm.perm_mask").clone(),
        r.get("plm.target_mapping").clone(),
    );
    let labels = r.get("plm.labels").to_dtype(DType::I64).unwrap();
    let input = XlnetInput {
        input_ids: Some(&ids3),
        perm_mask: Some(&perm),
        target_mapping: Some(&tm),
        ..Default::default()
    };
    let o3 = m.forward(input, Some(&labels), Mode::Eval).unwrap();
    assert_close(
        &format!("{name} plm logits"),
        &o3.logits,
        r.get("plm.logits"),
        TOL,
    );
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

/// A task head's fixture: its config and store, the reference, and the padded batch it reads.
fn head(name: &str) -> (XlnetConfig, ParamStore, Reference, [Tensor; 3]) {
    let (cfg, store, r) = open(name);
    let batch = [
        r.u32("input_ids"),
        r.get("attention_mask").clone(),
        r.u32("token_type_ids"),
    ];
    (cfg, store, r, batch)
}

fn input(batch: &[Tensor; 3]) -> XlnetInput<'_> {
    XlnetInput {
        input_ids: Some(&batch[0]),
        attention_mask: Some(&batch[1]),
        token_type_ids: Some(&batch[2]),
        ..Default::default()
    }
}

#[test]
fn sequence_classification_on_the_last_token() {
    let (cfg, store, r, batch) = head("seq-cls");
    let m = XlnetForSequenceClassification::new(&cfg, &store.root()).unwrap();
    let labels = r.get("labels").to_dtype(DType::I64).unwrap();
    let o = m.forward(input(&batch), Some(&labels), Mode::Eval).unwrap();
    assert_close("seq-cls logits", &o.logits, r.get("logits"), TOL);
    let loss = o.loss.unwrap();
    assert_close("seq-cls loss", &loss, r.get("loss"), TOL);
    check_gradients("seq-cls", &store, &loss, &r.grads(""), TOL);
}

#[test]
fn token_classification() {
    let (cfg, store, r, batch) = head("token-cls");
    let m = XlnetForTokenClassification::new(&cfg, &store.root()).unwrap();
    let labels = r.get("labels").to_dtype(DType::I64).unwrap();
    let o = m.forward(input(&batch), Some(&labels), Mode::Eval).unwrap();
    assert_close("token-cls logits", &o.logits, r.get("logits"), TOL);
    let loss = o.loss.unwrap();
    assert_close("token-cls loss", &loss, r.get("loss"), TOL);
    check_gradients("token-cls", &store, &loss, &r.grads(""), TOL);
}

#[test]
fn question_answering_simple() {
    let (cfg, store, r, batch) = head("qa");
    let m = XlnetForQuestionAnsweringSimple::new(&cfg, &store.root()).unwrap();
    let (start, end) = (
        r.get("start_positions").to_dtype(DType::I64).unwrap(),
        r.get("end_positions").to_dtype(DType::I64).unwrap(),
    );
    let o = m
        .forward(input(&batch), Some((&start, &end)), Mode::Eval)
        .unwrap();
    assert_close(
        "qa start logits",
        &o.start_logits,
        r.get("start_logits"),
        TOL,
    );
    assert_close("qa end logits", &o.end_logits, r.get("end_logits"), TOL);
    let loss = o.loss.unwrap();
    assert_close("qa loss", &loss, r.get("loss"), TOL);
    check_gradients("qa", &store, &loss, &r.grads(""), TOL);
}

/// Inputs that do not fit the model are refused with what was expected.
#[test]
fn bad_inputs_name_the_expected_shape() {
    let (cfg, store, r) = open("bi");
    let m = XlnetLMHeadModel::new(&cfg, &store.root()).unwrap();
    let ids = r.u32("seg1.input_ids"); // (2, 7)
    let err = |input: XlnetInput| {
        m.forward(input, None, Mode::Eval)
            .err()
            .expect("refused")
            .to_string()
    };
    let perm = Tensor::zeros((2, 6, 6), DType::F32, ids.device()).unwrap();
    let e = err(XlnetInput {
        input_ids: Some(&ids),
        perm_mask: Some(&perm),
        ..Default::default()
    });
    assert!(e.contains("perm_mask") && e.contains("[2, 7, 7]"), "{e}");
    let tm = Tensor::zeros((2, 3, 5), DType::F32, ids.device()).unwrap();
    let e = err(XlnetInput {
        input_ids: Some(&ids),
        target_mapping: Some(&tm),
        ..Default::default()
    });
    assert!(
        e.contains("target_mapping") && e.contains("num_predict, 7]"),
        "{e}"
    );
    let one_layer = vec![Tensor::zeros((2, 3, cfg.d_model), DType::F32, ids.device()).unwrap()];
    let e = err(XlnetInput {
        input_ids: Some(&ids),
        mems: Some(&one_layer),
        ..Default::default()
    });
    assert!(
        e.contains("mems holds 1 layers") && e.contains("has 2"),
        "{e}"
    );
    let wide = vec![Tensor::zeros((2, 3, cfg.d_model + 1), DType::F32, ids.device()).unwrap(); 2];
    let e = err(XlnetInput {
        input_ids: Some(&ids),
        mems: Some(&wide),
        ..Default::default()
    });
    assert!(
        e.contains("mems have shape") && e.contains("mem_len"),
        "{e}"
    );
    let (cfg, store, _) = open("bidata");
    let m = XlnetLMHeadModel::new(&cfg, &store.root()).unwrap();
    let odd = ids.narrow(0, 0, 1).unwrap();
    let e = m
        .forward(
            XlnetInput {
                input_ids: Some(&odd),
                ..Default::default()
            },
            None,
            Mode::Eval,
        )
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("bi_data needs an even batch size"), "{e}");
}
