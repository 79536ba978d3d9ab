//! Permutation language modelling (XLNet) as transformers' `DataCollatorForPermutationLanguageModeling`
//! prepares it. Spans of 1..=max_span_length tokens are masked, one per context of
//! span / plm_probability tokens; a factorisation order is drawn in which the second half of
//! the sequence always comes after the first (so that half of it can be reused as memory without
//! leaking), and `perm_mask[i][j]` hides masked token j from i unless j comes earlier in the
//! order. Unmasked ordinary tokens are visible to all; each masked token is hidden from itself.
//! Every masked token is a target (`target_mapping` is the identity, labels -100 elsewhere).

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::models::traits::PermutationLm;
use crate::objectives::example_rng;

#[derive(Debug, Clone)]
pub struct PlmConfig {
    /// The ratio of a span's length to the context around it (transformers: 1/6).
    pub plm_probability: f64,
    pub max_span_length: usize,
    pub mask_token_id: u32,
}

impl PlmConfig {
    pub fn new(mask_token_id: u32) -> Self {
        PlmConfig {
            plm_probability: 1.0 / 6.0,
            max_span_length: 5,
            mask_token_id,
        }
    }

    /// transformers' requirements: an even sequence length (the two halves of the order), a
    /// probability in (0, 1] and spans of at least one token.
    pub fn validate(&self, seq_len: usize) -> Result<()> {
        if seq_len == 0 || !seq_len.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "permutation LM needs an even sequence length (the factorisation order keeps the second half after the first), got {seq_len}"
            )));
        }
        if !(self.plm_probability > 0.0 && self.plm_probability <= 1.0) {
            return Err(Error::invalid(format!(
                "plm_probability {} is not in (0, 1]",
                self.plm_probability
            )));
        }
        if self.max_span_length == 0 {
            return Err(Error::invalid("max_span_length must be at least 1"));
        }
        Ok(())
    }
}

/// One example's permutation-LM inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlmExample {
    /// The ids with masked positions replaced by the mask token.
    pub input_ids: Vec<u32>,
    /// The original ids at masked positions, -100 elsewhere.
    pub labels: Vec<i64>,
    /// (seq, seq) row-major: 1 where position i may not see position j.
    pub perm_mask: Vec<f32>,
}

