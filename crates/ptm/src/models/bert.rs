//! BERT (Devlin et al., 2018) as transformers' `modeling_bert.py` builds it: the same module
//! tree and weight names, so HF checkpoints load unchanged and ptm's load in transformers.

use candle_core::{DType, Tensor};

use super::EncoderInput;
use super::traits::PretrainingObjective;
use super::traits::{
    Backbone, MaskedLm, MaskedLmWithNextSentence, SequenceClassifier, SpanExtractor,
    TokenClassifier,
};
use super::traits::{Class, Family, Head};
use crate::config::{BertConfig, ModelConfig};
use crate::error::{Error, Result};
use crate::heads::{
    MaskedLMOutput, NextSentencePredictorOutput, PreTrainingOutput, QuestionAnsweringOutput,
    SequenceClassifierOutput, SpanExtractionHead, TokenClassificationHead, TokenClassifierOutput,
    cross_entropy_loss, sequence_classification_loss,
};
use crate::nn::attention::{
    merge_heads, padding_mask_bias, scaled_dot_product_attention, split_heads,
};
use crate::nn::loss::{IGNORE_INDEX, cross_entropy};
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Mode, ParamBuilder, dropout};
use crate::tokenizer::{SpecialTokens, TokenizerConventions, TokenizerKind};

/// Word + position + token-type embeddings, then LayerNorm and dropout.
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        let std = cfg.initializer_range;
        let h = cfg.hidden_size;
        Ok(BertEmbeddings {
            word_embeddings: Embedding::new(
                &vb.pp("word_embeddings"),
                cfg.vocab_size,
                h,
                std,
                cfg.pad_token_id,
            )?,
            position_embeddings: Embedding::new(
                &vb.pp("position_embeddings"),
                cfg.max_position_embeddings,
                h,
                std,
                None,
            )?,
            token_type_embeddings: Embedding::new(
                &vb.pp("token_type_embeddings"),
                cfg.type_vocab_size,
                h,
                std,
                None,
            )?,
            layer_norm: LayerNorm::new(&vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    pub fn word_embeddings(&self) -> &Embedding {
        &self.word_embeddings
    }

    /// input_ids (batch, seq) -> (batch, seq, hidden)
    pub fn forward(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        let ids = &input.input_ids;
        let (_, seq) = ids.dims2()?;
        let words = self.word_embeddings.forward(ids)?;
        let types = match &input.token_type_ids {
            Some(t) => self.token_type_embeddings.forward(t)?,
            // All zeros: row 0 of the table, broadcast over the batch.
            None => self
                .token_type_embeddings
                .weight()
                .narrow(0, 0, 1)?
                .unsqueeze(0)?,
        };
        let positions = self
            .position_embeddings
            .weight()
            .narrow(0, 0, seq)?
            .unsqueeze(0)?; // (1, seq, h)
        let x = words.broadcast_add(&types)?.broadcast_add(&positions)?;
        dropout(&self.layer_norm.forward(&x)?, self.dropout, mode)
    }
}

/// Multi-head self-attention (`attention.self`) with its output projection, residual and
/// LayerNorm (`attention.output`).
struct BertAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output_dense: Linear,
    output_layer_norm: LayerNorm,
    heads: usize,
    scale: f64,
    attention_dropout: f64,
    hidden_dropout: f64,
}

impl BertAttention {
    fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        let sa = vb.pp("self");
        let out = vb.pp("output");
        Ok(BertAttention {
            query: Linear::new(&sa.pp("query"), h, h, std)?,
            key: Linear::new(&sa.pp("key"), h, h, std)?,
            value: Linear::new(&sa.pp("value"), h, h, std)?,
            output_dense: Linear::new(&out.pp("dense"), h, h, std)?,
            output_layer_norm: LayerNorm::new(&out.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
            attention_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// x (batch, seq, hidden), mask bias (batch, 1, 1, seq)
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let q = split_heads(&self.query.forward(x)?, self.heads)?; // (b, heads, seq, d)
        let k = split_heads(&self.key.forward(x)?, self.heads)?;
        let v = split_heads(&self.value.forward(x)?, self.heads)?;
        let ctx = scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            self.scale,
            self.attention_dropout,
            mode,
        )?;
        let out = dropout(
            &self.output_dense.forward(&merge_heads(&ctx)?)?,
            self.hidden_dropout,
            mode,
        )?;
        self.output_layer_norm.forward(&(out + x)?)
    }
}

/// One encoder layer: attention, then the feed-forward network (`intermediate`, `output`).
struct BertLayer {
    attention: BertAttention,
    intermediate: Linear,
    activation: Activation,
    output: Linear,
    output_layer_norm: LayerNorm,
    dropout: f64,
}

impl BertLayer {
    fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        let (h, i, std) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.initializer_range,
        );
        Ok(BertLayer {
            attention: BertAttention::new(cfg, &vb.pp("attention"))?,
            intermediate: Linear::new(&vb.pp("intermediate.dense"), h, i, std)?,
            activation: cfg.hidden_act,
            output: Linear::new(&vb.pp("output.dense"), i, h, std)?,
            output_layer_norm: LayerNorm::new(&vb.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let a = self.attention.forward(x, mask, mode)?;
        let inner = self.intermediate.forward_activated(&a, self.activation)?;
        let out = dropout(&self.output.forward(&inner)?, self.dropout, mode)?;
        self.output_layer_norm.forward(&(out + a)?)
    }
}

pub struct BertModelOutput {
    /// (batch, seq, hidden)
    pub last_hidden_state: Tensor,
    /// tanh(dense(`[CLS]` state)), (batch, hidden); None without a pooling layer.
    pub pooler_output: Option<Tensor>,
}

/// The layer stack (`encoder.layer.N`), shared with the families that reuse BERT's layers.
pub(crate) struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// `vb` is the `encoder` prefix.
    pub(crate) fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(cfg, &vb.pp(format!("layer.{i}"))))
            .collect::<Result<_>>()?;
        Ok(BertEncoder { layers })
    }

    /// x (batch, seq, hidden) embedded, `attention_mask` (batch, seq) 1 for tokens.
    pub(crate) fn forward(
        &self,
        mut x: Tensor,
        attention_mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let mask = attention_mask
            .map(|m| padding_mask_bias(m, x.dtype()))
            .transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, mask.as_ref(), mode)?;
        }
        Ok(x)
    }
}

