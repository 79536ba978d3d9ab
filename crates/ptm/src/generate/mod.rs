//! Text generation for every decoder model: prompts in, new tokens out, one decoding step at
//! a time through a [`CausalLm`], which carries its own [`DecodingState`] (keys and values, a
//! memory, an encoder's output) from step to step.
//!
//! The prompts go through the model once as a left-padded batch (`state.rs`); at each step a
//! row's next-token scores become a token (`logits.rs`) through transformers' processors, in
//! the order its `generate()` applies them:
//!
//! 1. repetition penalty: scores of tokens already in the row divided by it (negative ones
//!    multiplied);
//! 2. no-repeat n-grams: tokens that would repeat an n-gram of the row banned;
//! 3. minimum new tokens: EOS banned until that many are generated;
//!
//! and, when sampling, its warpers: 4. temperature, 5. top-k, 6. top-p; then the argmax, or a
//! draw seeded by [`GenerationConfig::seed`]. The search (`search.rs`) is greedy, sampling or
//! beam search, and ends each row on EOS, a stop string or the length limit. The settings come
//! from `generation_config.json` (`config.rs`); [`perplexity()`] scores a whole text instead.
//!
//! [`CausalLm`]: crate::models::traits::CausalLm
//! [`DecodingState`]: crate::models::traits::DecodingState

mod config;
mod load;
mod logits;
mod perplexity;
mod search;
mod state;

pub use config::{EarlyStopping, GENERATION_CONFIG, GenerationConfig};
pub use load::load_causal_lm;
pub use logits::{process_logits, top_k_filter, top_p_filter};
pub use perplexity::perplexity;
pub use search::{Generation, StopTest, generate, stop_string_checker};
pub use state::EncoderDecoderState;
