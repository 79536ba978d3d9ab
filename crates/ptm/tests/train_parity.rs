//! The optimizer against PyTorch: ten steps of AdamW with transformers' decay groups, a linear
//! warmup schedule and gradient clipping give the losses, learning rates, gradient norms and
//! final parameters of torch.optim.AdamW + get_linear_schedule_with_warmup, for the tiny BERT
//! pretraining loss (MLM + NSP), the tiny GPT-2 causal-LM loss and the tiny XLNet
//! permutation-LM loss (tools/reference/make_train_fixtures.py), and the tiny RoBERTa masked-LM
//! loss (tools/reference/make_roberta_fixtures.py).

mod common;

use candle_core::{DType, Tensor};
use common::{Reference, assert_close, fixtures, max_abs};
use ptm::config::ModelConfig;
use ptm::models::bert::BertForPreTraining;
use ptm::models::gpt2::{DecoderInput, Gpt2LMHeadModel};
use ptm::models::roberta::RobertaForMaskedLM;
use ptm::models::xlnet::{XlnetInput, XlnetLMHeadModel};
use ptm::models::{EncoderInput, Pretrained};
use ptm::nn::{Mode, ParamStore, StoreOptions};
use ptm::train::{AdamW, AdamWConfig, Schedule, ScheduleKind, clip_grad_norm, no_weight_decay};

fn trainable(dir: &str) -> (Pretrained, ParamStore) {
    let p = Pretrained::from_dir(&fixtures().join(dir)).unwrap();
    let store = p
        .store(&StoreOptions {
            trainable: true,
            ..Default::default()
        })
        .unwrap();
    (p, store)
}

/// The rows (along dim 0) of a parameter worth comparing; `None`: all of them.
type Rows<'a> = &'a dyn Fn(&str) -> Option<Vec<usize>>;

/// Runs the fixture's steps with `loss` and compares everything it recorded, in `rows`.
fn check(name: &str, store: &ParamStore, loss: &dyn Fn() -> Tensor, rows: Rows) {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("train/{name}-adamw.json"))).unwrap(),
    )
    .unwrap();
    let want = Reference::load(fixtures().join(format!("train/{name}-adamw.safetensors")));

    // The same decay groups as transformers' Trainer.
    let no_decay: Vec<String> = serde_json::from_value(v["no_decay"].clone()).unwrap();
    let mut ours: Vec<String> = store
        .params()
        .iter()
        .map(|p| p.name.clone())
        .filter(|n| no_weight_decay(n))
        .collect();
    ours.sort();
    assert_eq!(ours, no_decay, "{name}: decay groups");

    let config = AdamWConfig {
        weight_decay: v["weight_decay"].as_f64().unwrap(),
        ..Default::default()
    };
    let mut opt = AdamW::new(store.params(), config).unwrap();
    let schedule = Schedule {
        kind: ScheduleKind::Linear,
        base_lr: v["lr"].as_f64().unwrap(),
        warmup_steps: v["warmup"].as_u64().unwrap() as usize,
        total_steps: v["steps"].as_u64().unwrap() as usize,
    };
    let (steps, base_lr) = (schedule.total_steps, schedule.base_lr as f32);
    for step in 0..steps {
        let l = loss();
        let value = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let want_loss = v["losses"][step].as_f64().unwrap();
        assert!(
            (value - want_loss).abs() < 1e-4,
            "{name} step {step}: loss {value} vs {want_loss}"
        );
        let mut grads = l.backward().unwrap();
        let norm = clip_grad_norm(
            &mut grads,
            &store.params(),
            v["max_grad_norm"].as_f64().unwrap(),
        )
        .unwrap();
        let want_norm = v["grad_norms"][step].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() / want_norm < 1e-4,
            "{name} step {step}: grad norm {norm} vs {want_norm}"
        );
        let lr = schedule.lr(step);
        assert!(
            (lr - v["lrs"][step].as_f64().unwrap()).abs() < 1e-12,
            "{name} step {step}: lr {lr}"
        );
        opt.step(&grads, lr).unwrap();
    }
    assert_eq!(opt.steps_taken(), steps);
    for param in store.params() {
        if param.name.ends_with("attention.self.key.bias") {
            // Its gradient is zero in exact arithmetic (softmax ignores a shift shared by a row)
            // and rounding noise in floats; Adam divides that noise by its own scale, so both
            // sides move it by ~lr per step in directions set by rounding. Not comparable.
            continue;
        }
        let w = want.get(&param.name);
        let tol = 1e-5 * max_abs(w).max(1.0);
        let what = format!("{name}: {} after {steps} steps", param.name);
        if param.name.ends_with("attn.c_attn.bias") {
            // GPT-2 keeps the key bias as the middle third of c_attn.bias: same as above.
            let e = w.dim(0).unwrap() / 3;
            for start in [0, 2 * e] {
                assert_close(
                    &what,
                    &param.tensor.narrow(0, start, e).unwrap(),
                    &w.narrow(0, start, e).unwrap(),
                    tol,
                );
            }
            continue;
        }
        match rows(&param.name) {
            None => assert_close_but_few(&what, &param.tensor, w, tol, 0.01 * base_lr),
            Some(keep) => {
                let idx = Tensor::from_vec(
                    keep.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    keep.len(),
                    w.device(),
                )
                .unwrap();
                let (got, want) = (
                    param.tensor.index_select(&idx, 0).unwrap(),
                    w.index_select(&idx, 0).unwrap(),
                );
                assert_close_but_few(&what, &got, &want, tol, 0.01 * base_lr);
            }
        }
    }
}