/// `pooler.dense`: tanh(dense(first token's state)), built when `add_pooling_layer`.
pub(crate) struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    /// `vb` is the model's root. Sentence-embedding checkpoints often lack the pooler;
    /// transformers initialises it then.
    pub(crate) fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertPooler {
            dense: Linear::new_head(
                &vb.pp("pooler.dense"),
                cfg.hidden_size,
                cfg.hidden_size,
                cfg.initializer_range,
            )?,
        })
    }

    /// (batch, seq, hidden) -> (batch, hidden)
    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self
            .dense
            .forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?
            .tanh()?)
    }
}

/// The bare encoder (`BertModel`): embeddings, layers, optional pooler.
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
    pooler: Option<BertPooler>,
}

impl BertModel {
    pub const ARCHITECTURE: &'static str = "BertModel";

    /// `vb` is the model's root: the checkpoint root for a bare `BertModel`, `bert` under a head.
    pub fn new(cfg: &BertConfig, vb: &ParamBuilder, add_pooling_layer: bool) -> Result<Self> {
        Ok(BertModel {
            embeddings: BertEmbeddings::new(cfg, &vb.pp("embeddings"))?,
            encoder: BertEncoder::new(cfg, &vb.pp("encoder"))?,
            pooler: add_pooling_layer
                .then(|| BertPooler::new(cfg, vb))
                .transpose()?,
        })
    }

    pub fn embeddings(&self) -> &BertEmbeddings {
        &self.embeddings
    }

    pub fn forward(&self, input: &EncoderInput, mode: Mode) -> Result<BertModelOutput> {
        let x = self.embeddings.forward(input, mode)?;
        let x = self
            .encoder
            .forward(x, input.attention_mask.as_ref(), mode)?;
        let pooler_output = self.pooler.as_ref().map(|p| p.forward(&x)).transpose()?;
        Ok(BertModelOutput {
            last_hidden_state: x,
            pooler_output,
        })
    }
}

