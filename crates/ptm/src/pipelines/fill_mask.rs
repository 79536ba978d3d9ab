//! Fill-mask: the most likely tokens at each mask position, as transformers' fill-mask
//! pipeline reports them.

use candle_core::{D, Device};

use crate::error::{Error, Result};
use crate::models::traits::MaskedLm;
use crate::models::{Pretrained, auto, report_load, require_trained};
use crate::nn::{Mode, StoreOptions, ops::softmax_last_dim};
use crate::tokenizer::Tokenizer;

/// One candidate for one mask, with transformers' field names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FillMaskPrediction {
    pub score: f32,
    pub token: u32,
    pub token_str: String,
    pub sequence: String,
}

pub struct FillMask {
    tokenizer: Tokenizer,
    model: Box<dyn MaskedLm>,
    mask_id: u32,
    mask_token: String,
    /// The most tokens a text may have (the model's positions).
    max_tokens: usize,
    device: Device,
}

impl FillMask {
    pub fn load(spec: &str, store: &StoreOptions) -> Result<Self> {
        let pretrained = Pretrained::open(spec)?;
        let tokenizer = pretrained.checked_tokenizer()?;
        let mask_token = tokenizer.special_tokens().mask.clone();
        let (mask_token, mask_id) = mask_token
            .and_then(|t| tokenizer.token_to_id(&t).map(|id| (t, id)))
            .ok_or_else(|| Error::tokenizer(&pretrained.dir, "the tokenizer has no mask token"))?;
        let params = pretrained.store(store)?;
        let model = auto::masked_lm(&pretrained.config, &params.root())
            .map_err(|e| e.for_task("fill-mask", &pretrained.dir))?;
        require_trained(
            &params,
            &pretrained.dir,
            &format!(
                "masked-LM head (e.g. saved as {})",
                auto::architecture_for(&pretrained.config, auto::Head::MaskedLm)?
            ),
        )?;
        report_load(&params, model.architecture());
        Ok(FillMask {
            tokenizer,
            model,
            mask_id,
            mask_token,
            max_tokens: pretrained.max_positions(),
            device: store.device.clone(),
        })
    }

    pub fn mask_token(&self) -> &str {
        &self.mask_token
    }

    /// For each mask in `text`, the `top_k` most likely tokens, best first. A text longer than
    /// the model's positions is refused (cutting it could cut a mask away).
    pub fn predict(&self, text: &str, top_k: usize) -> Result<Vec<Vec<FillMaskPrediction>>> {
        let enc = self.tokenizer.encode_batch(&[text])?;
        let ids = enc.encodings[0].get_ids().to_vec();
        if ids.len() > self.max_tokens {
            return Err(Error::invalid(format!(
                "the text has {} tokens; the model takes at most {} (max_position_embeddings)",
                ids.len(),
                self.max_tokens
            )));
        }
        let positions: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == self.mask_id)
            .map(|(i, _)| i)
            .collect();
        if positions.is_empty() {
            return Err(Error::invalid(format!(
                "no {} token in the input: {text:?}",
                self.mask_token
            )));
        }
        let input = enc.to_input(self.tokenizer.pad_spec(), &self.device)?;
        let logits = self.model.forward(&input, None, Mode::Eval)?.logits; // (1, seq, vocab)
        let single = positions.len() == 1;
        let mut all = Vec::with_capacity(positions.len());
        for (n, &pos) in positions.iter().enumerate() {
            let scores = logits.get(0)?.get(pos)?.to_dtype(candle_core::DType::F32)?; // (vocab)
            super::check_finite(
                || format!("fill-mask: the scores of mask {} (position {pos})", n + 1),
                &scores.to_vec1::<f32>()?,
            )?;
            let probs = softmax_last_dim(&scores)?;
            let k = top_k.min(probs.dim(D::Minus1)?);
            let probs = probs.to_vec1::<f32>()?;
            let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut row = Vec::with_capacity(k);
            for &(token, score) in ranked.iter().take(k) {
                let token = token as u32;
                let mut filled = ids.clone();
                filled[pos] = token;
                // With several masks the others stay visible, as transformers does.
                let sequence = self.tokenizer.decode(&filled, single)?;
                row.push(FillMaskPrediction {
                    score,
                    token,
                    token_str: self.tokenizer.decode(&[token], false)?,
                    sequence,
                });
            }
            all.push(row);
        }
        Ok(all)
    }
}
