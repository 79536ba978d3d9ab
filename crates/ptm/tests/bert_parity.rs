//! BERT against transformers: every head's outputs and loss, and the gradient of the loss with
//! respect to every parameter, on tiny random checkpoints made by
//! tools/reference/make_bert_fixtures.py.

mod common;

use candle_core::Tensor;
use common::{Reference, assert_close, check_gradients, fixtures};
use ptm::config::{BertConfig, ModelConfig};
use ptm::models::Pretrained;
use ptm::models::bert::*;
use ptm::nn::{DropoutRng, Mode, ParamBuilder, ParamStore, StoreOptions};

const TOL: f32 = 1e-4;

fn open(name: &str, trainable: bool) -> (BertConfig, ParamStore, Reference) {
    let dir = fixtures().join("bert").join(name);
    let p = Pretrained::from_dir(&dir).unwrap();
    let ModelConfig::Bert(cfg) = p.config.clone() else {
        panic!("not a BERT config")
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
                .join("bert")
                .join(format!("{name}.ref.safetensors")),
        ),
    )
}

/// Builds a model on a fixture, runs it, compares its outputs and loss, then checks that the
/// gradient of the loss reaches every parameter (finite, non-zero) and equals PyTorch's.
fn check<M>(
    name: &str,
    build: impl Fn(&BertConfig, &ParamBuilder) -> ptm::Result<M>,
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
fn pretraining_heads_and_gradients() {
    check("tiny-pretraining", BertForPreTraining::new, |m, r| {
        let o = m.forward(
            &r.input(),
            Some(&l(r, "mlm")),
            Some(&l(r, "nsp")),
            Mode::Eval,
        )?;
        Ok((
            o.loss.unwrap(),
            vec![
                ("prediction_logits", o.prediction_logits),
                ("seq_relationship_logits", o.seq_relationship_logits),
            ],
        ))
    });
}

#[test]
fn masked_lm() {
    check("tiny-mlm", BertForMaskedLM::new, |m, r| {
        let o = m.forward(&r.input(), Some(&l(r, "mlm")), Mode::Eval)?;
        Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
    });
}

/// The trainer's paths, which project only the labelled positions onto the vocabulary: the
/// same loss and gradients as PyTorch's loss over all logits.
#[test]
fn training_losses_at_labelled_positions_only() {
    check("tiny-mlm", BertForMaskedLM::new, |m, r| {
        Ok((
            m.masked_lm_loss(&r.input(), &l(r, "mlm"), Mode::Eval)?
                .unwrap(),
            vec![],
        ))
    });
    check("tiny-pretraining", BertForPreTraining::new, |m, r| {
        let (mlm, nsp_logits) = m.pretraining_losses(&r.input(), &l(r, "mlm"), Mode::Eval)?;
        let nsp = ptm::heads::cross_entropy_loss(&nsp_logits, &l(r, "nsp"))?;
        Ok((
            (mlm.unwrap() + nsp)?,
            vec![("seq_relationship_logits", nsp_logits)],
        ))
    });
}

#[test]
fn masked_lm_untied_gelu_new() {
    check("tiny-gelu-new-untied-mlm", BertForMaskedLM::new, |m, r| {
        let o = m.forward(&r.input(), Some(&l(r, "mlm")), Mode::Eval)?;
        Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
    });
}

#[test]
fn next_sentence_prediction() {
    check("tiny-nsp", BertForNextSentencePrediction::new, |m, r| {
        let o = m.forward(&r.input(), Some(&l(r, "nsp")), Mode::Eval)?;
        Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
    });
}

#[test]
fn sequence_classification() {
    check(
        "tiny-seq-cls",
        BertForSequenceClassification::new,
        |m, r| {
            let o = m.forward(&r.input(), Some(&l(r, "cls")), Mode::Eval)?;
            Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
        },
    );
}

#[test]
fn sequence_regression() {
    check(
        "tiny-gelu-new-regression",
        BertForSequenceClassification::new,
        |m, r| {
            let o = m.forward(&r.input(), Some(&l(r, "regression")), Mode::Eval)?;
            Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
        },
    );
}

#[test]
fn sequence_multi_label_relu() {
    check(
        "tiny-relu-multi-label",
        BertForSequenceClassification::new,
        |m, r| {
            let o = m.forward(&r.input(), Some(&l(r, "multi")), Mode::Eval)?;
            Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
        },
    );
}

#[test]
fn token_classification() {
    check("tiny-tok-cls", BertForTokenClassification::new, |m, r| {
        let o = m.forward(&r.input(), Some(&l(r, "tok")), Mode::Eval)?;
        Ok((o.loss.unwrap(), vec![("logits", o.logits)]))
    });
}

#[test]
fn question_answering() {
    check("tiny-qa", BertForQuestionAnswering::new, |m, r| {
        let (s, e) = (l(r, "start"), l(r, "end"));
        let o = m.forward(&r.input(), Some((&s, &e)), Mode::Eval)?;
        Ok((
            o.loss.unwrap(),
            vec![
                ("start_logits", o.start_logits),
                ("end_logits", o.end_logits),
            ],
        ))
    });
}

#[test]
fn bare_encoder_with_pooler() {
    check(
        "tiny-base",
        |c, vb| BertModel::new(c, vb, true),
        |m, r| {
            let o = m.forward(&r.input(), Mode::Eval)?;
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

/// The same base weights stored bare, with the `bert.` prefix, sharded and as a PyTorch
/// pickle all give the reference states, in inference (non-trainable) stores too.
#[test]
fn every_checkpoint_layout_gives_the_same_encoder() {
    let r = Reference::load(fixtures().join("bert/tiny-base.ref.safetensors"));
    for name in [
        "tiny-base",
        "tiny-pretraining",
        "tiny-base-sharded",
        "tiny-base-bin",
        "tiny-seq-cls",
    ] {
        let (cfg, store, _) = open_layout(name);
        let m = BertModel::new(&cfg, &store.root(), true).unwrap();
        let o = m.forward(&r.input(), Mode::Eval).unwrap();
        assert_close(
            &format!("{name} last_hidden_state"),
            &o.last_hidden_state,
            r.get("out.last_hidden_state"),
            TOL,
        );
        assert_close(
            &format!("{name} pooler"),
            &o.pooler_output.unwrap(),
            r.get("out.pooler_output"),
            TOL,
        );
    }
}

fn open_layout(name: &str) -> (BertConfig, ParamStore, ()) {
    let p = Pretrained::from_dir(&fixtures().join("bert").join(name)).unwrap();
    let ModelConfig::Bert(cfg) = p.config.clone() else {
        panic!("not a BERT config")
    };
    (cfg, p.store(&StoreOptions::default()).unwrap(), ())
}

/// A head on a checkpoint without it is initialised and reported; base weights must exist.
#[test]
fn missing_head_is_initialised_and_reported() {
    let (cfg, store, _) = open_layout("tiny-base");
    let m = BertForSequenceClassification::new(&cfg, &store.root()).unwrap();
    assert_eq!(
        store.newly_initialized(),
        vec!["classifier.weight", "classifier.bias"]
    );
    let r = Reference::load(fixtures().join("bert/tiny-base.ref.safetensors"));
    let logits = m.forward(&r.input(), None, Mode::Eval).unwrap().logits;
    assert_eq!(logits.dims(), &[3, 3]);
}

/// Dropout is active in train mode only, and seeded.
#[test]
fn train_mode_applies_seeded_dropout() {
    let (cfg, store, r) = open("tiny-seq-cls", false);
    let m = BertForSequenceClassification::new(&cfg, &store.root()).unwrap();
    let run = |mode| m.forward(&r.input(), None, mode).unwrap().logits;
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
