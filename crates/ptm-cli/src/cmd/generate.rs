//! `ptm generate`: continue prompts with a causal language model, streaming text or as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ptm::generate::{GenerationConfig, generate, load_causal_lm, stop_string_checker};
use ptm::models::Pretrained;
use ptm::tokenizer::{Padding, StreamDecoder, Tokenizer};

use super::Format;
use crate::input::{LineLimitArg, next_line};

/// Generate text. Greedy unless sampling (or the model's generation_config.json) says otherwise.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (a causal LM such as GPT-2), or org/name in the Hugging Face cache.
    #[arg(long)]
    model: String,
    /// New tokens at most (default: the model's generation_config.json, else 50).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// New tokens before EOS may end a generation.
    #[arg(long)]
    min_new_tokens: Option<usize>,
    /// Sample instead of picking the most likely token.
    #[arg(long)]
    do_sample: bool,
    /// Divides the logits before sampling; a finite number above 0.
    #[arg(long, value_parser = positive)]
    temperature: Option<f64>,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities add up to p, in (0, 1].
    #[arg(long, value_parser = probability)]
    top_p: Option<f64>,
    /// Beam search with this many beams (1 to 1024).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    num_beams: Option<u16>,
    /// Results per prompt (sampling or beam search), best first for beams (1 to 1024).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    num_return_sequences: Option<u16>,
    /// Beam scores are divided by length^length_penalty; a finite number.
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    length_penalty: Option<f64>,
    /// Above 1 discourages tokens already in the text; a finite number above 0.
    #[arg(long, value_parser = positive)]
    repetition_penalty: Option<f64>,
    /// Never repeat an n-gram of this size.
    #[arg(long)]
    no_repeat_ngram_size: Option<usize>,
    /// Stop once the generated text contains this string (repeatable; not empty).
    #[arg(long = "stop", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    stop: Vec<String>,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cut prompts that do not fit the model from the left instead of failing.
    #[arg(long)]
    truncate_left: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// JSONL with a "prompt" field per line; one JSON result per line.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Prompts per batch with --input.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Text the model reads before each prompt and that is not printed (default: XLNet's padding
    /// text for an XLNet model, none otherwise; "" for none).
    #[arg(long)]
    prefix: Option<String>,
    /// Print prefill and per-token decode times to stderr (JSON), for benchmarks.
    #[arg(long)]
    timing: bool,
    /// The prompt.
    prompt: Option<String>,
    #[command(flatten)]
    dtype: super::DtypeArg,
    #[command(flatten)]
    line_limit: LineLimitArg,
}

