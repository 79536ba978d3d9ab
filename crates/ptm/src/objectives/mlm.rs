//! Masked language modelling as transformers' `DataCollatorForLanguageModeling` (and
//! `DataCollatorForWholeWordMask`) prepares it: 15% of the non-special tokens are chosen; of
//! those 80% become `[MASK]`, 10% a random token, 10% stay; labels hold the original ids at the
//! chosen positions and -100 elsewhere.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::Examples;
use crate::error::{Error, Result};
use crate::nn::loss::IGNORE_INDEX;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlmConfig {
    pub mlm_probability: f64,
    /// Share of chosen tokens replaced by the mask token.
    pub mask_replace_prob: f64,
    /// Share of chosen tokens replaced by a random token.
    pub random_replace_prob: f64,
    pub mask_token_id: u32,
    pub vocab_size: u32,
    /// Choose whole words (all their sub-tokens) instead of single tokens.
    pub whole_word: bool,
}

impl MlmConfig {
    pub fn new(mask_token_id: u32, vocab_size: u32) -> Self {
        MlmConfig {
            mlm_probability: 0.15,
            mask_replace_prob: 0.8,
            random_replace_prob: 0.1,
            mask_token_id,
            vocab_size,
            whole_word: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let p = |x: f64| (0.0..=1.0).contains(&x);
        if !p(self.mlm_probability)
            || !p(self.mask_replace_prob)
            || !p(self.random_replace_prob)
            || self.mask_replace_prob + self.random_replace_prob > 1.0
        {
            return Err(Error::invalid(format!(
                "MLM probabilities out of range: {self:?}"
            )));
        }
        if self.mask_token_id >= self.vocab_size {
            return Err(Error::invalid(format!(
                "mask token id {} is outside the vocabulary of {}",
                self.mask_token_id, self.vocab_size
            )));
        }
        Ok(())
    }
}

/// Masks one example. `special[i]` marks tokens never chosen (`[CLS]`, `[SEP]`, padding);
/// `word_ids[i]` (for whole-word masking) groups sub-tokens into words.
/// Returns the model inputs and the labels (i64, -100 where no loss is taken).
pub fn mask_tokens(
    ids: &[u32],
    special: &[bool],
    word_ids: Option<&[Option<u32>]>,
    cfg: &MlmConfig,
    rng: &mut ChaCha8Rng,
) -> (Vec<u32>, Vec<i64>) {
    let chosen: Vec<bool> = match (cfg.whole_word, word_ids) {
        (true, Some(words)) => choose_whole_words(special, words, cfg.mlm_probability, rng),
        _ => special
            .iter()
            .map(|&s| !s && rng.random::<f64>() < cfg.mlm_probability)
            .collect(),
    };
    let mut inputs = ids.to_vec();
    let mut labels = vec![IGNORE_INDEX; ids.len()];
    // transformers draws "random" among the rest with probability random / (1 - mask).
    let random_share = if cfg.mask_replace_prob < 1.0 {
        cfg.random_replace_prob / (1.0 - cfg.mask_replace_prob)
    } else {
        0.0
    };
    for (i, &c) in chosen.iter().enumerate() {
        if !c {
            continue;
        }
        labels[i] = i64::from(ids[i]);
        if rng.random::<f64>() < cfg.mask_replace_prob {
            inputs[i] = cfg.mask_token_id;
        } else if rng.random::<f64>() < random_share {
            inputs[i] = rng.random_range(0..cfg.vocab_size);
        }
    }
    (inputs, labels)
}

/// transformers' whole-word selection: words in random order, taken while the masked token
/// count stays within round(n · p) (at least 1) of the non-special tokens.
fn choose_whole_words(
    special: &[bool],
    word_ids: &[Option<u32>],
    p: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<bool> {
    let mut words: Vec<Vec<usize>> = Vec::new();
    let mut last: Option<u32> = None;
    for (i, (&s, w)) in special.iter().zip(word_ids).enumerate() {
        match (s, w) {
            (false, Some(w)) if last == Some(*w) => {
                words.last_mut().into_iter().for_each(|g| g.push(i))
            }
            (false, Some(w)) => {
                words.push(vec![i]);
                last = Some(*w);
            }
            _ => last = None,
        }
    }
    let n: usize = words.iter().map(Vec::len).sum();
    let budget = ((n as f64 * p).round() as usize).max(1);
    words.shuffle(rng);
    let mut chosen = vec![false; special.len()];
    let mut count = 0;
    for w in words {
        if count >= budget {
            break;
        }
        if count + w.len() > budget {
            continue;
        }
        count += w.len();
        w.into_iter().for_each(|i| chosen[i] = true);
    }
    chosen
}

/// Turns token-id examples into a masked, padded batch: each example is masked with its own
/// generator (seed, epoch, index), so a batch is the same whatever its neighbours.
#[derive(Debug, Clone)]
pub struct MlmCollator {
    pub config: MlmConfig,
    /// Ids never masked (`[CLS]`, `[SEP]`, `[PAD]`, ...).
    pub special_ids: Vec<u32>,
    pub pad_id: u32,
    pub seed: u64,
}

/// A collated masked-LM batch.
pub struct MaskedBatch {
    pub input: crate::models::EncoderInput,
    /// (batch, seq) original ids at the chosen positions, -100 elsewhere.
    pub labels: Tensor,
    /// Real (non-padding) tokens in the batch.
    pub tokens: usize,
}

/// One example to collate: its index, its ids and its token type ids if any.
pub type CollateItem = (usize, Vec<u32>, Option<Vec<u32>>);

impl MlmCollator {
    /// `items`: (example index, ids, token type ids if any).
    pub fn collate(
        &self,
        items: &[CollateItem],
        epoch: usize,
        device: &Device,
    ) -> Result<MaskedBatch> {
        let len = items.iter().map(|(_, ids, _)| ids.len()).max().unwrap_or(0);
        let (mut inputs, mut labels, mut mask, mut types) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut tokens = 0;
        for (i, ids, type_ids) in items {
            let special: Vec<bool> = ids.iter().map(|t| self.special_ids.contains(t)).collect();
            let mut rng = super::example_rng(self.seed, epoch as u64, *i as u64);
            let (x, y) = mask_tokens(ids, &special, None, &self.config, &mut rng);
            tokens += ids.len();
            let pad = len - ids.len();
            inputs.extend(x.into_iter().chain(std::iter::repeat_n(self.pad_id, pad)));
            labels.extend(y.into_iter().chain(std::iter::repeat_n(IGNORE_INDEX, pad)));
            mask.extend(std::iter::repeat_n(1u32, ids.len()).chain(std::iter::repeat_n(0, pad)));
            match type_ids {
                Some(t) => types.extend(t.iter().copied().chain(std::iter::repeat_n(0, pad))),
                None => types.extend(std::iter::repeat_n(0u32, len)),
            }
        }
        let b = items.len();
        let any_types = items.iter().any(|(_, _, t)| t.is_some());
        Ok(MaskedBatch {
            input: crate::models::EncoderInput {
                input_ids: Tensor::from_vec(inputs, (b, len), device)?,
                attention_mask: Some(Tensor::from_vec(mask, (b, len), device)?),
                token_type_ids: any_types
                    .then(|| Tensor::from_vec(types, (b, len), device))
                    .transpose()?,
            },
            labels: Tensor::from_vec(labels, (b, len), device)?,
            tokens,
        })
    }
}

/// The masked-LM objective over token-id examples, for the trainer.
pub struct MaskedLmObjective<'a> {
    pub model: &'a dyn crate::models::traits::MaskedLm,
    pub examples: &'a dyn Examples,
    pub collator: MlmCollator,
}

impl crate::train::Objective for MaskedLmObjective<'_> {
    fn num_examples(&self) -> usize {
        self.examples.num_examples()
    }

