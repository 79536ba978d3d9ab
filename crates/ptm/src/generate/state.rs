//! What decoding carries from one step to the next. [`BatchState`] is the search's side: each
//! row's left-padded sequence, attention mask and next position, the model's own
//! [`DecodingState`], and the latest scores; beam search reorders all of it to follow its beams.
//! [`EncoderDecoderState`] is a model's side for encoder-decoders (BART, Marian): the encoder's
//! output, read at every step, and the decoder's self- and cross-attention caches.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::models::DecoderInput;
use crate::models::traits::{CausalLm, DecodingState};
use crate::nn::attention::KvCache;

/// A batch of left-padded prompts fed through the model once, then one token per row a step.
pub(super) struct BatchState {
    /// Each row's whole sequence so far, padding included (what transformers' processors see).
    pub(super) seqs: Vec<Vec<u32>>,
    /// The attention mask, row-major (rows × width).
    mask: Vec<u32>,
    /// The padded length so far: the prompts' longest plus the tokens decoded.
    pub(super) width: usize,
    /// Each row's next position id.
    next_pos: Vec<u32>,
    cache: Box<dyn DecodingState>,
    /// The model's device, where every input is built.
    device: Device,
    /// Scores of each row's next token.
    pub(super) logits: Vec<Vec<f32>>,
}

impl BatchState {
    /// Left-pads `rows`; positions count real tokens only (transformers: cumsum(mask) - 1, pads 1).
    pub(super) fn prefill(model: &dyn CausalLm, rows: &[&Vec<u32>], pad: u32) -> Result<Self> {
        let b = rows.len();
        let width = rows.iter().map(|p| p.len()).max().unwrap_or(0);
        let (mut seqs, mut mask, mut positions) = (
            Vec::with_capacity(b),
            Vec::with_capacity(b * width),
            Vec::with_capacity(b * width),
        );
        for p in rows {
            let n_pad = width - p.len();
            seqs.push(
                std::iter::repeat_n(pad, n_pad)
                    .chain(p.iter().copied())
                    .collect::<Vec<u32>>(),
            );
            mask.extend(std::iter::repeat_n(0, n_pad).chain(std::iter::repeat_n(1, p.len())));
            positions.extend(std::iter::repeat_n(1u32, n_pad).chain(0..p.len() as u32));
        }
        let device = model.device();
        let ids = Tensor::from_vec(seqs.concat(), (b, width), &device)?;
        let pos = Tensor::from_vec(positions, (b, width), &device)?;
        let m = Tensor::from_vec(mask.clone(), (b, width), &device)?;
        let mut cache = model.new_state();
        let logits = last_position(&model.step(
            DecoderInput {
                input_ids: &ids,
                attention_mask: Some(&m),
                position_ids: Some(&pos),
            },
            cache.as_mut(),
        )?)?;
        let next_pos = rows.iter().map(|p| p.len() as u32).collect();
        Ok(BatchState {
            seqs,
            mask,
            width,
            next_pos,
            cache,
            device,
            logits,
        })
    }

    /// Feeds one token per row (rows already reordered to follow their beams).
    pub(super) fn step(&mut self, model: &dyn CausalLm, tokens: Vec<u32>) -> Result<()> {
        let b = tokens.len();
        let mut mask = Vec::with_capacity(b * (self.width + 1));
        for row in self.mask.chunks(self.width) {
            mask.extend_from_slice(row);
            mask.push(1);
        }
        self.mask = mask;
        self.width += 1;
        let device = &self.device;
        let ids = Tensor::from_vec(tokens, (b, 1), device)?;
        let pos = Tensor::from_vec(self.next_pos.clone(), (b, 1), device)?;
        self.next_pos.iter_mut().for_each(|p| *p += 1);
        let m = Tensor::from_vec(self.mask.clone(), (b, self.width), device)?;
        self.logits = last_position(&model.step(
            DecoderInput {
                input_ids: &ids,
                attention_mask: Some(&m),
                position_ids: Some(&pos),
            },
            self.cache.as_mut(),
        )?)?;
        Ok(())
    }

    /// Keeps the rows `from[i]` as new row i: mask, positions, sequences and cache follow.
    pub(super) fn reorder(&mut self, from: &[usize]) -> Result<()> {
        let w = self.width;
        self.mask = from
            .iter()
            .flat_map(|&r| self.mask[r * w..(r + 1) * w].to_vec())
            .collect();
        self.next_pos = from.iter().map(|&r| self.next_pos[r]).collect();
        self.seqs = from.iter().map(|&r| self.seqs[r].clone()).collect();
        let idx = Tensor::from_vec(
            from.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            from.len(),
            &self.device,
        )?;
        self.cache.select_rows(&idx)
    }
}