pub fn run(a: Args) -> Result<()> {
    let pretrained = Pretrained::open(&a.model)?;
    let mut tokenizer = pretrained.checked_tokenizer()?;
    tokenizer.set_padding(Padding::None)?;
    let (model, mut cfg) = load_causal_lm(&pretrained, &a.dtype.store())?;
    apply_flags(&a, &mut cfg);
    cfg.validate()?;
    let stop = stop_string_checker(&cfg.stop_strings, |ids| tokenizer.decode(ids, true).ok());
    let new_tokens = cfg.max_new_tokens.unwrap_or(0);
    if new_tokens >= model.max_positions() {
        bail!(
            "--max-new-tokens {new_tokens} leaves no room for a prompt in the model's {} positions",
            model.max_positions()
        );
    }
    let max_prompt = model.max_positions() - new_tokens;
    let prefix = a
        .prefix
        .clone()
        .or_else(|| model.prompt_prefix().map(str::to_string))
        .unwrap_or_default();
    // A model that cannot mask padding (XLNet) decodes one prompt at a time.
    let batch_size = if model.masks_padding() {
        a.batch_size
    } else {
        1
    };
    // Prompts go in without special tokens, as transformers' text-generation pipeline does.
    let encode = |text: &str| -> Result<Vec<u32>> {
        let ids = tokenizer
            .encode_plain(&[&format!("{prefix}{text}")])?
            .remove(0);
        if ids.len() > max_prompt {
            if !a.truncate_left {
                bail!(
                    "the prompt has {} tokens; with {} new tokens the model's {} positions allow {max_prompt} \
                     (--truncate-left keeps the last ones)",
                    ids.len(),
                    cfg.max_new_tokens.unwrap_or(0),
                    model.max_positions()
                );
            }
            return Ok(ids[ids.len() - max_prompt..].to_vec());
        }
        Ok(ids)
    };
    let prompt_ids = |text: &str| -> Result<Vec<u32>> {
        let ids = encode(text)?;
        if ids.is_empty() {
            // An empty prompt starts from BOS, as transformers does.
            return cfg
                .bos_token_id
                .map(|b| vec![b])
                .context("empty prompt and the model has no BOS token");
        }
        Ok(ids)
    };

    if let Some(path) = &a.input {
        return run_file(
            &read_prompts(path, a.line_limit)?,
            batch_size,
            &tokenizer,
            &*model,
            &cfg,
            &stop,
            &prompt_ids,
        );
    }
    let Some(prompt) = &a.prompt else {
        bail!("give a PROMPT or --input FILE")
    };
    let ids = prompt_ids(prompt)?;
    match a.format {
        // One sequence, token by token; beams are only known at the end.
        Format::Text if cfg.num_beams == 1 && cfg.num_return_sequences == 1 => {
            let mut out = std::io::stdout().lock();
            write!(out, "{prompt}")?;
            out.flush()?;
            let mut stream = StreamDecoder::new(&tokenizer);
            let mut failed = None;
            let prompt_tokens = ids.len();
            let start = std::time::Instant::now();
            let mut stamps = Vec::new();
            generate(&*model, &[ids], &cfg, Some(&stop), &mut |_, t| {
                stamps.push(start.elapsed().as_secs_f64());
                if failed.is_none() {
                    match stream
                        .push(t)
                        .map_err(anyhow::Error::from)
                        .and_then(|piece| {
                            write!(out, "{piece}")?;
                            Ok(out.flush()?)
                        }) {
                        Ok(()) => {}
                        Err(e) => failed = Some(e),
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            writeln!(out)?;
            if a.timing {
                eprintln!("{}", timing_json(prompt_tokens, &stamps));
            }
        }
        Format::Text => {
            for g in generate(&*model, &[ids], &cfg, Some(&stop), &mut |_, _| {})? {
                println!("{prompt}{}", tokenizer.decode(&g.token_ids, true)?);
            }
        }
        Format::Json => {
            for g in generate(&*model, &[ids], &cfg, Some(&stop), &mut |_, _| {})? {
                println!(
                    "{}",
                    result_json(prompt, &g.token_ids, g.finish_reason, &tokenizer)?
                );
            }
        }
    }
    Ok(())
}

/// Prefill (time to the first token) and mean decode time per later token, from the times at
/// which each token was chosen.
fn timing_json(prompt_tokens: usize, stamps: &[f64]) -> serde_json::Value {
    let first = stamps.first().copied().unwrap_or(0.0);
    let last = stamps.last().copied().unwrap_or(0.0);
    let decode = if stamps.len() > 1 {
        (last - first) / (stamps.len() - 1) as f64
    } else {
        0.0
    };
    serde_json::json!({
        "prompt_tokens": prompt_tokens,
        "new_tokens": stamps.len(),
        "prefill_ms": first * 1e3,
        "decode_ms_per_token": decode * 1e3,
        "tokens_per_s": if last > 0.0 { stamps.len() as f64 / last } else { 0.0 },
    })
}

fn apply_flags(a: &Args, cfg: &mut GenerationConfig) {
    if a.max_new_tokens.is_some() {
        cfg.max_new_tokens = a.max_new_tokens;
    } else if cfg.max_new_tokens.is_none() {
        cfg.max_new_tokens = Some(50);
    }
    if let Some(v) = a.min_new_tokens {
        cfg.min_new_tokens = v;
    }
    if a.do_sample {
        cfg.do_sample = true;
    }
    if let Some(v) = a.temperature {
        cfg.temperature = v;
    }
    if let Some(v) = a.top_k {
        cfg.top_k = v;
    }
    if let Some(v) = a.top_p {
        cfg.top_p = v;
    }
    if let Some(v) = a.num_beams {
        cfg.num_beams = v.into();
    }
    if let Some(v) = a.num_return_sequences {
        cfg.num_return_sequences = v.into();
    }
    if let Some(v) = a.length_penalty {
        cfg.length_penalty = v;
    }
    if let Some(v) = a.repetition_penalty {
        cfg.repetition_penalty = v;
    }
    if let Some(v) = a.no_repeat_ngram_size {
        cfg.no_repeat_ngram_size = v;
    }
    cfg.stop_strings = a.stop.clone();
    cfg.seed = a.seed;
}

/// transformers' text-generation output (`generated_text` is prompt + continuation), with the
/// new token ids and why generation stopped.
fn result_json(
    prompt: &str,
    new_ids: &[u32],
    finish: &str,
    tokenizer: &Tokenizer,
) -> Result<String> {
    let text = format!("{prompt}{}", tokenizer.decode(new_ids, true)?);
    Ok(serde_json::json!({ "generated_text": text, "token_ids": new_ids, "finish_reason": finish }).to_string())
}

fn run_file(
    prompts: &[String],
    batch_size: usize,
    tokenizer: &Tokenizer,
    model: &dyn ptm::models::traits::CausalLm,
    cfg: &GenerationConfig,
    stop: &dyn Fn(&[u32]) -> bool,
    prompt_ids: &dyn Fn(&str) -> Result<Vec<u32>>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let batch_size = batch_size.max(1);
    for (c, chunk) in prompts.chunks(batch_size).enumerate() {
        let first = c * batch_size + 1;
        let at = || format!("prompts {first}-{} of --input", first + chunk.len() - 1);
        let ids = chunk
            .iter()
            .map(|p| prompt_ids(p))
            .collect::<Result<Vec<_>>>()
            .with_context(at)?;
        let results = generate(model, &ids, cfg, Some(stop), &mut |_, _| {}).with_context(at)?;
        // num_return_sequences results per prompt, prompt by prompt.
        let per = results.len() / chunk.len().max(1);
        for (i, g) in results.iter().enumerate() {
            writeln!(
                out,
                "{}",
                result_json(
                    &chunk[i / per.max(1)],
                    &g.token_ids,
                    g.finish_reason,
                    tokenizer
                )?
            )?;
        }
    }
    Ok(())
}

/// The "prompt" field of each line of a JSONL file (blank lines skipped).
fn read_prompts(path: &std::path::Path, limit: LineLimitArg) -> Result<Vec<String>> {
    let mut lines = ptm::io::LineReader::open(path, limit.max_line_bytes)?;
    let (mut prompts, mut buf) = (Vec::new(), Vec::new());
    while let Some(line) = next_line(&mut lines, &mut buf)? {
        let at = format!("{}:{}", path.display(), lines.line());
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let line =
            std::str::from_utf8(line).map_err(|_| anyhow::anyhow!("{at}: not valid UTF-8"))?;
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{at}: invalid JSON: {e}"))?;
        let Some(p) = v.get("prompt").and_then(|p| p.as_str()) else {
            bail!("{at}: no string \"prompt\" field");
        };
        prompts.push(p.to_string());
    }
    Ok(prompts)
}

/// `--temperature`, `--repetition-penalty`: a finite number above 0.
fn positive(s: &str) -> Result<f64, String> {
    match finite(s)? {
        v if v > 0.0 => Ok(v),
        v => Err(format!("{v} is not above 0")),
    }
}

/// `--length-penalty`: any finite number (NaN would end a beam search at once).
fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--top-p`: a probability in (0, 1].
fn probability(s: &str) -> Result<f64, String> {
    match finite(s)? {
        v if v > 0.0 && v <= 1.0 => Ok(v),
        v => Err(format!("{v} is not in (0, 1]")),
    }
}