/// `cls.predictions`: dense + activation + LayerNorm, then the decoder: tied to the word
/// embeddings with bias `cls.predictions.bias`, or (`tie_word_embeddings` false) a Linear of
/// its own, `cls.predictions.decoder`, as transformers 5 unties both weight and bias.
struct BertLMPredictionHead {
    dense: Linear,
    activation: Activation,
    layer_norm: LayerNorm,
    decoder: Linear,
}

impl BertLMPredictionHead {
    fn new(cfg: &BertConfig, vb: &ParamBuilder, word_embeddings: &Tensor) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        // `cls.predictions.bias` always exists, as in transformers, even where (untied) the
        // decoder has a bias of its own and this one goes unused.
        let bias = vb.get_or_init(cfg.vocab_size, "bias", Init::Zeros)?;
        let decoder = if cfg.tie_word_embeddings {
            Linear::from_tensors(word_embeddings.clone(), Some(bias)).in_precision_of(vb)?
        } else {
            Linear::new_head(&vb.pp("decoder"), h, cfg.vocab_size, std)?
        };
        Ok(BertLMPredictionHead {
            dense: Linear::new_head(&vb.pp("transform.dense"), h, h, std)?,
            activation: cfg.hidden_act,
            layer_norm: LayerNorm::new_head(&vb.pp("transform.LayerNorm"), h, cfg.layer_norm_eps)?,
            decoder,
        })
    }

    /// (batch, seq, hidden) -> (batch, seq, vocab)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self
            .layer_norm
            .forward(&self.dense.forward_activated(x, self.activation)?)?;
        self.decoder.forward(&x)
    }

    /// The masked-LM loss from the states at the labelled positions only: the vocabulary
    /// projection, the largest product of a small BERT, then runs on the ~15% of tokens that
    /// count instead of all of them. The same value as the cross-entropy over all logits
    /// (the rest carry -100); None when no position is labelled.
    fn labelled_loss(&self, hidden: &Tensor, labels: &Tensor) -> Result<Option<Tensor>> {
        let (b, s, h) = hidden.dims3()?;
        let all = labels
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        if all.len() != b * s {
            return Err(Error::invalid(format!(
                "labels have {} positions, the input {}",
                all.len(),
                b * s
            )));
        }
        let (rows, targets): (Vec<u32>, Vec<i64>) = all
            .iter()
            .enumerate()
            .filter(|(_, l)| **l != IGNORE_INDEX)
            .map(|(i, &l)| (i as u32, l))
            .unzip();
        if rows.is_empty() {
            return Ok(None);
        }
        let device = hidden.device();
        let n = rows.len();
        let picked = hidden
            .reshape((b * s, h))?
            .index_select(&Tensor::from_vec(rows, n, device)?, 0)?; // (n, hidden)
        let logits = self.forward(&picked)?; // (n, vocab)
        Ok(Some(cross_entropy(
            &logits,
            &Tensor::from_vec(targets, n, device)?,
            IGNORE_INDEX,
        )?))
    }
}