/// (batch, seq, vocab) -> the last position's scores per row, in f32 on the host.
fn last_position(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let s = logits.dim(1)?;
    Ok(logits
        .narrow(1, s - 1, 1)?
        .squeeze(1)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// An encoder-decoder's decoding state: the source is encoded once, before the first step;
/// each step then reads the encoder's output through cross-attention and its own earlier
/// tokens through self-attention.
pub struct EncoderDecoderState {
    /// The encoder's last hidden state (batch, src, hidden).
    pub encoder_hidden: Tensor,
    /// The source's attention mask (batch, src): 1 for tokens, 0 for padding.
    pub encoder_mask: Tensor,
    /// Keys and values of the target tokens decoded so far, per decoder layer.
    pub self_attn: KvCache,
    /// Keys and values projected from the encoder's output, per decoder layer: computed at
    /// the first step and reused, since the source does not change.
    pub cross_attn: KvCache,
}

impl EncoderDecoderState {
    /// A state before the first decoding step, for a decoder of `layers` layers.
    pub fn new(encoder_hidden: Tensor, encoder_mask: Tensor, layers: usize) -> Self {
        EncoderDecoderState {
            encoder_hidden,
            encoder_mask,
            self_attn: KvCache::new(layers),
            cross_attn: KvCache::new(layers),
        }
    }
}

impl DecodingState for EncoderDecoderState {
    /// Every part follows the rows: a beam keeps its own source next to its own caches.
    fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        self.encoder_hidden = self.encoder_hidden.index_select(rows, 0)?;
        self.encoder_mask = self.encoder_mask.index_select(rows, 0)?;
        self.self_attn.select_rows(rows)?;
        self.cross_attn.select_rows(rows)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (batch, ..dims) whose row r holds r + offset everywhere.
    fn rows_marked(batch: usize, dims: &[usize], offset: f32) -> Tensor {
        let per_row: usize = dims.iter().product();
        let data: Vec<f32> = (0..batch)
            .flat_map(|r| std::iter::repeat_n(r as f32 + offset, per_row))
            .collect();
        let mut shape = vec![batch];
        shape.extend_from_slice(dims);
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// Each row's first value.
    fn row_marks(t: &Tensor) -> Vec<f32> {
        let b = t.dim(0).unwrap();
        t.reshape((b, ()))
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn select_rows_keeps_the_right_rows_of_every_part() {
        let (batch, src, hidden, heads, head_dim) = (3, 4, 6, 2, 3);
        let mut state = EncoderDecoderState::new(
            rows_marked(batch, &[src, hidden], 0.0),
            rows_marked(batch, &[src], 0.0)
                .to_dtype(DType::U32)
                .unwrap(),
            1,
        );
        // One decoded step in the self-attention cache, the source's keys in the cross one;
        // each part marked apart so a mix-up between them shows.
        let kv = |offset| rows_marked(batch, &[heads, 1, head_dim], offset);
        state.self_attn.append(0, kv(10.0), kv(20.0)).unwrap();
        let src_kv = |offset| rows_marked(batch, &[heads, src, head_dim], offset);
        state
            .cross_attn
            .append(0, src_kv(30.0), src_kv(40.0))
            .unwrap();

        let from = [2u32, 0, 0];
        let idx = Tensor::new(&from[..], &Device::Cpu).unwrap();
        state.select_rows(&idx).unwrap();

        let want = |offset: f32| from.iter().map(|&r| r as f32 + offset).collect::<Vec<_>>();
        assert_eq!(state.encoder_hidden.dims(), &[3, src, hidden]);
        assert_eq!(row_marks(&state.encoder_hidden), want(0.0));
        assert_eq!(row_marks(&state.encoder_mask), want(0.0));
        // The caches hold no getter: a further step returns the kept keys before the new ones.
        let (k, v) = state.self_attn.append(0, kv(0.0), kv(0.0)).unwrap();
        assert_eq!(k.dims(), &[3, heads, 2, head_dim]);
        assert_eq!(row_marks(&k), want(10.0));
        assert_eq!(row_marks(&v), want(20.0));
        let (k, v) = state.cross_attn.append(0, kv(0.0), kv(0.0)).unwrap();
        assert_eq!(k.dims(), &[3, heads, src + 1, head_dim]);
        assert_eq!(row_marks(&k), want(30.0));
        assert_eq!(row_marks(&v), want(40.0));
    }
}