/// Every element within `tol`, except that one in a thousand may be within `outlier_tol`: Adam
/// divides each gradient by its own running scale, so an element whose gradient is a nearly
/// cancelling sum turns the last-bit differences of another summation order (fused kernels
/// against PyTorch's) into a visible part of a step. A wrong gradient moves far more elements.
fn assert_close_but_few(what: &str, got: &Tensor, want: &Tensor, tol: f32, outlier_tol: f32) {
    let (a, b) = (
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{what}: sizes");
    let diffs: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
    let worst = diffs.iter().copied().fold(0f32, f32::max);
    let over = diffs.iter().filter(|&&d| d > tol).count();
    assert!(
        worst <= outlier_tol,
        "{what}: max abs diff {worst:e} > {outlier_tol:e}"
    );
    assert!(
        over * 1000 <= a.len(),
        "{what}: {over} of {} elements differ by more than {tol:e}",
        a.len()
    );
}

#[test]
fn ten_adamw_steps_on_bert_equal_pytorch() {
    let (p, store) = trainable("bert/tiny-pretraining");
    let ModelConfig::Bert(cfg) = &p.config else {
        panic!("not BERT")
    };
    let model = BertForPreTraining::new(cfg, &store.root()).unwrap();
    let data = Reference::load(fixtures().join("bert/tiny-pretraining.ref.safetensors"));
    let input = data.input();
    check(
        "bert",
        &store,
        &|| {
            let out = model
                .forward(
                    &input,
                    Some(data.get("label.mlm")),
                    Some(data.get("label.nsp")),
                    Mode::Eval,
                )
                .unwrap();
            out.loss.unwrap()
        },
        &|_| None,
    );
}

#[test]
fn ten_adamw_steps_on_gpt2_equal_pytorch() {
    let (p, store) = trainable("gpt2/tiny-lm");
    let ModelConfig::Gpt2(cfg) = &p.config else {
        panic!("not GPT-2")
    };
    let model = Gpt2LMHeadModel::new(cfg, &store.root()).unwrap();
    let data = Reference::load(fixtures().join("gpt2/tiny-lm.ref.safetensors"));
    let (ids, mask) = (
        data.u32("right.in.input_ids"),
        data.u32("right.in.attention_mask"),
    );
    check(
        "gpt2",
        &store,
        &|| {
            let input = DecoderInput {
                input_ids: &ids,
                attention_mask: Some(&mask),
                position_ids: None,
            };
            model
                .forward(input, Some(data.get("right.label")), None, Mode::Eval)
                .unwrap()
                .loss
                .unwrap()
        },
        &|_| None,
    );
}

#[test]
fn ten_adamw_steps_on_xlnet_plm_equal_pytorch() {
    let (p, store) = trainable("xlnet/bi");
    let ModelConfig::Xlnet(cfg) = &p.config else {
        panic!("not XLNet")
    };
    let model = XlnetLMHeadModel::new(cfg, &store.root()).unwrap();
    let data = Reference::load(fixtures().join("xlnet/bi.ref.safetensors"));
    let ids = data.u32("plm.input_ids");
    check(
        "xlnet",
        &store,
        &|| {
            let input = XlnetInput {
                input_ids: Some(&ids),
                perm_mask: Some(data.get("plm.perm_mask")),
                target_mapping: Some(data.get("plm.target_mapping")),
                ..Default::default()
            };
            model
                .forward(input, Some(data.get("plm.labels")), Mode::Eval)
                .unwrap()
                .loss
                .unwrap()
        },
        &|name| {
            // The slowest sinusoids of the relative encoding barely change over a few positions, so
            // the rows of `r` they feed shift every score of a row alike, which softmax ignores:
            // their gradients are rounding noise (1e-7 of the largest), which Adam scales up to
            // steps of either sign. Compare the rows whose first gradient is at least 1e-2 of it.
            if !name.ends_with("rel_attn.r") {
                return None;
            }
            let g = data
                .get(&format!("grad.{name}"))
                .abs()
                .unwrap()
                .max_keepdim(2)
                .unwrap()
                .max_keepdim(1)
                .unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let top = g.iter().copied().fold(0f32, f32::max);
            Some((0..g.len()).filter(|&r| g[r] >= 1e-2 * top).collect())
        },
    );
}

#[test]
fn ten_adamw_steps_on_roberta_mlm_equal_pytorch() {
    let (p, store) = trainable("roberta/tiny-mlm");
    let ModelConfig::Roberta(cfg) = &p.config else {
        panic!("not RoBERTa")
    };
    let model = RobertaForMaskedLM::new(cfg, &store.root()).unwrap();
    let data = Reference::load(fixtures().join("roberta/tiny-mlm.ref.safetensors"));
    let input = EncoderInput {
        token_type_ids: None,
        ..data.input()
    };
    check(
        "roberta",
        &store,
        &|| {
            model
                .forward(&input, Some(data.get("label.mlm")), Mode::Eval)
                .unwrap()
                .loss
                .unwrap()
        },
        &|_| None,
    );
}
