//! From one row of next-token scores to a token: transformers' logits processors (repetition
//! penalty, no-repeat n-grams, minimum new tokens) and warpers (temperature, top-k, top-p) in
//! the order `generate()` applies them, then the pick itself (argmax or a seeded draw).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::GenerationConfig;
use crate::error::{Error, Result};

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

/// Scores to log-probabilities (beam search adds these up along a beam).
pub(super) fn log_softmax_in_place(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = scores.iter().map(|s| (s - max).exp()).sum::<f32>().ln();
    scores.iter_mut().for_each(|s| *s = *s - max - log_sum);
}

/// The first index of the maximum, as `torch.argmax`.
pub(super) fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws a token with probability softmax(scores), from `rng` (so a seed reproduces it).
pub(super) fn sample(scores: &[f32], rng: &mut ChaCha8Rng) -> Result<u32> {
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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

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
