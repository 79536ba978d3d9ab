//! What models can do, as traits: the seams between the families and everything above them.
//! Objectives, fine-tuning tasks, pipelines, generation and the CLI hold `dyn` trait objects
//! that [`crate::models::auto`] builds; none of them names a family.
//!
//! Every trait requires `Send + Sync`, so one loaded model can answer concurrent callers.

use std::any::Any;

use candle_core::{Device, Tensor};

use super::{DecoderInput, EncoderInput};
use crate::error::Result;
use crate::heads::{
    MaskedLMOutput, QuestionAnsweringOutput, SequenceClassifierOutput, TokenClassifierOutput,
};
use crate::nn::Mode;

/// What every built model says about itself.
pub trait PreTrainedModel: Send + Sync {
    /// transformers' class name, written to config.json's `architectures` when saved.
    fn architecture(&self) -> &'static str;
    /// Where the parameters live.
    fn device(&self) -> Device;
}

/// A bare network (`AutoModel`): one state per token, for embeddings and similarity.
pub trait Backbone: PreTrainedModel {
    /// (batch, seq, hidden)
    fn last_hidden_state(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor>;
}

/// `AutoModelForMaskedLM`.
pub trait MaskedLm: PreTrainedModel {
    /// Logits (batch, seq, vocab); the loss when `labels` (batch, seq) i64, -100 ignored.
    fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<MaskedLMOutput>;
    /// The loss alone, projecting to the vocabulary only where a label is (None: no label).
    fn masked_lm_loss(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<Option<Tensor>>;
}

/// `AutoModelForPreTraining` with a next-sentence head (BERT's MLM + NSP).
pub trait MaskedLmWithNextSentence: PreTrainedModel {
    /// The masked-LM loss (None: no label) and the next-sentence logits (batch, 2).
    fn pretraining_losses(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<(Option<Tensor>, Tensor)>;
}

/// `AutoModelForSequenceClassification`.
pub trait SequenceClassifier: PreTrainedModel {
    /// Logits (batch, labels); the loss by `problem_type` when `labels` are given.
    fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<SequenceClassifierOutput>;
}

/// `AutoModelForTokenClassification`.
pub trait TokenClassifier: PreTrainedModel {
    /// Logits (batch, seq, labels); the loss when `labels` (batch, seq) i64, -100 ignored.
    fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<TokenClassifierOutput>;
}

/// `AutoModelForQuestionAnswering`: extractive answer spans.
pub trait SpanExtractor: PreTrainedModel {
    /// Start and end logits (batch, seq); the loss when `positions` (start, end) are given.
    fn forward(
        &self,
        input: &EncoderInput,
        positions: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<QuestionAnsweringOutput>;
}

/// What a decoder carries from one generation step to the next: keys and values, a memory,
/// or an encoder's output with its cross-attention cache. Each model downcasts its own.
pub trait DecodingState: Send {
    /// Keeps, in order, the batch rows `rows` (beam search follows its beams this way).
    fn select_rows(&mut self, rows: &Tensor) -> Result<()>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// `AutoModelForCausalLM`: a left-to-right decoder that generation drives step by step.
pub trait CausalLm: PreTrainedModel {
    fn new_state(&self) -> Box<dyn DecodingState>;
    /// Logits (batch, seq, vocab) whose last position scores the next token.
    fn step(&self, input: DecoderInput, state: &mut dyn DecodingState) -> Result<Tensor>;
    /// The mean next-token loss of `input_ids` (batch, seq) against `labels` (-100 ignored;
    /// the model shifts them).
    fn causal_lm_loss(&self, input_ids: &Tensor, labels: &Tensor, mode: Mode) -> Result<Tensor>;
    /// The longest sequence it can read (`usize::MAX`: no limit).
    fn max_positions(&self) -> usize;
    /// Whether a batch may hold prompts of different lengths (left padding masked).
    fn masks_padding(&self) -> bool {
        true
    }
    /// Text read before every prompt and not printed (transformers' pipeline pads XLNet's).
    fn prompt_prefix(&self) -> Option<&'static str> {
        None
    }
}

/// A permutation language model (XLNet): predicts the targets a mapping picks, each seeing
/// only what its permutation allows.
pub trait PermutationLm: PreTrainedModel {
    /// `input_ids` (batch, seq); `perm_mask` (batch, seq, seq) 1 where i may not see j;
    /// `target_mapping` (batch, targets, seq) one-hot -> logits (batch, targets, vocab).
    fn permutation_logits(
        &self,
        input_ids: &Tensor,
        perm_mask: &Tensor,
        target_mapping: &Tensor,
        mode: Mode,
    ) -> Result<Tensor>;
}

/// Downcasts a decoding state to the type a model made, or fails naming the model.
pub fn state_of<'a, T: 'static>(
    state: &'a mut dyn DecodingState,
    architecture: &str,
) -> Result<&'a mut T> {
    state.as_any_mut().downcast_mut::<T>().ok_or_else(|| {
        crate::Error::internal(format!(
            "{architecture} was given a decoding state another model made"
        ))
    })
}
