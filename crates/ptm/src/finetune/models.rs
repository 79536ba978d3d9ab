//! The models fine-tuning drives: for each task, the families that have its head (BERT's and
//! XLNet's classes, by transformers' names), built from a config and read through one
//! `EncoderInput`, so the tasks' data, objectives and metrics are the same for every family.

use candle_core::{Device, Tensor};

use crate::config::{BertConfig, ModelConfig, XlnetConfig};
use crate::error::{Error, Result};
use crate::heads::QuestionAnsweringOutput;
use crate::models::bert::{
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
};
use crate::models::xlnet::{
    XlnetForQuestionAnsweringSimple, XlnetForSequenceClassification, XlnetForTokenClassification,
    XlnetInput,
};
use crate::models::{EncoderInput, EncoderModel};
use crate::nn::{Mode, ParamBuilder};
use crate::tokenizer::Tokenizer;

/// `bert(c)` or `xlnet(c)` by the config's family; another family is an error naming `task`.
fn by_family<T>(
    config: &ModelConfig,
    task: &str,
    bert: impl FnOnce(&BertConfig) -> Result<T>,
    xlnet: impl FnOnce(&XlnetConfig) -> Result<T>,
) -> Result<T> {
    match config {
        ModelConfig::Bert(c) => bert(c),
        ModelConfig::Xlnet(c) => xlnet(c),
        other => Err(Error::invalid(format!(
            "{task} supports bert and xlnet models, not {}",
            other.model_type()
        ))),
    }
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
        by_family(
            config,
            "sequence classification",
            |_| Ok(BertForSequenceClassification::ARCHITECTURE),
            |_| Ok(XlnetForSequenceClassification::ARCHITECTURE),
        )
    }

    pub fn new(config: &ModelConfig, vb: &ParamBuilder) -> Result<Self> {
        by_family(
            config,
            "sequence classification",
            |c| {
                Ok(SeqClsModel::Bert(BertForSequenceClassification::new(
                    c, vb,
                )?))
            },
            |c| {
                Ok(SeqClsModel::Xlnet(XlnetForSequenceClassification::new(
                    c, vb,
                )?))
            },
        )
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            SeqClsModel::Bert(m) => m
                .bert
                .embeddings()
                .word_embeddings()
                .weight()
                .device()
                .clone(),
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
#[allow(clippy::large_enum_variant)] // one per process; boxing would buy nothing
pub enum TokenClsModel {
    Bert(BertForTokenClassification),
    Xlnet(XlnetForTokenClassification),
}

impl TokenClsModel {
    pub fn architecture(config: &ModelConfig) -> Result<&'static str> {
        by_family(
            config,
            "token classification",
            |_| Ok(BertForTokenClassification::ARCHITECTURE),
            |_| Ok(XlnetForTokenClassification::ARCHITECTURE),
        )
    }

    pub fn new(config: &ModelConfig, vb: &ParamBuilder) -> Result<Self> {
        by_family(
            config,
            "token classification",
            |c| Ok(TokenClsModel::Bert(BertForTokenClassification::new(c, vb)?)),
            |c| {
                Ok(TokenClsModel::Xlnet(XlnetForTokenClassification::new(
                    c, vb,
                )?))
            },
        )
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            TokenClsModel::Bert(m) => m
                .bert
                .embeddings()
                .word_embeddings()
                .weight()
                .device()
                .clone(),
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
#[allow(clippy::large_enum_variant)] // one per process; boxing would buy nothing
pub enum QaModel {
    Bert(BertForQuestionAnswering),
    Xlnet(XlnetForQuestionAnsweringSimple),
}

impl QaModel {
    pub fn architecture(config: &ModelConfig) -> Result<&'static str> {
        by_family(
            config,
            "question answering",
            |_| Ok(BertForQuestionAnswering::ARCHITECTURE),
            |_| Ok(XlnetForQuestionAnsweringSimple::ARCHITECTURE),
        )
    }

    pub fn new(config: &ModelConfig, vb: &ParamBuilder) -> Result<Self> {
        by_family(
            config,
            "question answering",
            |c| Ok(QaModel::Bert(BertForQuestionAnswering::new(c, vb)?)),
            |c| Ok(QaModel::Xlnet(XlnetForQuestionAnsweringSimple::new(c, vb)?)),
        )
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            QaModel::Bert(m) => m
                .bert
                .embeddings()
                .word_embeddings()
                .weight()
                .device()
                .clone(),
            QaModel::Xlnet(m) => m.transformer.word_embedding().weight().device().clone(),
        }
    }

    /// Start and end logits, with the loss when `positions` (start, end) are given.
    pub fn forward(
        &self,
        input: &EncoderInput,
        positions: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<QuestionAnsweringOutput> {
        match self {
            QaModel::Bert(m) => m.forward(input, positions, mode),
            QaModel::Xlnet(m) => m.forward(xlnet_input(input), positions, mode),
        }
    }
}

/// The bare encoder of a bi-encoder (BERT's with its pooler, so a saved model keeps it).
pub fn similarity_encoder(config: &ModelConfig, vb: &ParamBuilder) -> Result<EncoderModel> {
    by_family(
        config,
        "similarity",
        |c| {
            Ok(EncoderModel::Bert(crate::models::bert::BertModel::new(
                c, vb, true,
            )?))
        },
        |c| {
            Ok(EncoderModel::Xlnet(crate::models::xlnet::XlnetModel::new(
                c, vb,
            )?))
        },
    )
}

/// XLNet's heads read `<cls>` at the end of each input (the sequence summary takes the last
/// token; unanswerable QA windows point there): its tokenizer must end inputs with it.
pub fn check_tokenizer(config: &ModelConfig, tokenizer: &Tokenizer) -> Result<()> {
    if !matches!(config, ModelConfig::Xlnet(_)) {
        return Ok(());
    }
    let cls = tokenizer.special_id(|s| &s.cls);
    let last = tokenizer
        .encode_batch(&["a"])?
        .encodings
        .first()
        .and_then(|e| e.get_ids().last().copied());
    match cls {
        Some(id) if last == Some(id) => Ok(()),
        _ => Err(Error::invalid(format!(
            "an XLNet model needs a tokenizer that ends every input with <cls> (XLNet's `X <sep> <cls>`); this one {}",
            match cls {
                None => "has no cls token".to_string(),
                Some(_) => "puts it elsewhere (a BERT tokenizer?)".to_string(),
            }
        ))),
    }
}
