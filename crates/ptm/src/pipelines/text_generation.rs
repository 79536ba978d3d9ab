//! Text generation, as transformers' text-generation pipeline: each prompt continued by a
//! causal language model, returned with the prompt in front (`return_full_text`). The search
//! (greedy, sampling, beams) and its settings are [`crate::generate`]'s.

use crate::error::{Error, Result};
use crate::generate::{GenerationConfig, generate, load_causal_lm, stop_string_checker};
use crate::models::Pretrained;
use crate::models::traits::CausalLm;
use crate::nn::StoreOptions;
use crate::tokenizer::Tokenizer;

/// One generated text, with transformers' field name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GeneratedText {
    pub generated_text: String,
}

pub struct TextGeneration {
    tokenizer: Tokenizer,
    model: Box<dyn CausalLm>,
    config: GenerationConfig,
    batch_size: usize,
}

impl TextGeneration {
    /// Loads a causal language model with its `generation_config.json`.
    pub fn load(spec: &str, store: &StoreOptions) -> Result<Self> {
        let pretrained = Pretrained::open(spec)?;
        let tokenizer = pretrained.checked_tokenizer()?;
        let (model, config) = load_causal_lm(&pretrained, store)?;
        Ok(TextGeneration {
            tokenizer,
            model,
            config,
            batch_size: 8,
        })
    }

    /// Decodes this many prompts together (default 8; one at a time for a model that cannot
    /// mask padding).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("the batch size must be at least 1"));
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// The model's generation settings, to start a call's own from.
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.config
    }

    /// For each prompt, `config.num_return_sequences` texts: the prompt and its continuation.
    /// Prompts are read without special tokens, after the model's own prefix (XLNet's padding
    /// text), as transformers does; an empty prompt starts from the BOS token.
    pub fn generate(
        &self,
        prompts: &[&str],
        config: &GenerationConfig,
    ) -> Result<Vec<Vec<GeneratedText>>> {
        config.validate()?;
        let prefix = self.model.prompt_prefix().unwrap_or_default();
        let ids = prompts
            .iter()
            .enumerate()
            .map(|(n, text)| {
                let ids = self
                    .tokenizer
                    .encode_plain(&[&format!("{prefix}{text}")])?
                    .remove(0);
                if !ids.is_empty() {
                    return Ok(ids);
                }
                config.bos_token_id.map(|b| vec![b]).ok_or_else(|| {
                    Error::invalid(format!(
                        "prompt {}: empty, and the model has no BOS token to start from",
                        n + 1
                    ))
                })
            })
            .collect::<Result<Vec<Vec<u32>>>>()?;
        let stop = stop_string_checker(&config.stop_strings, |ids| {
            self.tokenizer.decode(ids, true).ok()
        });
        let batch_size = if self.model.masks_padding() {
            self.batch_size
        } else {
            1
        };
        let per_prompt = config.num_return_sequences;
        let mut out = Vec::with_capacity(prompts.len());
        for (texts, ids) in prompts.chunks(batch_size).zip(ids.chunks(batch_size)) {
            let generated = generate(
                self.model.as_ref(),
                ids,
                config,
                Some(&stop),
                &mut |_, _| {},
            )?;
            for (text, gens) in texts.iter().zip(generated.chunks(per_prompt)) {
                out.push(
                    gens.iter()
                        .map(|g| {
                            Ok(GeneratedText {
                                generated_text: format!(
                                    "{text}{}",
                                    self.tokenizer.decode(&g.token_ids, true)?
                                ),
                            })
                        })
                        .collect::<Result<_>>()?,
                );
            }
        }
        Ok(out)
    }
}
