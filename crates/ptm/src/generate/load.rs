//! Opening a model directory for generation: its causal LM and its generation settings.

use super::config::GenerationConfig;
use crate::error::Result;
use crate::models::traits::CausalLm;

/// Loads the causal LM of a model directory (its LM head must be in the checkpoint) with its
/// generation settings.
pub fn load_causal_lm(
    pretrained: &crate::models::Pretrained,
    opts: &crate::nn::StoreOptions,
) -> Result<(Box<dyn CausalLm>, GenerationConfig)> {
    let store = pretrained.store(opts)?;
    let model = crate::models::auto::causal_lm(&pretrained.config, &store.root())
        .map_err(|e| e.for_task("text generation", &pretrained.dir))?;
    let ids = pretrained.config.special_token_ids();
    let generation = GenerationConfig::from_dir(&pretrained.dir, ids.eos, ids.bos, ids.pad)?;
    crate::models::require_trained(&store, &pretrained.dir, "LM head")?;
    crate::models::report_load(&store, model.architecture());
    Ok((model, generation))
}
