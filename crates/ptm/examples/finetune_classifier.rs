//! Fine-tune a text classifier in about 30 lines: a tiny BERT (random weights, the repository's
//! WordPiece tokenizer) on the SMS spam subset, then its accuracy on the held-out messages.
//! With a pretrained model directory, `Pretrained::open` it instead of building one from
//! a config.
//!
//! cargo run --release --example finetune_classifier -- [STEPS]

use std::path::Path;

use ptm::config::ModelConfig;
use ptm::finetune::{LabelSet, seq_cls};
use ptm::models::auto;
use ptm::nn::{ParamStore, StoreOptions};
use ptm::tokenizer::Tokenizer;
use ptm::train::{AdamWConfig, ModelSpec, Schedule, ScheduleKind, TrainArgs, train};

fn main() -> ptm::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let data = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data"));
    let tokenizer = Tokenizer::from_dir(&data.join("tokenizer"))?;
    let labels = LabelSet::from_file(&data.join("sms_spam/labels.txt"))?;
    let mut config = ModelConfig::from_file(&data.join("tiny-bert.json"))?;
    config.common_mut().id2label = labels.names.clone();

    let train_set = seq_cls::load(
        &data.join("sms_spam/train.jsonl"),
        &tokenizer,
        64,
        &labels,
        true,
    )?;
    let test_set = seq_cls::load(
        &data.join("sms_spam/test.jsonl"),
        &tokenizer,
        64,
        &labels,
        true,
    )?;
    let opts = StoreOptions {
        trainable: true,
        ..Default::default()
    };
    let store = ParamStore::new(None, &[auto::family(&config)?.base_model_prefix()], &opts);
    let model = auto::sequence_classifier(&config, &store.root())?;

    let pad = tokenizer.pad_spec();
    let objective = seq_cls::SeqClsObjective {
        model: model.as_ref(),
        data: &train_set,
        pad,
        class_weights: None,
    };
    let output = tempfile::tempdir().map_err(|e| ptm::Error::io("(temp dir)", e))?;
    let args = TrainArgs {
        output: output.path().to_path_buf(),
        max_steps: steps,
        batch_size: 16,
        grad_accum: 1,
        schedule: Schedule {
            kind: ScheduleKind::Linear,
            base_lr: 5e-4,
            warmup_steps: steps / 10,
            total_steps: steps,
        },
        optimizer: AdamWConfig::default(),
        max_grad_norm: Some(1.0),
        seed: 42,
        save_every: 0,
        keep_last: 1,
        log_every: 20,
        eval_every: 0,
        eval_at_start: false,
        world: None,
        best: None,
        data_fingerprint: None,
    };
    let spec = ModelSpec {
        config: &config,
        architecture: model.architecture(),
        store: &store,
        tokenizer: Some(&tokenizer),
    };
    train(&objective, None, &spec, &args, None, &mut |log| {
        println!("step {} loss {:.4}", log.step, log.loss)
    })?;

    let probs = seq_cls::predict(model.as_ref(), &test_set, pad, 32, None)?;
    let (report, _) = seq_cls::report(&test_set, &labels, &probs)?;
    println!(
        "held-out accuracy {:.4} on {} messages",
        report.accuracy,
        test_set.records.len()
    );
    Ok(())
}
