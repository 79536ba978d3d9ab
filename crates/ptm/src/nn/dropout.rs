//! Train/eval mode and seeded dropout. candle's CPU random numbers cannot be seeded, so masks
//! are drawn here from a ChaCha generator whose state can be saved and restored.

use std::sync::Mutex;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// The generator behind every dropout mask of a training run.
pub struct DropoutRng(Mutex<ChaCha8Rng>);

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        DropoutRng(Mutex::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// The generator's position, to save in a checkpoint.
    pub fn state(&self) -> RngState {
        let rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        RngState::of(&rng)
    }

    /// A generator that continues exactly where `state` was taken.
    pub fn from_state(state: &RngState) -> crate::error::Result<Self> {
        Ok(DropoutRng(Mutex::new(state.restore()?)))
    }

    /// `n` mask values: 0 with probability `p`, else 1 / (1 - p).
    pub(crate) fn mask(&self, n: usize, p: f64) -> Vec<f32> {
        let mut rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let scale = (1.0 / (1.0 - p)) as f32;
        (0..n)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
            .collect()
    }
}

/// A ChaCha generator's seed and position, as text (JSON has no 128-bit integers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RngState {
    pub seed: String,
    pub word_pos: String,
}

impl RngState {
    pub fn of(rng: &ChaCha8Rng) -> Self {
        let seed = rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        RngState {
            seed,
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> crate::error::Result<ChaCha8Rng> {
        let bad = || crate::error::Error::invalid(format!("malformed generator state {self:?}"));
        if self.seed.len() != 64 {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.seed.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_word_pos(self.word_pos.parse().map_err(|_| bad())?);
        Ok(rng)
    }
}

/// Whether a forward pass trains (dropout on, drawing from the generator) or evaluates.
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    Eval,
    Train(&'a DropoutRng),
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by
/// 1 / (1 - p); the identity in eval mode.
pub fn dropout(x: &Tensor, p: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Train(rng) if p > 0.0 => {
            let mask = rng.mask(x.elem_count(), p);
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
            Ok((x * mask)?)
        }
        _ => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn eval_is_identity_and_train_is_seeded() {
        let x = Tensor::ones((64, 64), DType::F32, &Device::Cpu).unwrap();
        let same = dropout(&x, 0.5, Mode::Eval).unwrap();
        assert_eq!(same.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());

        let a = dropout(&x, 0.25, Mode::Train(&DropoutRng::new(1))).unwrap();
        let b = dropout(&x, 0.25, Mode::Train(&DropoutRng::new(1))).unwrap();
        let c = dropout(&x, 0.25, Mode::Train(&DropoutRng::new(2))).unwrap();
        let (a, b, c) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        let dropped = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "{dropped}");
        assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn saved_state_continues_the_stream() {
        let x = Tensor::ones(1000, DType::F32, &Device::Cpu).unwrap();
        let rng = DropoutRng::new(9);
        dropout(&x, 0.5, Mode::Train(&rng)).unwrap();
        let state = rng.state();
        let json = serde_json::to_string(&state).unwrap();
        let next = dropout(&x, 0.5, Mode::Train(&rng))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let restored = DropoutRng::from_state(&serde_json::from_str(&json).unwrap()).unwrap();
        let again = dropout(&x, 0.5, Mode::Train(&restored))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(next, again);
        assert!(
            DropoutRng::from_state(&RngState {
                seed: "zz".into(),
                word_pos: "0".into()
            })
            .is_err()
        );
    }
}
