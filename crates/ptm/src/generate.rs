//! Text generation for every decoder model: greedy search and sampling with transformers'
//! logits processors (repetition penalty, no-repeat n-grams, minimum new tokens, temperature,
//! top-k, top-p), applied in transformers' order; EOS, stop strings and length limits;
//! batches of left-padded prompts with a KV cache; a seed that makes sampling reproducible.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::config::TokenIds;
use crate::error::{Error, Result};
use crate::models::gpt2::{DecoderInput, Gpt2LMHeadModel};
use crate::models::xlnet::{XlnetGenerationState, XlnetLMHeadModel};
use crate::nn::Mode;
use crate::nn::attention::KvCache;

pub const GENERATION_CONFIG: &str = "generation_config.json";

/// Text put before an XLNet prompt, as transformers' text-generation pipeline does, so a short
/// prompt has context to attend to; the document ends with XLNet's `<eod>`. (A public-domain
/// paragraph: the opening of Pride and Prejudice.)
pub const XLNET_PADDING_TEXT: &str = "It is a truth universally acknowledged, that a single man in possession of a good \
fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first \
entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is \
considered as the rightful property of some one or other of their daughters. <eod> ";

/// The padding text a model's prompts get by default (XLNet's; none for the others).
pub fn prompt_prefix(config: &crate::config::ModelConfig) -> Option<&'static str> {
    matches!(config, crate::config::ModelConfig::Xlnet(_)).then_some(XLNET_PADDING_TEXT)
}

/// What a decoder carries from one step to the next.
pub enum DecodeCache {
    /// GPT-2's keys and values.
    Kv(KvCache),
    /// XLNet's memory.
    Mems(XlnetGenerationState),
}

impl DecodeCache {
    /// Keeps, in order, the batch rows `rows` (beam search reorders its beams this way).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        match self {
            DecodeCache::Kv(c) => c.select_rows(rows),
            DecodeCache::Mems(m) => m.select_rows(rows),
        }
    }
}

/// A decoder that generation can drive: one forward step over new tokens with a cache.
pub trait CausalLM {
    fn new_cache(&self) -> DecodeCache;
    /// Logits (batch, seq, vocab) whose last position scores the next token.
    fn step(&self, input: DecoderInput, cache: &mut DecodeCache) -> Result<Tensor>;
    /// The mean next-token loss of `input_ids` (batch, seq) against `labels` (-100 ignored).
    fn loss(&self, input_ids: &Tensor, labels: &Tensor) -> Result<Tensor>;
    fn max_positions(&self) -> usize;
}

impl CausalLM for Gpt2LMHeadModel {
    fn new_cache(&self) -> DecodeCache {
        DecodeCache::Kv(Gpt2LMHeadModel::new_cache(self))
    }

    fn step(&self, input: DecoderInput, cache: &mut DecodeCache) -> Result<Tensor> {
        let DecodeCache::Kv(cache) = cache else {
            return Err(Error::invalid("GPT-2 decodes with a key/value cache"));
        };
        Ok(self.forward(input, None, Some(cache), Mode::Eval)?.logits)
    }

    fn loss(&self, input_ids: &Tensor, labels: &Tensor) -> Result<Tensor> {
        self.forward(DecoderInput::new(input_ids), Some(labels), None, Mode::Eval)?
            .loss
            .ok_or_else(|| Error::invalid("no loss"))
    }

    fn max_positions(&self) -> usize {
        self.transformer.max_positions()
    }
}

/// XLNet generates left to right by predicting a dummy token after the text (see
/// [`XlnetLMHeadModel::generation_step`]).
impl CausalLM for XlnetLMHeadModel {
    fn new_cache(&self) -> DecodeCache {
        DecodeCache::Mems(XlnetGenerationState::default())
    }

    fn step(&self, input: DecoderInput, cache: &mut DecodeCache) -> Result<Tensor> {
        let DecodeCache::Mems(state) = cache else {
            return Err(Error::invalid("XLNet decodes with its memory"));
        };
        // transformers drops the attention mask of XLNet's generation inputs, so padding
        // would be attended to: refuse it rather than differ.
        if let Some(m) = input.attention_mask
            && m.to_dtype(DType::F32)?.min_all()?.to_scalar::<f32>()? < 1.0
        {
            return Err(Error::invalid(
                "XLNet generates one prompt per batch (it cannot mask padding): use a batch size of 1",
            ));
        }
        self.generation_step(input.input_ids, state)
    }

