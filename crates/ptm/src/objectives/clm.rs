//! Causal language modelling data as transformers' `run_clm.py` prepares it: the token ids of
//! all documents concatenated and cut into blocks of `block_size`, the remainder dropped;
//! labels are the inputs (the model shifts them).

/// Blocks of `block_size` ids from the concatenated documents.
pub fn group_texts(documents: &[Vec<u32>], block_size: usize) -> Vec<Vec<u32>> {
    if block_size == 0 {
        return Vec::new();
    }
    let all: Vec<u32> = documents.iter().flatten().copied().collect();
    all.chunks_exact(block_size).map(<[u32]>::to_vec).collect()
}

/// The causal-LM objective over blocks of equal length, for the trainer.
pub struct CausalLmObjective<'a> {
    pub model: &'a crate::models::gpt2::Gpt2LMHeadModel,
    pub blocks: Vec<Vec<u32>>,
}

impl crate::train::Objective for CausalLmObjective<'_> {
    fn num_examples(&self) -> usize {
        self.blocks.len()
    }

    fn loss(
        &self,
        examples: &[usize],
        _epoch: usize,
        mode: crate::nn::Mode,
    ) -> crate::Result<(candle_core::Tensor, usize)> {
        let device = self.model.transformer.wte().weight().device().clone();
        let len = self.blocks[examples[0]].len();
        let ids: Vec<u32> = examples.iter().flat_map(|&i| self.blocks[i].iter().copied()).collect();
        let tokens = ids.len();
        let labels: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let input_ids = candle_core::Tensor::from_vec(ids, (examples.len(), len), &device)?;
        let labels = candle_core::Tensor::from_vec(labels, (examples.len(), len), &device)?;
        let input = crate::models::gpt2::DecoderInput::new(&input_ids);
        let out = self.model.forward(input, Some(&labels), None, mode)?;
        Ok((out.loss.ok_or_else(|| crate::Error::invalid("no loss"))?, tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_and_drops_the_remainder() {
        let docs = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]];
        assert_eq!(group_texts(&docs, 4), vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
        assert!(group_texts(&docs, 10).is_empty());
    }
}
