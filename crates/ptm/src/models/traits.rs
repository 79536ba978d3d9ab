//! What models can do, as traits: the seams between the families and everything above them.
//! Objectives, fine-tuning tasks, pipelines, generation and the CLI hold `dyn` trait objects
//! that [`crate::models::auto`] builds; none of them names a family.
//!
//! Every model trait requires `Send + Sync`, so one loaded model can answer concurrent
//! callers. [`Family`] is what each family file gives the registry: its classes and how to
//! build each capability.

use std::any::Any;

use candle_core::{Device, Tensor};

use super::{DecoderInput, EncoderInput};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::heads::{
    MaskedLMOutput, QuestionAnsweringOutput, SequenceClassifierOutput, TokenClassifierOutput,
};
use crate::nn::{Mode, ParamBuilder};
use crate::tokenizer::TokenizerConventions;

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

/// What a class (an `architectures` entry) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The bare model (`BertModel`).
    Base,
    MaskedLm,
    /// Masked LM plus next-sentence prediction (`BertForPreTraining`).
    PreTraining,
    NextSentencePrediction,
    CausalLm,
    SequenceClassification,
    TokenClassification,
    QuestionAnswering,
}

/// A transformers class a family can build.
#[derive(Debug, Clone, Copy)]
pub struct Class {
    pub architecture: &'static str,
    pub head: Head,
}

/// One model family: its config's `model_type`, its classes and how to build each capability.
/// A capability the family lacks is `None` (the defaults).
pub trait Family: Sync {
    fn model_type(&self) -> &'static str;
    /// transformers' `base_model_prefix`: the name the heads hold the bare model under.
    fn base_model_prefix(&self) -> &'static str;
    fn classes(&self) -> &'static [Class];
    fn tokenizer(&self) -> TokenizerConventions;

    /// The bare model; `add_pooling_layer` keeps a pooler where the family has one.
    fn backbone(
        &self,
        config: &ModelConfig,
        vb: &ParamBuilder,
        add_pooling_layer: bool,
    ) -> Result<Box<dyn Backbone>>;
    fn masked_lm(&self, _: &ModelConfig, _: &ParamBuilder) -> Option<Result<Box<dyn MaskedLm>>> {
        None
    }
    fn pretraining(
        &self,
        _: &ModelConfig,
        _: &ParamBuilder,
    ) -> Option<Result<Box<dyn MaskedLmWithNextSentence>>> {
        None
    }
    fn causal_lm(&self, _: &ModelConfig, _: &ParamBuilder) -> Option<Result<Box<dyn CausalLm>>> {
        None
    }
    fn permutation_lm(
        &self,
        _: &ModelConfig,
        _: &ParamBuilder,
    ) -> Option<Result<Box<dyn PermutationLm>>> {
        None
    }
    fn sequence_classifier(
        &self,
        _: &ModelConfig,
        _: &ParamBuilder,
    ) -> Option<Result<Box<dyn SequenceClassifier>>> {
        None
    }
    fn token_classifier(
        &self,
        _: &ModelConfig,
        _: &ParamBuilder,
    ) -> Option<Result<Box<dyn TokenClassifier>>> {
        None
    }
    fn span_extractor(
        &self,
        _: &ModelConfig,
        _: &ParamBuilder,
    ) -> Option<Result<Box<dyn SpanExtractor>>> {
        None
    }
    /// Builds a class no capability covers (BERT's next-sentence model), to check that a
    /// checkpoint holds every weight it needs.
    fn build_other(&self, _: &str, _: &ModelConfig, _: &ParamBuilder) -> Option<Result<()>> {
        None
    }
    /// The pretraining objectives its classes train with.
    fn pretraining_objectives(&self) -> &'static [PretrainingObjective] {
        &[]
    }
    /// Inputs must end with this family's summary token (XLNet's `<cls>`), checked against
    /// the tokenizer before fine-tuning.
    fn summarises_last_token(&self) -> bool {
        false
    }
}

/// The pretraining objectives ptm trains, by `ptm pretrain --objective` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PretrainingObjective {
    /// Masked LM (15%, 80/10/10).
    Mlm,
    /// Masked LM on sentence pairs plus next-sentence prediction.
    MlmNsp,
    /// Causal (left-to-right) LM.
    Clm,
    /// Permutation LM.
    Plm,
}

impl PretrainingObjective {
    pub const ALL: [Self; 4] = [Self::Mlm, Self::MlmNsp, Self::Clm, Self::Plm];

    pub fn name(self) -> &'static str {
        match self {
            Self::Mlm => "mlm",
            Self::MlmNsp => "mlm+nsp",
            Self::Clm => "clm",
            Self::Plm => "plm",
        }
    }

    pub fn parse(name: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                crate::Error::invalid(format!(
                    "unknown --objective {name:?}; supported: {}",
                    Self::ALL.map(Self::name).join(", ")
                ))
            })
    }
}