    fn loss(&self, _input_ids: &Tensor, _labels: &Tensor) -> Result<Tensor> {
        Err(Error::invalid(
            "XLNet has no left-to-right loss; perplexity needs a causal LM (gpt2)",
        ))
    }

    fn max_positions(&self) -> usize {
        usize::MAX
    }
}

/// Loads the causal LM of a model directory (its LM head must be in the checkpoint).
pub fn load_causal_lm(
    pretrained: &crate::models::Pretrained,
    opts: &crate::nn::StoreOptions,
) -> Result<(Box<dyn CausalLM>, GenerationConfig)> {
    let store = pretrained.store(opts)?;
    let (model, generation): (Box<dyn CausalLM>, GenerationConfig) = match &pretrained.config {
        crate::config::ModelConfig::Gpt2(cfg) => (
            Box::new(Gpt2LMHeadModel::new(cfg, &store.root())?),
            GenerationConfig::from_dir(
                &pretrained.dir,
                cfg.eos_token_ids(),
                cfg.bos_token_id,
                cfg.pad_token_id,
            )?,
        ),
        crate::config::ModelConfig::Xlnet(cfg) => (
            Box::new(XlnetLMHeadModel::new(cfg, &store.root())?),
            GenerationConfig::from_dir(
                &pretrained.dir,
                cfg.eos_token_ids(),
                cfg.bos_token_id,
                cfg.pad_token_id,
            )?,
        ),
        other => {
            return Err(Error::invalid(format!(
                "{}: a {} model cannot generate text; use a causal LM (gpt2) or xlnet",
                pretrained.dir.display(),
                other.model_type()
            )));
        }
    };
    crate::models::require_trained(&store, &pretrained.dir, "LM head")?;
    crate::models::report_load(&store, "causal LM");
    Ok((model, generation))
}

/// Sliding-window perplexity, as the transformers documentation computes it: windows of
/// `max_length` tokens advancing by `stride`, each scoring only the tokens it adds.
pub fn perplexity(
    model: &dyn CausalLM,
    ids: &[u32],
    max_length: usize,
    stride: usize,
) -> Result<(f64, usize)> {
    if ids.len() < 2 {
        return Err(Error::invalid(
            "perplexity needs a text of at least two tokens",
        ));
    }
    if max_length < 2 || max_length > model.max_positions() {
        return Err(Error::invalid(format!(
            "the window length must be in 2..={} (the model's positions), got {max_length}",
            model.max_positions()
        )));
    }
    if stride == 0 || stride > max_length {
        return Err(Error::invalid(format!(
            "stride must be in 1..={max_length}, got {stride}"
        )));
    }
    let device = Device::Cpu;
    let (mut nll_sum, mut counted, mut prev_end) = (0f64, 0usize, 0usize);
    let mut begin = 0;
    while begin < ids.len() {
        let end = (begin + max_length).min(ids.len());
        let target_len = end - prev_end;
        let window = &ids[begin..end];
        let labels: Vec<i64> = window
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if i + target_len < window.len() {
                    -100
                } else {
                    i64::from(t)
                }
            })
            .collect();
        let n = window.len();
        let input = Tensor::from_vec(window.to_vec(), (1, n), &device)?;
        let labels_t = Tensor::from_vec(labels.clone(), (1, n), &device)?;
        // Weighted as the documentation does: valid labels minus one for the shift.
        let scored = labels
            .iter()
            .filter(|l| **l != -100)
            .count()
            .saturating_sub(1);
        if scored > 0 {
            let loss = model
                .loss(&input, &labels_t)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            crate::pipelines::check_finite(
                || format!("perplexity: the loss of the window at tokens {begin}..{end}"),
                &[loss],
            )?;
            nll_sum += loss * scored as f64;
            counted += scored;
        }
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    Ok(((nll_sum / counted as f64).exp(), counted))
}

/// When beam search stops (transformers' `early_stopping`: true, false or "never").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub enum EarlyStopping {
    /// `true`: as soon as `num_beams` hypotheses are finished.
    Done,
    /// `false`: when no running beam can, by a heuristic on its length, beat the finished ones.
    Heuristic,
    /// `"never"`: only when no running beam can beat them at any length (canonical beam search).
    Never,
}