fn nsp_head(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Linear> {
    Linear::new_head(
        &vb.pp("seq_relationship"),
        cfg.hidden_size,
        2,
        cfg.initializer_range,
    )
}

fn pooled(out: &BertModelOutput) -> Result<&Tensor> {
    out.pooler_output
        .as_ref()
        .ok_or_else(|| Error::internal("this BERT was built without a pooling layer"))
}

/// `BertForMaskedLM`.
pub struct BertForMaskedLM {
    pub bert: BertModel,
    cls: BertLMPredictionHead,
}

impl BertForMaskedLM {
    pub const ARCHITECTURE: &'static str = "BertForMaskedLM";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        let bert = BertModel::new(cfg, &vb.pp("bert"), false)?;
        let tied = bert.embeddings.word_embeddings.weight().clone();
        let cls = BertLMPredictionHead::new(cfg, &vb.pp("cls.predictions"), &tied)?;
        Ok(BertForMaskedLM { bert, cls })
    }

    /// `labels` (batch, seq) i64 with -100 where no loss is taken.
    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<MaskedLMOutput> {
        let logits = self
            .cls
            .forward(&self.bert.forward(input, mode)?.last_hidden_state)?;
        let loss = labels.map(|l| cross_entropy_loss(&logits, l)).transpose()?;
        Ok(MaskedLMOutput { loss, logits })
    }

    /// The training loss alone, without the logits: the vocabulary projection runs only where
    /// a label is (the same value as the loss over all logits; None when nothing is labelled).
    pub fn masked_lm_loss(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<Option<Tensor>> {
        self.cls
            .labelled_loss(&self.bert.forward(input, mode)?.last_hidden_state, labels)
    }
}

/// `BertForNextSentencePrediction`.
pub struct BertForNextSentencePrediction {
    pub bert: BertModel,
    seq_relationship: Linear,
}

impl BertForNextSentencePrediction {
    pub const ARCHITECTURE: &'static str = "BertForNextSentencePrediction";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertForNextSentencePrediction {
            bert: BertModel::new(cfg, &vb.pp("bert"), true)?,
            seq_relationship: nsp_head(cfg, &vb.pp("cls"))?,
        })
    }

    /// `labels` (batch) i64: 0 when sentence B follows A, 1 when it is random.
    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<NextSentencePredictorOutput> {
        let out = self.bert.forward(input, mode)?;
        let logits = self.seq_relationship.forward(pooled(&out)?)?;
        let loss = labels.map(|l| cross_entropy_loss(&logits, l)).transpose()?;
        Ok(NextSentencePredictorOutput { loss, logits })
    }
}

/// `BertForPreTraining`: masked LM + next-sentence prediction; the loss is their sum.
pub struct BertForPreTraining {
    pub bert: BertModel,
    predictions: BertLMPredictionHead,
    seq_relationship: Linear,
}

impl BertForPreTraining {
    pub const ARCHITECTURE: &'static str = "BertForPreTraining";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        let bert = BertModel::new(cfg, &vb.pp("bert"), true)?;
        let tied = bert.embeddings.word_embeddings.weight().clone();
        let cls = vb.pp("cls");
        Ok(BertForPreTraining {
            predictions: BertLMPredictionHead::new(cfg, &cls.pp("predictions"), &tied)?,
            seq_relationship: nsp_head(cfg, &cls)?,
            bert,
        })
    }

    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        next_sentence_label: Option<&Tensor>,
        mode: Mode,
    ) -> Result<PreTrainingOutput> {
        let out = self.bert.forward(input, mode)?;
        let prediction_logits = self.predictions.forward(&out.last_hidden_state)?;
        let seq_relationship_logits = self.seq_relationship.forward(pooled(&out)?)?;
        let loss = match (labels, next_sentence_label) {
            (Some(l), Some(n)) => Some(
                (cross_entropy_loss(&prediction_logits, l)?
                    + cross_entropy_loss(&seq_relationship_logits, n)?)?,
            ),
            _ => None,
        };
        Ok(PreTrainingOutput {
            loss,
            prediction_logits,
            seq_relationship_logits,
        })
    }

    /// For training: the masked-LM loss at the labelled positions (None when there is none)
    /// and the next-sentence logits (batch, 2).
    pub fn pretraining_losses(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let out = self.bert.forward(input, mode)?;
        let mlm = self
            .predictions
            .labelled_loss(&out.last_hidden_state, labels)?;
        Ok((mlm, self.seq_relationship.forward(pooled(&out)?)?))
    }
}

/// `BertForSequenceClassification`: dropout and a linear layer on the pooled output.
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    classifier: Linear,
    dropout: f64,
    config: BertConfig,
}

