//! `ptm bench`: the standard speed workloads of BENCHMARKS.md, timed in this process on models
//! of the benchmark shapes with random weights (speed does not depend on the weights' values,
//! so nothing is downloaded) and seeded random token ids. Medians of rounds after a warm-up.
//! bench/*.py time the same shapes side by side with PyTorch and ONNX Runtime.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use ptm::config::ModelConfig;
use ptm::generate::{GenerationConfig, generate};
use ptm::models::EncoderInput;
use ptm::models::auto;
use ptm::models::traits::Backbone;
use ptm::nn::{Mode, ParamStore, Precision, StoreOptions};
use ptm::train::{AdamW, AdamWConfig, clip_grad_norm};
use serde_json::json;

use super::Format;

/// Runs speed workloads (all by default) and prints their medians.
#[derive(clap::Args)]
pub struct Args {
    /// Timed rounds per workload (after one warm-up).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Workloads to run (default: all): encode-32x128, encode-1x16, encode-mixed,
    /// train-bert-mlm, train-gpt2-clm, decode-gpt2.
    #[arg(long = "only", num_args = 1..)]
    only: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Linear-layer weights of every workload (int8 skips the training workloads).
    #[command(flatten)]
    dtype: super::DtypeArg,
}

const WORKLOADS: &[(&str, &str, &str)] = &[
    (
        "encode-32x128",
        "MiniLM-L6 encoder, batch 32 x 128 tokens",
        "sentences/s",
    ),
    (
        "encode-1x16",
        "MiniLM-L6 encoder, batch 1 x 16 tokens",
        "ms/text",
    ),
    (
        "encode-mixed",
        "MiniLM-L6 encoder, 512 texts of 8-128 tokens, length-bucketed batches of 32",
        "sentences/s",
    ),
    (
        "train-bert-mlm",
        "small BERT MLM training step (256 hidden, 4 layers, vocab 30522), 16 x 128",
        "tokens/s",
    ),
    (
        "train-gpt2-clm",
        "small GPT-2 CLM training step (256 hidden, 4 layers, vocab 50257), 16 x 128",
        "tokens/s",
    ),
    (
        "decode-gpt2",
        "GPT-2 small (124M) greedy decoding, 32-token prompt, 32 new tokens",
        "tokens/s",
    ),
];

pub fn run(a: Args) -> Result<()> {
    for name in &a.only {
        if !WORKLOADS.iter().any(|(n, _, _)| n == name) {
            let names: Vec<&str> = WORKLOADS.iter().map(|(n, _, _)| *n).collect();
            bail!("unknown workload {name:?}; known: {}", names.join(", "));
        }
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut results = Vec::new();
    for &(name, what, unit) in WORKLOADS {
        let named = a.only.iter().any(|n| n == name);
        let inference_only = a.dtype.dtype == Precision::Int8 && name.starts_with("train-");
        if (inference_only || !a.only.is_empty()) && !named {
            continue;
        }
        let mut work = workload(name, a.dtype.dtype)?;
        work()?; // warm-up: first-touch allocation, thread pools
        let mut values = Vec::with_capacity(a.rounds);
        for _ in 0..a.rounds {
            values.push(work()?);
        }
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        if a.format == Format::Text {
            println!("{name:<16} {median:>10.2} {unit:<12} {what}");
        }
        results.push(json!({"workload": name, "median": median, "unit": unit, "rounds": values, "what": what}));
    }
    if a.format == Format::Json {
        let threads = rayon::current_num_threads();
        let dtype = a.dtype.dtype.to_string();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"threads": threads, "dtype": dtype, "results": results})
            )?
        );
    }
    Ok(())
}

/// A workload: each call runs it once and returns its figure in the workload's unit.
type Workload = Box<dyn FnMut() -> Result<f64>>;