impl TryFrom<serde_json::Value> for EarlyStopping {
    type Error = String;

    fn try_from(v: serde_json::Value) -> std::result::Result<Self, String> {
        match v {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::Done),
            serde_json::Value::Bool(false) => Ok(EarlyStopping::Heuristic),
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(format!("expected true, false or \"never\", got {other}")),
        }
    }
}

/// transformers' `GenerationConfig` fields that ptm honours, with its defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    pub max_length: usize,
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: usize,
    pub do_sample: bool,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub repetition_penalty: f64,
    pub no_repeat_ngram_size: usize,
    pub num_beams: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub num_return_sequences: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    #[serde(skip)]
    pub stop_strings: Vec<String>,
    #[serde(skip)]
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_length: 20,
            max_new_tokens: None,
            min_new_tokens: 0,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            num_return_sequences: 1,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// `dir/generation_config.json` when present (null fields take the defaults), else defaults;
    /// token ids the file lacks come from the model's config.
    pub fn from_dir(
        dir: &Path,
        model_eos: Vec<u32>,
        model_bos: Option<u32>,
        model_pad: Option<u32>,
    ) -> Result<Self> {
        let path = dir.join(GENERATION_CONFIG);
        let mut cfg = if path.is_file() {
            let value: serde_json::Value = crate::io::read_json(&path)?;
            let fields: serde_json::Map<String, serde_json::Value> = match value {
                serde_json::Value::Object(m) => {
                    m.into_iter().filter(|(_, v)| !v.is_null()).collect()
                }
                _ => {
                    return Err(Error::config(
                        &path,
                        "(top level)",
                        "expected a JSON object",
                    ));
                }
            };
            crate::config::from_value(serde_json::Value::Object(fields), &path)?
        } else {
            GenerationConfig::default()
        };
        if cfg.eos_token_id.is_none() && !model_eos.is_empty() {
            cfg.eos_token_id = Some(TokenIds::Many(model_eos));
        }
        cfg.bos_token_id = cfg.bos_token_id.or(model_bos);
        cfg.pad_token_id = cfg.pad_token_id.or(model_pad);
        Ok(cfg)
    }

    /// The padding id: the configured one, else the first EOS (as transformers falls back).
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id
            .or(self.eos_ids().first().copied())
            .unwrap_or(0)
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid(what));
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        // Greedy search ignores the temperature, as transformers does, unless it is not a number.
        if !self.temperature.is_finite() || (self.temperature <= 0.0 && self.do_sample) {
            return bad(format!(
                "temperature must be a finite number above 0, got {}",
                self.temperature
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad(format!(
                "length_penalty must be a finite number, got {}",
                self.length_penalty
            ));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("a stop string is empty (it would stop at once)".into());
        }
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if self.num_beams > 1 && self.do_sample {
            return bad(
                "beam sampling is not supported; use --num-beams or --do-sample, not both".into(),
            );
        }
        if self.num_return_sequences == 0
            || (self.num_return_sequences > 1 && !self.do_sample && self.num_beams == 1)
        {
            return bad("num_return_sequences > 1 needs sampling or beam search".into());
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return bad(format!(
                "num_return_sequences {} is more than num_beams {}",
                self.num_return_sequences, self.num_beams
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be a finite number above 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    fn new_token_limit(&self, prompt_len: usize) -> usize {
        self.max_new_tokens
            .unwrap_or(self.max_length.saturating_sub(prompt_len))
    }
}

/// transformers' logits processors, in the order `generate()` applies them, on one row of
/// scores; `ids` is the row's whole sequence so far (padding included, as in transformers).
pub fn process_logits(cfg: &GenerationConfig, ids: &[u32], new_tokens: usize, scores: &mut [f32]) {
    if cfg.repetition_penalty != 1.0 {
        let p = cfg.repetition_penalty as f32;
        let mut seen = vec![false; scores.len()];
        for &t in ids {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        for (s, &was) in scores.iter_mut().zip(&seen) {
            if was {
                *s = if *s < 0.0 { *s * p } else { *s / p };
            }
        }
    }
    if cfg.no_repeat_ngram_size > 0 {
        for t in banned_ngram_tokens(ids, cfg.no_repeat_ngram_size) {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if new_tokens < cfg.min_new_tokens {
        for t in cfg.eos_ids() {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if cfg.do_sample {
        if cfg.temperature != 1.0 {
            let t = cfg.temperature as f32;
            scores.iter_mut().for_each(|s| *s /= t);
        }
        if cfg.top_k > 0 {
            top_k_filter(scores, cfg.top_k);
        }
        if cfg.top_p < 1.0 {
            top_p_filter(scores, cfg.top_p);
        }
    }
}

/// Tokens that would complete an n-gram already in `ids`.
fn banned_ngram_tokens(ids: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || ids.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &ids[ids.len() + 1 - n..];
    ids.windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// Keeps the k highest scores (and any tied with the k-th), the rest to -inf.
pub fn top_k_filter(scores: &mut [f32], k: usize) {
    let k = k.min(scores.len());
    if k == 0 {
        return;
    }
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    scores
        .iter_mut()
        .filter(|s| **s < kth)
        .for_each(|s| *s = f32::NEG_INFINITY);
}

/// Nucleus filtering as transformers does it: in ascending order, tokens whose cumulative
/// probability stays at or below 1 - p are removed; the most likely token always stays.
pub fn top_p_filter(scores: &mut [f32], p: f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = order.iter().map(|&i| (scores[i] - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    let threshold = (1.0 - p) as f32;
    let mut cumulative = 0f32;
    let last = order.len().saturating_sub(1);
    for (rank, (&i, e)) in order.iter().zip(&exps).enumerate() {
        cumulative += e / total;
        if cumulative <= threshold && rank < last {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// Whether a generation's new tokens so far should stop it (e.g. [`stop_string_checker`]).
pub type StopTest<'a> = &'a dyn Fn(&[u32]) -> bool;

/// The outcome of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids only.
    pub token_ids: Vec<u32>,
    /// Why it stopped: "eos", "stop_string" or "length".
    pub finish_reason: &'static str,
}

/// A batch of left-padded prompts fed through the model once, ready for decoding steps.
struct Prefill {
    /// Each row's whole sequence so far, padding included (what transformers' processors see).
    seqs: Vec<Vec<u32>>,
    /// The attention mask, row-major (rows × width).
    mask: Vec<u32>,
    width: usize,
    /// Each row's next position id.
    next_pos: Vec<u32>,
    cache: DecodeCache,
    /// Scores of each row's next token.
    logits: Vec<Vec<f32>>,
}

impl Prefill {
    /// Left-pads `rows`; positions count real tokens only (transformers: cumsum(mask) - 1, pads 1).
    fn run(model: &dyn CausalLM, rows: &[&Vec<u32>], pad: u32) -> Result<Self> {
        let b = rows.len();
        let width = rows.iter().map(|p| p.len()).max().unwrap_or(0);
        let (mut seqs, mut mask, mut positions) = (
            Vec::with_capacity(b),
            Vec::with_capacity(b * width),
            Vec::with_capacity(b * width),
        );
        for p in rows {
            let n_pad = width - p.len();
            seqs.push(
                std::iter::repeat_n(pad, n_pad)
                    .chain(p.iter().copied())
                    .collect::<Vec<u32>>(),
            );
            mask.extend(std::iter::repeat_n(0, n_pad).chain(std::iter::repeat_n(1, p.len())));
            positions.extend(std::iter::repeat_n(1u32, n_pad).chain(0..p.len() as u32));
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(seqs.concat(), (b, width), &device)?;
        let pos = Tensor::from_vec(positions, (b, width), &device)?;
        let m = Tensor::from_vec(mask.clone(), (b, width), &device)?;
        let mut cache = model.new_cache();
        let logits = last_position(&model.step(
            DecoderInput {
                input_ids: &ids,
                attention_mask: Some(&m),
                position_ids: Some(&pos),
            },
            &mut cache,
        )?)?;
        let next_pos = rows.iter().map(|p| p.len() as u32).collect();
        Ok(Prefill {
            seqs,
            mask,
            width,
            next_pos,
            cache,
            logits,
        })
    }

    /// Feeds one token per row (rows already reordered to follow their beams).
    fn step(&mut self, model: &dyn CausalLM, tokens: Vec<u32>) -> Result<()> {
        let b = tokens.len();
        let mut mask = Vec::with_capacity(b * (self.width + 1));
        for row in self.mask.chunks(self.width) {
            mask.extend_from_slice(row);
            mask.push(1);
        }
        self.mask = mask;
        self.width += 1;
        let device = Device::Cpu;
        let ids = Tensor::from_vec(tokens, (b, 1), &device)?;
        let pos = Tensor::from_vec(self.next_pos.clone(), (b, 1), &device)?;
        self.next_pos.iter_mut().for_each(|p| *p += 1);
        let m = Tensor::from_vec(self.mask.clone(), (b, self.width), &device)?;
        self.logits = last_position(&model.step(
            DecoderInput {
                input_ids: &ids,
                attention_mask: Some(&m),
                position_ids: Some(&pos),
            },
            &mut self.cache,
        )?)?;
        Ok(())
    }

    /// Keeps the rows `from[i]` as new row i: mask, positions, sequences and cache follow.
    fn reorder(&mut self, from: &[usize]) -> Result<()> {
        let w = self.width;
        self.mask = from
            .iter()
            .flat_map(|&r| self.mask[r * w..(r + 1) * w].to_vec())
            .collect();
        self.next_pos = from.iter().map(|&r| self.next_pos[r]).collect();
        self.seqs = from.iter().map(|&r| self.seqs[r].clone()).collect();
        let idx = Tensor::from_vec(
            from.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            from.len(),
            &Device::Cpu,
        )?;
        self.cache.select_rows(&idx)
    }
}

/// Generates continuations of `prompts` (token ids, each non-empty), batched with left
/// padding: greedy, sampling, or beam search when `num_beams` > 1. `on_token(row, token)` sees
/// each new token as it is chosen (greedy and sampling; for streaming). With
/// `num_return_sequences` n, the result holds n generations per prompt, prompt by prompt.
pub fn generate(
    model: &dyn CausalLM,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    stop: Option<StopTest>,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    cfg.validate()?;
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::invalid(
            "an empty prompt: give at least one token (e.g. the BOS token)",
        ));
    }
    let prompt_len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let limit = cfg.new_token_limit(prompt_len);
    if prompt_len.saturating_add(limit) > model.max_positions() {
        return Err(Error::invalid(format!(
            "prompt of {prompt_len} tokens + {limit} new tokens exceeds the model's {} positions",
            model.max_positions()
        )));
    }
    if cfg.num_beams > 1 {
        return beam_search(model, prompts, cfg, limit, stop);
    }
    let rows: Vec<&Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, cfg.num_return_sequences))
        .collect();
    let b = rows.len();
    let eos = cfg.eos_ids();
    let pad = cfg.pad_id();
    let mut state = Prefill::run(model, &rows, pad)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            token_ids: Vec::new(),
            finish_reason: "length",
        })
        .collect();
    let mut done = vec![false; b];
    for step in 0..limit {
        let mut chosen = Vec::with_capacity(b);
        for (row, scores) in state.logits.iter_mut().enumerate() {
            if done[row] {
                // Finished rows carry on with padding, as in transformers.
                chosen.push(pad);
                state.seqs[row].push(pad);
                continue;
            }
            check_logits(step + 1, row / cfg.num_return_sequences + 1, scores)?;
            process_logits(cfg, &state.seqs[row], step, scores);
            let t = if cfg.do_sample {
                sample(scores, &mut rng)?
            } else {
                argmax(scores)
            };
            chosen.push(t);
            state.seqs[row].push(t);
            out[row].token_ids.push(t);
            on_token(row, t);
            if eos.contains(&t) {
                done[row] = true;
                out[row].finish_reason = "eos";
            } else if stop.is_some_and(|f| f(&out[row].token_ids)) {
                done[row] = true;
                out[row].finish_reason = "stop_string";
            }
        }
        if done.iter().all(|d| *d) || step + 1 == limit {
            break;
        }
        state.step(model, chosen)?;
    }
    Ok(out)
}

/// A hypothesis: its new tokens and its score.
#[derive(Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    score: f32,
}

/// Beam search as transformers 5 runs it: per prompt, the top (1 + #EOS) × num_beams
/// continuations of all beams by accumulated log-probability; those that stop (EOS, length,
/// stop string) and rank among the first num_beams become finished hypotheses scored
/// log-prob / new_length^length_penalty; the best num_beams that go on keep running; the
/// search ends per `early_stopping`.
fn beam_search(
    model: &dyn CausalLM,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    limit: usize,
    stop: Option<StopTest>,
) -> Result<Vec<Generation>> {
    const NEG: f32 = -1.0e9;
    let beams = cfg.num_beams;
    let eos = cfg.eos_ids();
    let keep = 2.max(1 + eos.len()) * beams;
    let rows: Vec<&Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, beams))
        .collect();
    let mut state = Prefill::run(model, &rows, cfg.pad_id())?;
    let prompt_len = state.width;
    let max_length = prompt_len.saturating_add(limit);
    let lp = cfg.length_penalty as f32;

    let n = prompts.len();
    let mut running: Vec<Vec<Hypothesis>> = (0..n)
        .map(|_| {
            (0..beams)
                .map(|k| Hypothesis {
                    tokens: Vec::new(),
                    score: if k == 0 { 0.0 } else { NEG },
                })
                .collect()
        })
        .collect();
    let mut finished: Vec<Vec<(Hypothesis, bool)>> = (0..n)
        .map(|_| {
            vec![
                (
                    Hypothesis {
                        tokens: Vec::new(),
                        score: NEG
                    },
                    false
                );
                beams
            ]
        })
        .collect();
    let mut improvable = vec![true; n];
    let mut cur_len = prompt_len;
    loop {
        let mut all_hit = true;
        let mut next_tokens = Vec::with_capacity(n * beams);
        let mut sources = Vec::with_capacity(n * beams);
        for p in 0..n {
            // Accumulated log-probabilities of every (beam, token) continuation.
            let mut cands: Vec<(f32, usize, u32)> = Vec::new();
            for (k, beam) in running[p].iter().enumerate() {
                let row = p * beams + k;
                let scores = &mut state.logits[row];
                check_logits(cur_len - prompt_len + 1, p + 1, scores)?;
                log_softmax_in_place(scores);
                process_logits(cfg, &state.seqs[row], cur_len - prompt_len, scores);
                let base = beam.score;
                cands.extend(
                    scores
                        .iter()
                        .enumerate()
                        .map(|(t, s)| (s + base, k, t as u32)),
                );
            }
            let top = top_by_score(cands, keep);
            let hits: Vec<bool> = top
                .iter()
                .map(|&(_, k, t)| {
                    let mut tokens = running[p][k].tokens.clone();
                    tokens.push(t);
                    eos.contains(&t)
                        || cur_len + 1 >= max_length
                        || stop.is_some_and(|f| f(&tokens))
                })
                .collect();
            all_hit &= hits.iter().all(|h| *h);

            // Finished: the top num_beams candidates that stopped, merged into the best so far.
            let all_done = finished[p].iter().all(|(_, f)| *f);
            let denom = ((cur_len + 1 - prompt_len) as f32).powf(lp);
            let mut merged: Vec<(Hypothesis, bool)> = finished[p].clone();
            for (i, (&(score, k, t), &hit)) in top.iter().zip(&hits).enumerate() {
                let just_finished = hit && i < beams;
                let mut s = score / denom;
                if all_done && cfg.early_stopping == EarlyStopping::Done {
                    s += NEG;
                }
                if !improvable[p] {
                    s += NEG;
                }
                if !just_finished {
                    s += NEG;
                }
                let mut tokens = running[p][k].tokens.clone();
                tokens.push(t);
                merged.push((Hypothesis { tokens, score: s }, just_finished));
            }
            let order = top_indices(
                &merged.iter().map(|(h, _)| h.score).collect::<Vec<_>>(),
                beams,
            );
            finished[p] = order.iter().map(|&i| merged[i].clone()).collect();

            // Running: the best num_beams continuations that did not stop.
            let adjusted: Vec<f32> = top
                .iter()
                .zip(&hits)
                .map(|(c, h)| c.0 + if *h { NEG } else { 0.0 })
                .collect();
            let chosen = top_indices(&adjusted, beams);
            running[p] = chosen
                .iter()
                .map(|&i| {
                    let (_, k, t) = top[i];
                    let mut tokens = running[p][k].tokens.clone();
                    tokens.push(t);
                    next_tokens.push(t);
                    sources.push(p * beams + k);
                    Hypothesis {
                        tokens,
                        score: adjusted[i],
                    }
                })
                .collect();
        }
        cur_len += 1;
        let mut any_open = false;
        for p in 0..n {
            let best_len = if cfg.early_stopping == EarlyStopping::Never && lp > 0.0 {
                max_length - prompt_len
            } else {
                cur_len - prompt_len
            };
            let best_possible = running[p][0].score / (best_len as f32).powf(lp);
            let worst = finished[p]
                .iter()
                .map(|(h, _)| h.score)
                .fold(f32::INFINITY, f32::min);
            let beatable = finished[p].iter().any(|(_, f)| !*f) || best_possible > worst;
            improvable[p] &= beatable;
            let full =
                finished[p].iter().all(|(_, f)| *f) && cfg.early_stopping == EarlyStopping::Done;
            any_open |= improvable[p] && !full;
        }
        if !any_open || all_hit {
            break;
        }
        state.reorder(&sources)?;
        for (row, &t) in next_tokens.iter().enumerate() {
            state.seqs[row].push(t);
        }
        state.step(model, next_tokens)?;
    }
    let mut out = Vec::with_capacity(n * cfg.num_return_sequences);
    for fin in finished {
        for (h, _) in fin.into_iter().take(cfg.num_return_sequences) {
            let reason = if h.tokens.last().is_some_and(|t| eos.contains(t)) {
                "eos"
            } else {
                "length"
            };
            out.push(Generation {
                token_ids: h.tokens,
                finish_reason: reason,
            });
        }
    }
    Ok(out)
}

/// Refuses non-finite logits, naming the decoding step (n: the step that picks the n-th new
/// token) and the prompt (1-based): NaN would make greedy search pick token 0.
fn check_logits(step: usize, prompt: usize, scores: &[f32]) -> Result<()> {
    crate::pipelines::check_finite(
        || format!("generate: decoding step {step} of prompt {prompt}"),
        scores,
    )
}

fn log_softmax_in_place(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = scores.iter().map(|s| (s - max).exp()).sum::<f32>().ln();
    scores.iter_mut().for_each(|s| *s = *s - max - log_sum);
}

/// The `k` best candidates, best first (ties: the earlier one).
fn top_by_score(mut cands: Vec<(f32, usize, u32)>, k: usize) -> Vec<(f32, usize, u32)> {
    let k = k.min(cands.len());
    cands.select_nth_unstable_by(k.saturating_sub(1), |a, b| {
        b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    cands.truncate(k);
    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    cands
}

/// Indices of the `k` highest scores, best first (ties: the earlier index).
fn top_indices(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// (batch, seq, vocab) -> the last position's scores per row, in f32 on the host.
fn last_position(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let s = logits.dim(1)?;
    Ok(logits
        .narrow(1, s - 1, 1)?
        .squeeze(1)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// The first index of the maximum, as `torch.argmax`.
fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(scores: &[f32], rng: &mut ChaCha8Rng) -> Result<u32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return Err(Error::invalid(
            "every token was filtered out; loosen top-k / top-p",
        ));
    }
    let weights: Vec<f64> = scores.iter().map(|s| f64::from((s - max).exp())).collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r < 0.0 && *w > 0.0 {
            return Ok(i as u32);
        }
    }
    Ok(weights.iter().rposition(|w| *w > 0.0).unwrap_or(0) as u32)
}

/// A stop test for [`generate`]: true once the decoded new tokens contain any stop string.
pub fn stop_string_checker<'a>(
    stop_strings: &'a [String],
    decode: impl Fn(&[u32]) -> Option<String> + 'a,
) -> impl Fn(&[u32]) -> bool + 'a {
    move |ids: &[u32]| {
        !stop_strings.is_empty()
            && decode(ids)
                .is_some_and(|text| stop_strings.iter().any(|s| text.contains(s.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_ties_and_top_p_keeps_the_best() {
        let mut s = vec![1.0, 3.0, 2.0, 3.0, 0.5];
        top_k_filter(&mut s, 2);
        assert_eq!(
            s,
            vec![
                f32::NEG_INFINITY,
                3.0,
                f32::NEG_INFINITY,
                3.0,
                f32::NEG_INFINITY
            ]
        );
        let mut s = vec![0.0, 10.0, 0.0];
        top_p_filter(&mut s, 0.5);
        assert_eq!(s, vec![f32::NEG_INFINITY, 10.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn no_repeat_ngram_bans_completions() {
        // 2-grams seen: (5,6) (6,7) (7,5); the last token is 5, so 6 is banned.
        assert_eq!(banned_ngram_tokens(&[5, 6, 7, 5], 2), vec![6]);
        assert!(banned_ngram_tokens(&[5], 3).is_empty());
        assert_eq!(banned_ngram_tokens(&[1, 2, 1, 3, 1], 2), vec![2, 3]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let cfg = GenerationConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = vec![4.0, -4.0, 4.0];
        process_logits(&cfg, &[0, 1], 0, &mut s);
        assert_eq!(s, vec![2.0, -8.0, 4.0]);
    }

    #[test]
    fn generation_config_json_sets_defaults_and_the_model_fills_token_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(GENERATION_CONFIG),
            r#"{"do_sample": true, "top_k": null, "top_p": 0.9, "max_new_tokens": 30, "early_stopping": "never"}"#,
        )
        .unwrap();
        let c = GenerationConfig::from_dir(dir.path(), vec![7], Some(1), None).unwrap();
        assert!(c.do_sample);
        assert_eq!((c.top_k, c.top_p, c.max_new_tokens), (50, 0.9, Some(30)));
        assert_eq!(c.early_stopping, EarlyStopping::Never);
        assert_eq!(
            (c.eos_ids(), c.bos_token_id, c.pad_id()),
            (vec![7], Some(1), 7)
        );
        std::fs::write(dir.path().join(GENERATION_CONFIG), r#"{"top_p": "high"}"#).unwrap();
        let err = GenerationConfig::from_dir(dir.path(), vec![], None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("generation_config.json") && err.contains("`top_p`"),
            "{err}"
        );
    }

    /// A decoder whose logits turn NaN from its `nan_from`-th forward call on (1: the prompt).
    struct NanFrom {
        nan_from: usize,
        calls: std::cell::Cell<usize>,
    }

    impl CausalLM for NanFrom {
        fn new_cache(&self) -> DecodeCache {
            DecodeCache::Mems(XlnetGenerationState::default())
        }

        fn step(&self, input: DecoderInput, _: &mut DecodeCache) -> Result<Tensor> {
            self.calls.set(self.calls.get() + 1);
            let (b, s) = input.input_ids.dims2()?;
            let value = if self.calls.get() >= self.nan_from {
                f32::NAN
            } else {
                0.0
            };
            // (batch, seq, vocab): token 1 leads, so nothing ends early.
            let mut row = vec![value; 8];
            row[1] += 1.0;
            Ok(Tensor::new(row, &Device::Cpu)?
                .broadcast_as((b, s, 8))?
                .contiguous()?)
        }

        fn loss(&self, _: &Tensor, _: &Tensor) -> Result<Tensor> {
            Err(Error::invalid("no loss"))
        }

        fn max_positions(&self) -> usize {
            64
        }
    }

    #[test]
    fn non_finite_logits_name_the_decoding_step_and_prompt() {
        for num_beams in [1, 2] {
            let model = NanFrom {
                nan_from: 3,
                calls: Default::default(),
            };
            let cfg = GenerationConfig {
                max_new_tokens: Some(6),
                num_beams,
                eos_token_id: Some(TokenIds::Many(vec![7])),
                ..Default::default()
            };
            let err = generate(&model, &[vec![2, 3], vec![4]], &cfg, None, &mut |_, _| {})
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(
                    "generate: decoding step 3 of prompt 1: the model's output is not finite (NaN"
                ),
                "{num_beams} beams: {err}"
            );
        }
    }

    #[test]
    fn settings_that_are_not_finite_or_empty_are_refused() {
        let check = |cfg: GenerationConfig, says: &str| {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        };
        let base = GenerationConfig::default;
        check(
            GenerationConfig {
                length_penalty: f64::NAN,
                ..base()
            },
            "length_penalty must be a finite number, got NaN",
        );
        check(
            GenerationConfig {
                temperature: f64::INFINITY,
                ..base()
            },
            "temperature must be a finite number above 0, got inf",
        );
        check(
            GenerationConfig {
                repetition_penalty: f64::INFINITY,
                ..base()
            },
            "repetition_penalty must be a finite number above 0",
        );
        check(
            GenerationConfig {
                stop_strings: vec!["ok".into(), String::new()],
                ..base()
            },
            "a stop string is empty",
        );
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let scores: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&scores, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
