//! The search loop: from prompts to new tokens, step by step over any [`CausalLm`]. Greedy
//! search and sampling pick one token per row; beam search keeps `num_beams` rows per prompt
//! and reorders them to follow the best continuations. Both stop per row on EOS, a stop
//! string or the length limit.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{EarlyStopping, GenerationConfig};
use super::logits::{argmax, log_softmax_in_place, process_logits, sample};
use super::state::BatchState;
use crate::error::{Error, Result};
use crate::models::traits::CausalLm;

/// Whether a generation's new tokens so far should stop it (e.g. [`stop_string_checker`]).
pub type StopTest<'a> = &'a dyn Fn(&[u32]) -> bool;

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

/// The outcome of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids only.
    pub token_ids: Vec<u32>,
    /// Why it stopped: "eos", "stop_string" or "length".
    pub finish_reason: &'static str,
}

/// Generates continuations of `prompts` (token ids, each non-empty), batched with left
/// padding: greedy, sampling, or beam search when `num_beams` > 1. `on_token(row, token)` sees
/// each new token as it is chosen (greedy and sampling; for streaming). With
/// `num_return_sequences` n, the result holds n generations per prompt, prompt by prompt.
pub fn generate(
    model: &dyn CausalLm,
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
    let mut state = BatchState::prefill(model, &rows, pad)?;
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
    model: &dyn CausalLm,
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
    let mut state = BatchState::prefill(model, &rows, cfg.pad_id())?;
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::config::TokenIds;
    use crate::models::DecoderInput;
    use crate::models::traits::DecodingState;
    use crate::nn::Mode;

    /// A decoder whose logits turn NaN from its `nan_from`-th forward call on (1: the prompt).
    struct NanFrom {
        nan_from: usize,
        calls: std::sync::atomic::AtomicUsize,
    }

    /// It keeps no state between steps.
    struct Stateless;

    impl DecodingState for Stateless {
        fn select_rows(&mut self, _: &Tensor) -> Result<()> {
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    impl crate::models::PreTrainedModel for NanFrom {
        fn architecture(&self) -> &'static str {
            "NanFrom"
        }
        fn device(&self) -> Device {
            Device::Cpu
        }
    }

    impl CausalLm for NanFrom {
        fn new_state(&self) -> Box<dyn DecodingState> {
            Box::new(Stateless)
        }

        fn step(&self, input: DecoderInput, _: &mut dyn DecodingState) -> Result<Tensor> {
            use std::sync::atomic::Ordering;
            let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            let (b, s) = input.input_ids.dims2()?;
            let value = if calls >= self.nan_from {
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

        fn causal_lm_loss(&self, _: &Tensor, _: &Tensor, _: Mode) -> Result<Tensor> {
            Err(Error::unsupported("no loss"))
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
}