impl BertForSequenceClassification {
    pub const ARCHITECTURE: &'static str = "BertForSequenceClassification";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertForSequenceClassification {
            bert: BertModel::new(cfg, &vb.pp("bert"), true)?,
            classifier: Linear::new_head(
                &vb.pp("classifier"),
                cfg.hidden_size,
                cfg.common.num_labels(),
                cfg.initializer_range,
            )?,
            dropout: cfg.classifier_dropout(),
            config: cfg.clone(),
        })
    }

    /// `labels`: (batch) i64 class ids, (batch) f32 targets for regression, or
    /// (batch, num_labels) f32 for multi-label; the loss follows `problem_type` as in HF.
    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<SequenceClassifierOutput> {
        let out = self.bert.forward(input, mode)?;
        let logits = self
            .classifier
            .forward(&dropout(pooled(&out)?, self.dropout, mode)?)?;
        let loss = labels
            .map(|l| sequence_classification_loss(&logits, l, self.config.common.problem_type))
            .transpose()?;
        Ok(SequenceClassifierOutput { loss, logits })
    }
}

/// `BertForTokenClassification`: dropout and a linear layer on every token's state.
pub struct BertForTokenClassification {
    pub bert: BertModel,
    head: TokenClassificationHead,
}

impl BertForTokenClassification {
    pub const ARCHITECTURE: &'static str = "BertForTokenClassification";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertForTokenClassification {
            bert: BertModel::new(cfg, &vb.pp("bert"), false)?,
            head: TokenClassificationHead::new(
                vb,
                cfg.hidden_size,
                cfg.common.num_labels(),
                cfg.initializer_range,
                cfg.classifier_dropout(),
            )?,
        })
    }

    /// `labels` (batch, seq) i64 with -100 on tokens that carry no label.
    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<TokenClassifierOutput> {
        let h = self.bert.forward(input, mode)?.last_hidden_state; // (b, s, hidden)
        self.head.forward(&h, labels, mode)
    }
}

/// `BertForQuestionAnswering`: start and end logits of the answer span.
pub struct BertForQuestionAnswering {
    pub bert: BertModel,
    head: SpanExtractionHead,
}

impl BertForQuestionAnswering {
    pub const ARCHITECTURE: &'static str = "BertForQuestionAnswering";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertForQuestionAnswering {
            bert: BertModel::new(cfg, &vb.pp("bert"), false)?,
            head: SpanExtractionHead::new(vb, cfg.hidden_size, cfg.initializer_range)?,
        })
    }

    /// `start_positions` / `end_positions` (batch) i64 token indices.
    pub fn forward(
        &self,
        input: &EncoderInput,
        positions: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<QuestionAnsweringOutput> {
        let h = self.bert.forward(input, mode)?.last_hidden_state; // (b, s, hidden)
        self.head.forward(&h, positions)
    }
}

// The registry's entry for BERT and the capabilities its classes have.

fn bert_config(config: &ModelConfig) -> Result<&BertConfig> {
    match config {
        ModelConfig::Bert(c) => Ok(c),
        other => Err(Error::internal(format!(
            "the BERT family was given a {} config",
            other.model_type()
        ))),
    }
}

/// BERT in the registry ([`crate::models::auto`]).
pub struct BertFamily;

