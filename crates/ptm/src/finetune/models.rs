//! The models fine-tuning drives: for each task, the families that have its head (BERT's and
//! XLNet's classes, by transformers' names), built from a config and read through one
//! `EncoderInput`, so the tasks' data, objectives and metrics are the same for every family.

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::heads::QuestionAnsweringOutput;
use crate::models::bert::{BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification};
use crate::models::xlnet::{XlnetForQuestionAnsweringSimple, XlnetForSequenceClassification, XlnetForTokenClassification, XlnetInput};
use crate::models::{EncoderInput, EncoderModel};
use crate::nn::{Mode, ParamBuilder};

fn unsupported(task: &str, config: &ModelConfig) -> Error {
    Error::invalid(format!("{task} supports bert and xlnet models, not {}", config.model_type()))
}

fn xlnet_input(input: &EncoderInput) -> XlnetInput<'_> {
    XlnetInput {
        input_ids: Some(&input.input_ids),
        attention_mask: input.attention_mask.as_ref(),
        token_type_ids: input.token_type_ids.as_ref(),
        ..Default::default()
    }
}

/// `*ForSequenceClassification`.
pub enum SeqClsModel {
    Bert(BertForSequenceClassification),
    Xlnet(XlnetForSequenceClassification),
}

impl SeqClsModel {
    pub fn architecture(config: &ModelConfig) -> Result<&'static str> {
        match config {
            ModelConfig::Bert(_) => Ok(BertForSequenceClassification::ARCHITECTURE),
            ModelConfig::Xlnet(_) => Ok(XlnetForSequenceClassification::ARCHITECTURE),
            other => Err(unsupported("sequence classification", other)),
        }
    }

    pub fn new(config: &ModelConfig, vb: &ParamBuilder) -> Result<Self> {
        match config {
            ModelConfig::Bert(c) => Ok(SeqClsModel::Bert(BertForSequenceClassification::new(c, vb)?)),
            ModelConfig::Xlnet(c) => Ok(SeqClsModel::Xlnet(XlnetForSequenceClassification::new(c, vb)?)),
            other => Err(unsupported("sequence classification", other)),
        }
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            SeqClsModel::Bert(m) => m.bert.embeddings().word_embeddings().weight().device().clone(),
            SeqClsModel::Xlnet(m) => m.transformer.word_embedding().weight().device().clone(),
        }
    }

    /// (batch, labels)
    pub fn logits(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        Ok(match self {
            SeqClsModel::Bert(m) => m.forward(input, None, mode)?.logits,
            SeqClsModel::Xlnet(m) => m.forward(xlnet_input(input), None, mode)?.logits,
        })
    }
}

/// `*ForTokenClassification`.
pub enum TokenClsModel {
    Bert(BertForTokenClassification),
    Xlnet(XlnetForTokenClassification),
}

impl TokenClsModel {
    pub fn architecture(config: &ModelConfig) -> Result<&'static str> {
        match config {
            ModelConfig::Bert(_) => Ok(BertForTokenClassification::ARCHITECTURE),
            ModelConfig::Xlnet(_) => Ok(XlnetForTokenClassification::ARCHITECTURE),
            other => Err(unsupported("token classification", other)),
        }
    }

    pub fn new(config: &ModelConfig, vb: &ParamBuilder) -> Result<Self> {
        match config {
            ModelConfig::Bert(c) => Ok(TokenClsModel::Bert(BertForTokenClassification::new(c, vb)?)),
            ModelConfig::Xlnet(c) => Ok(TokenClsModel::Xlnet(XlnetForTokenClassification::new(c, vb)?)),
            other => Err(unsupported("token classification", other)),
        }
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            TokenClsModel::Bert(m) => m.bert.embeddings().word_embeddings().weight().device().clone(),
            TokenClsModel::Xlnet(m) => m.transformer.word_embedding().weight().device().clone(),
        }
    }

    /// (batch, seq, labels)
    pub fn logits(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        Ok(match self {
            TokenClsModel::Bert(m) => m.forward(input, None, mode)?.logits,
            TokenClsModel::Xlnet(m) => m.forward(xlnet_input(input), None, mode)?.logits,
        })
    }
}

/// Extractive QA: `BertForQuestionAnswering`, `XLNetForQuestionAnsweringSimple`.
pub enum QaModel {
    Bert(BertForQuestionAnswering),
    Xlnet(XlnetForQuestionAnsweringSimple),
}

impl QaModel {
    pub fn architecture(config: &ModelConfig) -> Result<&'static str> {
        match config {
            ModelConfig::Bert(_) => Ok(BertForQuestionAnswering::ARCHITECTURE),
            ModelConfig::Xlnet(_) => Ok(XlnetForQuestionAnsweringSimple::ARCHITECTURE),
            other => Err(unsupported("question answering", other)),
        }
    }

    pub fn new(config: &ModelConfig, vb: &ParamBuilder) -> Result<Self> {
        match config {
            ModelConfig::Bert(c) => Ok(QaModel::Bert(BertForQuestionAnswering::new(c, vb)?)),
            ModelConfig::Xlnet(c) => Ok(QaModel::Xlnet(XlnetForQuestionAnsweringSimple::new(c, vb)?)),
            other => Err(unsupported("question answering", other)),
        }
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            QaModel::Bert(m) => m.bert.embeddings().word_embeddings().weight().device().clone(),
            QaModel::Xlnet(m) => m.transformer.word_embedding().weight().device().clone(),
        }
    }

    /// Start and end logits, with the loss when `positions` (start, end) are given.
    pub fn forward(&self, input: &EncoderInput, positions: Option<(&Tensor, &Tensor)>, mode: Mode) -> Result<QuestionAnsweringOutput> {
        match self {
            QaModel::Bert(m) => m.forward(input, positions, mode),
            QaModel::Xlnet(m) => m.forward(xlnet_input(input), positions, mode),
        }
    }
}

/// The bare encoder of a bi-encoder (BERT's with its pooler, so a saved model keeps it) and its
/// class name.
pub fn similarity_encoder(config: &ModelConfig, vb: &ParamBuilder) -> Result<EncoderModel> {
    match config {
        ModelConfig::Bert(c) => Ok(EncoderModel::Bert(crate::models::bert::BertModel::new(c, vb, true)?)),
        ModelConfig::Xlnet(c) => Ok(EncoderModel::Xlnet(crate::models::xlnet::XlnetModel::new(c, vb)?)),
        other => Err(unsupported("similarity", other)),
    }
}