    fn loss(
        &self,
        examples: &[usize],
        epoch: usize,
        mode: crate::nn::Mode,
    ) -> Result<crate::train::LossTerms> {
        let device = self.model.device();
        let items: Vec<_> = examples
            .iter()
            .map(|&i| (i, self.examples.example(i), None))
            .collect();
        let batch = self.collator.collate(&items, epoch, &device)?;
        let loss = match self
            .model
            .masked_lm_loss(&batch.input, &batch.labels, mode)?
        {
            Some(loss) => loss,
            // A batch in which no token was chosen has no targets: a zero loss (not PyTorch's
            // NaN), still attached to the graph.
            None => {
                (self
                    .model
                    .forward(&batch.input, None, mode)?
                    .logits
                    .sum_all()?
                    * 0.0)?
            }
        };
        let count = batch
            .labels
            .ge(0i64)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        Ok(crate::train::LossTerms {
            loss,
            count,
            tokens: batch.tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::example_rng;

    #[test]
    fn statistics_over_a_large_sample() {
        let cfg = MlmConfig::new(4, 1000);
        let (mut tokens, mut chosen, mut masked, mut random, mut kept, mut special_hit) =
            (0, 0, 0, 0, 0, 0);
        for ex in 0..2000u64 {
            let mut rng = example_rng(7, 0, ex);
            let ids: Vec<u32> = (0..64)
                .map(|i| 5 + ((ex as u32 * 31 + i * 17) % 990))
                .collect();
            let special: Vec<bool> = (0..64).map(|i| i == 0 || i == 63).collect();
            let (inputs, labels) = mask_tokens(&ids, &special, None, &cfg, &mut rng);
            for i in 0..64 {
                if special[i] {
                    special_hit += usize::from(labels[i] != IGNORE_INDEX || inputs[i] != ids[i]);
                    continue;
                }
                tokens += 1;
                if labels[i] == IGNORE_INDEX {
                    assert_eq!(inputs[i], ids[i], "an unchosen token changed");
                    continue;
                }
                chosen += 1;
                assert_eq!(labels[i], i64::from(ids[i]));
                if inputs[i] == 4 {
                    masked += 1;
                } else if inputs[i] == ids[i] {
                    kept += 1;
                } else {
                    random += 1;
                }
            }
        }
        assert_eq!(special_hit, 0, "special tokens are never masked");
        let frac = |a: usize, b: usize| a as f64 / b as f64;
        assert!(
            (frac(chosen, tokens) - 0.15).abs() < 0.005,
            "{}",
            frac(chosen, tokens)
        );
        assert!(
            (frac(masked, chosen) - 0.8).abs() < 0.01,
            "{}",
            frac(masked, chosen)
        );
        assert!(
            (frac(random, chosen) - 0.1).abs() < 0.01,
            "{}",
            frac(random, chosen)
        );
        assert!(
            (frac(kept, chosen) - 0.1).abs() < 0.01,
            "{}",
            frac(kept, chosen)
        );
    }

    #[test]
    fn whole_words_are_masked_together() {
        let cfg = MlmConfig {
            whole_word: true,
            mlm_probability: 0.3,
            ..MlmConfig::new(4, 100)
        };
        // [CLS] w0 w0 w1 w2 w2 w2 w3 [SEP]
        let words = [
            None,
            Some(0),
            Some(0),
            Some(1),
            Some(2),
            Some(2),
            Some(2),
            Some(3),
            None,
        ];
        let special: Vec<bool> = words.iter().map(Option::is_none).collect();
        let ids: Vec<u32> = (10..19).collect();
        for ex in 0..200 {
            let (_, labels) = mask_tokens(
                &ids,
                &special,
                Some(&words),
                &cfg,
                &mut example_rng(1, 0, ex),
            );
            let chosen: Vec<bool> = labels.iter().map(|l| *l != IGNORE_INDEX).collect();
            assert!(!chosen[0] && !chosen[8]);
            assert_eq!(chosen[1], chosen[2]);
            assert!(chosen[4] == chosen[5] && chosen[5] == chosen[6]);
            // round(7 · 0.3) = 2 tokens at most
            assert!((1..=2).contains(&chosen.iter().filter(|c| **c).count()));
        }
    }

    #[test]
    fn same_seed_same_masks() {
        let cfg = MlmConfig::new(4, 100);
        let ids: Vec<u32> = (5..60).collect();
        let special = vec![false; ids.len()];
        let a = mask_tokens(&ids, &special, None, &cfg, &mut example_rng(3, 1, 9));
        let b = mask_tokens(&ids, &special, None, &cfg, &mut example_rng(3, 1, 9));
        let c = mask_tokens(&ids, &special, None, &cfg, &mut example_rng(3, 2, 9));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(
            MlmConfig {
                mask_token_id: 100,
                ..cfg
            }
            .validate()
            .is_err()
        );
    }
}
