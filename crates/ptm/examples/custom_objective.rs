//! A custom data set and a custom pretraining objective plugged into ptm's trainer through its
//! public traits: `data::Examples` (indexed token-id examples) and `train::Objective` (a loss
//! over a batch of example indices). Here: the sentences of a novel, each cut to 32 tokens,
//! and a causal-LM loss that skips the first 4 tokens of every example (a "warm start" loss),
//! on a tiny GPT-2 built from a config in code.
//!
//! cargo run --release --example custom_objective -- [STEPS]

use std::path::Path;

use candle_core::Tensor;
use ptm::config::ModelConfig;
use ptm::data::Examples;
use ptm::models::auto;
use ptm::models::traits::CausalLm;
use ptm::nn::{Mode, ParamStore, StoreOptions};
use ptm::tokenizer::Tokenizer;
use ptm::train::{
    AdamWConfig, LossTerms, ModelSpec, Objective, Schedule, ScheduleKind, TrainArgs, train,
};

const LEN: usize = 32;
const SKIP: usize = 4;

/// The data set: fixed-length windows of token ids, one per sentence long enough.
struct Sentences(Vec<Vec<u32>>);

impl Examples for Sentences {
    fn num_examples(&self) -> usize {
        self.0.len()
    }
    fn example(&self, i: usize) -> Vec<u32> {
        self.0[i].clone()
    }
}

/// The objective: next-token cross-entropy on positions SKIP.. only (-100 elsewhere).
struct WarmStartLm<'a> {
    model: &'a dyn CausalLm,
    data: &'a dyn Examples,
}

impl Objective for WarmStartLm<'_> {
    fn num_examples(&self) -> usize {
        self.data.num_examples()
    }

    fn loss(&self, examples: &[usize], _epoch: usize, mode: Mode) -> ptm::Result<LossTerms> {
        let device = self.model.device();
        let ids: Vec<u32> = examples
            .iter()
            .flat_map(|&i| self.data.example(i))
            .collect();
        let labels: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(k, &t)| if k % LEN < SKIP { -100 } else { i64::from(t) })
            .collect();
        let b = examples.len();
        let input_ids = Tensor::from_vec(ids, (b, LEN), &device)?; // (batch, LEN)
        let labels = Tensor::from_vec(labels, (b, LEN), &device)?;
        Ok(LossTerms {
            loss: self.model.causal_lm_loss(&input_ids, &labels, mode)?,
            count: b * (LEN - SKIP),
            tokens: b * LEN,
        })
    }
}

fn main() -> ptm::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let data = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data"));
    let tokenizer = Tokenizer::from_dir(&data.join("tokenizer"))?;
    let text = std::fs::read_to_string(data.join("austen/persuasion.txt"))
        .map_err(|e| ptm::Error::io(data.join("austen/persuasion.txt"), e))?;
    let sentences: Vec<&str> = text.split_terminator(['.', '!', '?']).collect();
    let ids = tokenizer.encode_plain(&sentences)?;
    let set = Sentences(
        ids.into_iter()
            .filter(|s| s.len() >= LEN)
            .map(|s| s[..LEN].to_vec())
            .collect(),
    );
    println!("{} sentences of {LEN} tokens", set.num_examples());

    let config = ModelConfig::from_value(
        serde_json::json!({"model_type": "gpt2", "vocab_size": tokenizer.vocab_size(),
            "n_positions": 64, "n_embd": 64, "n_layer": 2, "n_head": 2}),
        Path::new("(in code)"),
    )?;
    let opts = StoreOptions {
        trainable: true,
        ..Default::default()
    };
    let store = ParamStore::new(None, &[auto::family(&config)?.base_model_prefix()], &opts);
    let model = auto::causal_lm(&config, &store.root())?;
    let objective = WarmStartLm {
        model: model.as_ref(),
        data: &set,
    };

    let output = tempfile::tempdir().map_err(|e| ptm::Error::io("(temp dir)", e))?;
    let args = TrainArgs {
        output: output.path().to_path_buf(),
        max_steps: steps,
        batch_size: 8,
        grad_accum: 1,
        schedule: Schedule {
            kind: ScheduleKind::Constant,
            base_lr: 1e-3,
            warmup_steps: 0,
            total_steps: steps,
        },
        optimizer: AdamWConfig::default(),
        max_grad_norm: Some(1.0),
        seed: 7,
        save_every: 0,
        keep_last: 1,
        log_every: 10,
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
    let outcome = train(&objective, None, &spec, &args, None, &mut |log| {
        println!("step {:3} loss {:.4}", log.step, log.loss)
    })?;
    if let (Some(first), Some(last)) = (outcome.losses.first(), outcome.losses.last()) {
        println!(
            "loss {first:.4} -> {last:.4} over {} steps",
            outcome.losses.len()
        );
    }
    Ok(())
}