/// Masks one example; `functional[i]` marks special tokens and padding, never masked.
pub fn plm_example(
    ids: &[u32],
    functional: &[bool],
    cfg: &PlmConfig,
    rng: &mut ChaCha8Rng,
) -> Result<PlmExample> {
    let len = ids.len();
    cfg.validate(len)?;
    let mut masked = vec![false; len];
    let mut cur = 0;
    while cur < len {
        let span = rng.random_range(1..=cfg.max_span_length);
        let context = (span as f64 / cfg.plm_probability) as usize;
        let start = cur + rng.random_range(0..=context - span);
        masked
            .iter_mut()
            .skip(start)
            .take(span)
            .for_each(|m| *m = true);
        cur += context;
    }
    masked
        .iter_mut()
        .zip(functional)
        .for_each(|(m, &f)| *m &= !f);

    // Ranks in the factorisation order: one permutation of the first half, repeated + half for
    // the second; unmasked ordinary tokens rank first (-1), seen by all and seeing no target.
    let half = len / 2;
    let mut order: Vec<i64> = (0..half as i64).collect();
    order.shuffle(rng);
    let rank: Vec<i64> = (0..len)
        .map(|p| {
            let r = if p < half {
                order[p]
            } else {
                order[p - half] + half as i64
            };
            if !masked[p] && !functional[p] { -1 } else { r }
        })
        .collect();
    let perm_mask = (0..len)
        .flat_map(|i| {
            (0..len)
                .map(|j| (rank[i] <= rank[j] && masked[j]) as u8 as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let input_ids = ids
        .iter()
        .zip(&masked)
        .map(|(&t, &m)| if m { cfg.mask_token_id } else { t })
        .collect();
    let labels = ids
        .iter()
        .zip(&masked)
        .map(|(&t, &m)| if m { i64::from(t) } else { -100 })
        .collect();
    Ok(PlmExample {
        input_ids,
        labels,
        perm_mask,
    })
}

/// The permutation-LM objective over blocks of equal, even length, for the trainer.
pub struct PermutationLmObjective<'a> {
    pub model: &'a dyn PermutationLm,
    pub blocks: &'a dyn crate::data::Examples,
    pub config: PlmConfig,
    /// Ids never masked (`<cls>`, `<sep>`, `<pad>`, ...).
    pub special_ids: Vec<u32>,
    pub seed: u64,
}

impl crate::train::Objective for PermutationLmObjective<'_> {
    fn num_examples(&self) -> usize {
        self.blocks.num_examples()
    }

    fn loss(
        &self,
        examples: &[usize],
        epoch: usize,
        mode: crate::nn::Mode,
    ) -> Result<crate::train::LossTerms> {
        let device: Device = self.model.device();
        let mut rows = Vec::with_capacity(examples.len());
        for &i in examples {
            let ids = self.blocks.example(i);
            let functional: Vec<bool> = ids.iter().map(|t| self.special_ids.contains(t)).collect();
            let mut rng = example_rng(self.seed, epoch as u64, i as u64);
            rows.push(plm_example(&ids, &functional, &self.config, &mut rng)?);
        }
        let (b, len) = (rows.len(), rows.first().map_or(0, |r| r.input_ids.len()));
        let tokens = b * len;
        let input_ids = Tensor::from_vec(
            rows.iter()
                .flat_map(|r| r.input_ids.clone())
                .collect::<Vec<_>>(),
            (b, len),
            &device,
        )?;
        let labels = Tensor::from_vec(
            rows.iter()
                .flat_map(|r| r.labels.clone())
                .collect::<Vec<_>>(),
            (b, len),
            &device,
        )?;
        let perm_mask = Tensor::from_vec(
            rows.iter()
                .flat_map(|r| r.perm_mask.clone())
                .collect::<Vec<_>>(),
            (b, len, len),
            &device,
        )?;
        let target_mapping = Tensor::eye(len, candle_core::DType::F32, &device)?
            .unsqueeze(0)?
            .broadcast_as((b, len, len))?
            .contiguous()?;
        let logits =
            self.model
                .permutation_logits(&input_ids, &perm_mask, &target_mapping, mode)?; // (b, len, vocab)
        let loss = if rows.iter().any(|r| r.labels.iter().any(|&l| l >= 0)) {
            crate::heads::cross_entropy_loss(&logits, &labels)?
        } else {
            // No target in the batch: a zero loss still attached to the graph (not NaN).
            (logits.sum_all()? * 0.0)?
        };
        let count = rows
            .iter()
            .map(|r| r.labels.iter().filter(|&&l| l >= 0).count())
            .sum();
        Ok(crate::train::LossTerms {
            loss,
            count,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collator's rules on a large sample: spans, targets, what each position sees.
    #[test]
    fn masks_obey_the_collators_rules() {
        let cfg = PlmConfig::new(3);
        let len = 32;
        let (mut masked_total, mut tokens) = (0usize, 0usize);
        for ex in 0..3000u64 {
            let mut rng = example_rng(11, 0, ex);
            let ids: Vec<u32> = (0..len as u32)
                .map(|i| 10 + (i * 7 + ex as u32) % 90)
                .collect();
            // <sep> <cls> at the end and two pads at the front in some rows, as XLNet lays out.
            let mut functional = vec![false; len];
            functional[len - 2] = true;
            functional[len - 1] = true;
            if ex % 3 == 0 {
                functional[0] = true;
                functional[1] = true;
            }
            let e = plm_example(&ids, &functional, &cfg, &mut rng).unwrap();
            let masked: Vec<bool> = e.labels.iter().map(|&l| l >= 0).collect();
            let see = |i: usize, j: usize| e.perm_mask[i * len + j] == 0.0;
            for p in 0..len {
                if masked[p] {
                    assert!(!functional[p], "a special or padding token was masked");
                    assert_eq!(e.input_ids[p], 3);
                    assert_eq!(e.labels[p], i64::from(ids[p]));
                    assert!(!see(p, p), "a target sees itself");
                } else {
                    assert_eq!(e.input_ids[p], ids[p]);
                    // An unmasked token is visible from every position.
                    assert!(
                        (0..len).all(|i| see(i, p)),
                        "unmasked {p} hidden from some position"
                    );
                }
            }
            // Masked runs are spans of at most max_span_length tokens.
            let mut run = 0;
            for &m in masked.iter().chain([false].iter()) {
                if m {
                    run += 1;
                } else {
                    assert!(run <= 2 * cfg.max_span_length, "run of {run}");
                    run = 0;
                }
            }
            // The second half comes after the first in the order: between a first-half and a
            // second-half position that both have a rank (masked or functional), the later one
            // sees the earlier's target and not the other way round.
            let ranked = |p: usize| masked[p] || functional[p];
            for i in 0..len / 2 {
                for j in len / 2..len {
                    if masked[j] && ranked(i) {
                        assert!(!see(i, j), "{i} sees later-half target {j}");
                    }
                    if masked[i] && ranked(j) {
                        assert!(see(j, i), "{j} misses earlier-half target {i}");
                    }
                }
            }
            // Ordinary unmasked tokens come first in the order: they see no target.
            for p in (0..len).filter(|&p| !ranked(p)) {
                assert!(
                    (0..len).filter(|&q| masked[q]).all(|q| !see(p, q)),
                    "unmasked {p} sees a target"
                );
            }
            masked_total += masked.iter().filter(|&&m| m).count();
            tokens += functional.iter().filter(|&&f| !f).count();
        }
        // About one token in six is a target (spans of 1-5 in contexts of 6-30).
        let rate = masked_total as f64 / tokens as f64;
        assert!((0.12..0.19).contains(&rate), "masked rate {rate}");
    }

    #[test]
    fn odd_lengths_are_refused() {
        let mut rng = example_rng(1, 0, 0);
        let err = plm_example(&[5; 7], &[false; 7], &PlmConfig::new(3), &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("even sequence length") && err.contains('7'),
            "{err}"
        );
    }
}
