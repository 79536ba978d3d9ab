//! Pretraining objectives: how a batch of token ids becomes model inputs and labels.

pub mod clm;
pub mod mlm;
pub mod nsp;
pub mod plm;

pub use crate::models::traits::PretrainingObjective;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator of one example's random choices, from the run's seed, the epoch and the
/// example's index: the same example is masked the same way whatever the batch size, the
/// order of the data or the number of processes.
pub fn example_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    // SplitMix64 over the three numbers: distinct inputs give unrelated streams.
    let mut x = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(x ^ (x >> 31))
}
