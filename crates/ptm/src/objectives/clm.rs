//! Causal language modelling as transformers' `run_clm.py` trains it: blocks of the documents'
//! ids concatenated ([`crate::data::Blocks`]); labels are the inputs (the model shifts them).

/// The causal-LM objective over blocks of equal length, for the trainer.
pub struct CausalLmObjective<'a> {
    pub model: &'a dyn crate::models::traits::CausalLm,
    pub blocks: &'a dyn crate::data::Examples,
}

impl crate::train::Objective for CausalLmObjective<'_> {
    fn num_examples(&self) -> usize {
        self.blocks.num_examples()
    }

    fn loss(
        &self,
        examples: &[usize],
        _epoch: usize,
        mode: crate::nn::Mode,
    ) -> crate::Result<crate::train::LossTerms> {
        let device = self.model.device();
        let ids: Vec<u32> = examples
            .iter()
            .flat_map(|&i| self.blocks.example(i))
            .collect();
        let len = ids.len() / examples.len().max(1);
        let tokens = ids.len();
        let labels: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let input_ids = candle_core::Tensor::from_vec(ids, (examples.len(), len), &device)?;
        let labels = candle_core::Tensor::from_vec(labels, (examples.len(), len), &device)?;
        let loss = self.model.causal_lm_loss(&input_ids, &labels, mode)?;
        // Each block predicts all but its first token.
        let count = examples.len() * len.saturating_sub(1);
        Ok(crate::train::LossTerms {
            loss,
            count,
            tokens,
        })
    }
}