fn workload(name: &str, precision: Precision) -> Result<Workload> {
    let inference = StoreOptions {
        precision,
        ..Default::default()
    };
    let training = StoreOptions {
        trainable: true,
        precision,
        ..Default::default()
    };
    Ok(match name {
        "encode-32x128" => {
            let model = minilm(&inference)?;
            let input = encoder_input(&[128; 32], 30522, 1)?;
            Box::new(move || {
                let t = Instant::now();
                model.last_hidden_state(&input, Mode::Eval)?;
                Ok(32.0 / t.elapsed().as_secs_f64())
            })
        }
        "encode-1x16" => {
            let model = minilm(&inference)?;
            let inputs: Vec<EncoderInput> = (0..50)
                .map(|i| encoder_input(&[16], 30522, i))
                .collect::<Result<_>>()?;
            Box::new(move || {
                let t = Instant::now();
                for input in &inputs {
                    model.last_hidden_state(input, Mode::Eval)?;
                }
                Ok(1000.0 * t.elapsed().as_secs_f64() / inputs.len() as f64)
            })
        }
        "encode-mixed" => {
            let model = minilm(&inference)?;
            let mut lengths: Vec<usize> = (0..512u64)
                .map(|i| 8 + (mix(i, 7) % 121) as usize)
                .collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            let batches: Vec<EncoderInput> = lengths
                .chunks(32)
                .enumerate()
                .map(|(i, l)| encoder_input(l, 30522, i as u64))
                .collect::<Result<_>>()?;
            Box::new(move || {
                let t = Instant::now();
                for input in &batches {
                    model.last_hidden_state(input, Mode::Eval)?;
                }
                Ok(512.0 / t.elapsed().as_secs_f64())
            })
        }
        "train-bert-mlm" => {
            let cfg = bert(
                json!({"vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 4,
                "num_attention_heads": 4, "intermediate_size": 1024}),
            )?;
            let store = new_store(&cfg, &training)?;
            let model = auto::masked_lm(&cfg, &store.root())?;
            let mut opt = AdamW::new(store.params(), AdamWConfig::default())?;
            let input = encoder_input(&[128; 16], 30522, 3)?;
            // 15% of the positions carry a target, as the MLM collator chooses them.
            let labels: Vec<i64> = (0..16 * 128u64)
                .map(|i| {
                    if mix(i, 5) % 100 < 15 {
                        (mix(i, 6) % 30522) as i64
                    } else {
                        -100
                    }
                })
                .collect();
            let labels = Tensor::from_vec(labels, (16, 128), &Device::Cpu)?;
            Box::new(move || {
                let t = Instant::now();
                let loss = model
                    .masked_lm_loss(&input, &labels, Mode::Eval)?
                    .context("no labelled position")?;
                let mut grads = loss.backward()?;
                clip_grad_norm(&mut grads, &store.params(), 1.0)?;
                opt.step(&grads, 1e-4)?;
                Ok(16.0 * 128.0 / t.elapsed().as_secs_f64())
            })
        }
        "train-gpt2-clm" => {
            let cfg = gpt2(
                json!({"vocab_size": 50257, "n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 512}),
            )?;
            let store = new_store(&cfg, &training)?;
            let model = auto::causal_lm(&cfg, &store.root())?;
            let mut opt = AdamW::new(store.params(), AdamWConfig::default())?;
            let ids = random_ids(16, 128, 50257, 4)?;
            let labels = ids.to_dtype(DType::I64)?;
            Box::new(move || {
                let t = Instant::now();
                let loss = model.causal_lm_loss(&ids, &labels, Mode::Eval)?;
                let mut grads = loss.backward()?;
                clip_grad_norm(&mut grads, &store.params(), 1.0)?;
                opt.step(&grads, 1e-4)?;
                Ok(16.0 * 128.0 / t.elapsed().as_secs_f64())
            })
        }
        "decode-gpt2" => {
            let cfg = gpt2(
                json!({"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024}),
            )?;
            let store = new_store(&cfg, &inference)?;
            let model = auto::causal_lm(&cfg, &store.root())?;
            let prompt: Vec<u32> = (0..32u64).map(|i| (mix(i, 8) % 50257) as u32).collect();
            let generation = GenerationConfig {
                max_new_tokens: Some(32),
                min_new_tokens: 32,
                ..Default::default()
            };
            Box::new(move || {
                let t = Instant::now();
                let out = generate(
                    model.as_ref(),
                    std::slice::from_ref(&prompt),
                    &generation,
                    None,
                    &mut |_, _| {},
                )?;
                let new_tokens = out.iter().map(|g| g.token_ids.len()).sum::<usize>();
                Ok(new_tokens as f64 / t.elapsed().as_secs_f64())
            })
        }
        other => bail!("unknown workload {other:?}"),
    })
}

/// all-MiniLM-L6-v2's shape: 384 hidden, 6 layers, 12 heads, FFN 1536.
fn minilm(opts: &StoreOptions) -> Result<Box<dyn Backbone>> {
    let cfg = bert(
        json!({"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536}),
    )?;
    let store = new_store(&cfg, opts)?;
    Ok(auto::backbone(&cfg, &store.root(), false)?)
}

/// Randomly initialised parameters for `config`'s family (built through the registry, as a
/// user's model is).
fn new_store(config: &ModelConfig, opts: &StoreOptions) -> Result<ParamStore> {
    Ok(ParamStore::new(
        None,
        &[auto::family(config)?.base_model_prefix()],
        opts,
    ))
}

/// A config of `model_type` from its benchmark defaults (dropout off) and `fields`.
fn config(
    model_type: &str,
    defaults: serde_json::Value,
    fields: serde_json::Value,
) -> Result<ModelConfig> {
    let mut value = json!({"model_type": model_type});
    for extra in [defaults, fields] {
        if let (Some(map), serde_json::Value::Object(more)) = (value.as_object_mut(), extra) {
            map.extend(more);
        }
    }
    Ok(ModelConfig::from_value(value, Path::new("(bench)"))?)
}

fn bert(fields: serde_json::Value) -> Result<ModelConfig> {
    let defaults = json!({"max_position_embeddings": 512, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0});
    config("bert", defaults, fields)
}

fn gpt2(fields: serde_json::Value) -> Result<ModelConfig> {
    let defaults = json!({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0});
    config("gpt2", defaults, fields)
}

/// A batch of rows of the given lengths, right-padded to the longest.
fn encoder_input(lengths: &[usize], vocab: u64, seed: u64) -> Result<EncoderInput> {
    let (b, len) = (lengths.len(), lengths.iter().copied().max().unwrap_or(0));
    let (mut ids, mut mask) = (Vec::with_capacity(b * len), Vec::with_capacity(b * len));
    for (row, &l) in lengths.iter().enumerate() {
        for j in 0..len {
            let real = j < l;
            ids.push(if real {
                (mix((row * len + j) as u64, seed) % vocab) as u32
            } else {
                0
            });
            mask.push(u32::from(real));
        }
    }
    Ok(EncoderInput {
        input_ids: Tensor::from_vec(ids, (b, len), &Device::Cpu)?,
        attention_mask: Some(Tensor::from_vec(mask, (b, len), &Device::Cpu)?),
        token_type_ids: None,
    })
}

fn random_ids(b: usize, len: usize, vocab: u64, seed: u64) -> Result<Tensor> {
    let ids: Vec<u32> = (0..(b * len) as u64)
        .map(|i| (mix(i, seed) % vocab) as u32)
        .collect();
    Ok(Tensor::from_vec(ids, (b, len), &Device::Cpu)?)
}

/// A well-mixed 64-bit hash of (i, seed) (splitmix64's finaliser): repeatable pseudo-random
/// ids and lengths without a generator to thread through.
fn mix(i: u64, seed: u64) -> u64 {
    let mut z = i
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