impl Family for BertFamily {
    fn model_type(&self) -> &'static str {
        "bert"
    }

    fn base_model_prefix(&self) -> &'static str {
        "bert"
    }

    fn classes(&self) -> &'static [Class] {
        &[
            Class {
                architecture: BertModel::ARCHITECTURE,
                head: Head::Base,
            },
            Class {
                architecture: BertForMaskedLM::ARCHITECTURE,
                head: Head::MaskedLm,
            },
            Class {
                architecture: BertForNextSentencePrediction::ARCHITECTURE,
                head: Head::NextSentencePrediction,
            },
            Class {
                architecture: BertForPreTraining::ARCHITECTURE,
                head: Head::PreTraining,
            },
            Class {
                architecture: BertForSequenceClassification::ARCHITECTURE,
                head: Head::SequenceClassification,
            },
            Class {
                architecture: BertForTokenClassification::ARCHITECTURE,
                head: Head::TokenClassification,
            },
            Class {
                architecture: BertForQuestionAnswering::ARCHITECTURE,
                head: Head::QuestionAnswering,
            },
        ]
    }

    /// transformers' `BertTokenizer`.
    fn tokenizer(&self) -> TokenizerConventions {
        let t = |s: &str| Some(s.to_string());
        TokenizerConventions {
            class: "BertTokenizer",
            special: SpecialTokens {
                unk: t("[UNK]"),
                sep: t("[SEP]"),
                pad: t("[PAD]"),
                cls: t("[CLS]"),
                mask: t("[MASK]"),
                bos: None,
                eos: None,
            },
            padding_left: false,
            trains: Some(TokenizerKind::WordPiece),
        }
    }

    fn pretraining_objectives(&self) -> &'static [PretrainingObjective] {
        &[PretrainingObjective::Mlm, PretrainingObjective::MlmNsp]
    }

    fn backbone(
        &self,
        config: &ModelConfig,
        vb: &ParamBuilder,
        add_pooling_layer: bool,
    ) -> Result<Box<dyn Backbone>> {
        Ok(Box::new(BertModel::new(
            bert_config(config)?,
            vb,
            add_pooling_layer,
        )?))
    }

    fn masked_lm(&self, c: &ModelConfig, vb: &ParamBuilder) -> Option<Result<Box<dyn MaskedLm>>> {
        Some(bert_config(c).and_then(|c| Ok(Box::new(BertForMaskedLM::new(c, vb)?) as _)))
    }

    fn pretraining(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn MaskedLmWithNextSentence>>> {
        Some(bert_config(c).and_then(|c| Ok(Box::new(BertForPreTraining::new(c, vb)?) as _)))
    }

    fn sequence_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SequenceClassifier>>> {
        Some(
            bert_config(c)
                .and_then(|c| Ok(Box::new(BertForSequenceClassification::new(c, vb)?) as _)),
        )
    }

    fn token_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn TokenClassifier>>> {
        Some(
            bert_config(c).and_then(|c| Ok(Box::new(BertForTokenClassification::new(c, vb)?) as _)),
        )
    }

    fn span_extractor(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SpanExtractor>>> {
        Some(bert_config(c).and_then(|c| Ok(Box::new(BertForQuestionAnswering::new(c, vb)?) as _)))
    }

    fn build_other(
        &self,
        architecture: &str,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<()>> {
        (architecture == BertForNextSentencePrediction::ARCHITECTURE).then(|| {
            BertForNextSentencePrediction::new(bert_config(c)?, vb)?;
            Ok(())
        })
    }
}

fn bert_device(m: &BertModel) -> &candle_core::Device {
    m.embeddings.word_embeddings.weight().device()
}

pretrained_model!(BertModel, BertModel::ARCHITECTURE, |m| bert_device(m));
pretrained_model!(BertForMaskedLM, Self::ARCHITECTURE, |m| bert_device(
    &m.bert
));
pretrained_model!(BertForPreTraining, Self::ARCHITECTURE, |m| bert_device(
    &m.bert
));
pretrained_model!(BertForSequenceClassification, Self::ARCHITECTURE, |m| {
    bert_device(&m.bert)
});
pretrained_model!(BertForTokenClassification, Self::ARCHITECTURE, |m| {
    bert_device(&m.bert)
});
pretrained_model!(BertForQuestionAnswering, Self::ARCHITECTURE, |m| {
    bert_device(&m.bert)
});

impl Backbone for BertModel {
    fn last_hidden_state(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        Ok(self.forward(input, mode)?.last_hidden_state)
    }
}

impl MaskedLm for BertForMaskedLM {
    fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<MaskedLMOutput> {
        BertForMaskedLM::forward(self, input, labels, mode)
    }

    fn masked_lm_loss(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<Option<Tensor>> {
        BertForMaskedLM::masked_lm_loss(self, input, labels, mode)
    }
}

impl MaskedLmWithNextSentence for BertForPreTraining {
    fn pretraining_losses(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<(Option<Tensor>, Tensor)> {
        BertForPreTraining::pretraining_losses(self, input, labels, mode)
    }
}

head_capability!(SequenceClassifier for BertForSequenceClassification, Option<&Tensor> => SequenceClassifierOutput, std::convert::identity);

head_capability!(TokenClassifier for BertForTokenClassification, Option<&Tensor> => TokenClassifierOutput, std::convert::identity);

head_capability!(SpanExtractor for BertForQuestionAnswering, Option<(&Tensor, &Tensor)> => QuestionAnsweringOutput, std::convert::identity);
