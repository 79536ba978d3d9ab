//! BERT (Devlin et al., 2018) as transformers' `modeling_bert.py` builds it: the same module
//! tree and weight names, so HF checkpoints load unchanged and ptm's load in transformers.

use candle_core::{DType, Tensor};

use super::EncoderInput;
use crate::config::BertConfig;
use crate::error::Result;
use crate::heads::{
    MaskedLMOutput, NextSentencePredictorOutput, PreTrainingOutput, QuestionAnsweringOutput,
    SequenceClassifierOutput, TokenClassifierOutput, cross_entropy_loss, question_answering_output,
    sequence_classification_loss,
};
use crate::nn::attention::{
    merge_heads, padding_mask_bias, scaled_dot_product_attention, split_heads,
};
use crate::nn::loss::{IGNORE_INDEX, cross_entropy};
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Mode, ParamBuilder, dropout};

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
    /// tanh(dense([CLS] state)), (batch, hidden); None without a pooling layer.
    pub pooler_output: Option<Tensor>,
}

/// The bare encoder (`BertModel`): embeddings, layers, optional pooler.
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    pooler: Option<Linear>,
}

impl BertModel {
    /// `vb` is the model's root: the checkpoint root for a bare `BertModel`, `bert` under a head.
    pub fn new(cfg: &BertConfig, vb: &ParamBuilder, add_pooling_layer: bool) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(cfg, &vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<_>>()?;
        // Sentence-embedding checkpoints often lack the pooler; transformers initialises it then.
        let pooler = add_pooling_layer
            .then(|| {
                Linear::new_head(
                    &vb.pp("pooler.dense"),
                    cfg.hidden_size,
                    cfg.hidden_size,
                    cfg.initializer_range,
                )
            })
            .transpose()?;
        Ok(BertModel {
            embeddings: BertEmbeddings::new(cfg, &vb.pp("embeddings"))?,
            layers,
            pooler,
        })
    }

    pub fn embeddings(&self) -> &BertEmbeddings {
        &self.embeddings
    }

    pub fn forward(&self, input: &EncoderInput, mode: Mode) -> Result<BertModelOutput> {
        let mut x = self.embeddings.forward(input, mode)?;
        let mask = input
            .attention_mask
            .as_ref()
            .map(|m| padding_mask_bias(m, x.dtype()))
            .transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, mask.as_ref(), mode)?;
        }
        let pooler_output = match &self.pooler {
            Some(dense) => Some(dense.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?),
            None => None,
        };
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
            return Err(crate::error::Error::invalid(format!(
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
        .ok_or_else(|| crate::error::Error::invalid("this BERT was built without a pooling layer"))
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

    /// The training loss alone, without the logits: [`BertLMPredictionHead::labelled_loss`].
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
    classifier: Linear,
    dropout: f64,
}

impl BertForTokenClassification {
    pub const ARCHITECTURE: &'static str = "BertForTokenClassification";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertForTokenClassification {
            bert: BertModel::new(cfg, &vb.pp("bert"), false)?,
            classifier: Linear::new_head(
                &vb.pp("classifier"),
                cfg.hidden_size,
                cfg.common.num_labels(),
                cfg.initializer_range,
            )?,
            dropout: cfg.classifier_dropout(),
        })
    }

    /// `labels` (batch, seq) i64 with -100 on tokens that carry no label.
    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<TokenClassifierOutput> {
        let h = self.bert.forward(input, mode)?.last_hidden_state;
        let logits = self.classifier.forward(&dropout(&h, self.dropout, mode)?)?; // (b, s, labels)
        let loss = labels.map(|l| cross_entropy_loss(&logits, l)).transpose()?;
        Ok(TokenClassifierOutput { loss, logits })
    }
}

/// `BertForQuestionAnswering`: start and end logits of the answer span.
pub struct BertForQuestionAnswering {
    pub bert: BertModel,
    qa_outputs: Linear,
}

impl BertForQuestionAnswering {
    pub const ARCHITECTURE: &'static str = "BertForQuestionAnswering";

    pub fn new(cfg: &BertConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(BertForQuestionAnswering {
            bert: BertModel::new(cfg, &vb.pp("bert"), false)?,
            // transformers sizes this by num_labels, which is 2 for span extraction.
            qa_outputs: Linear::new_head(
                &vb.pp("qa_outputs"),
                cfg.hidden_size,
                2,
                cfg.initializer_range,
            )?,
        })
    }

    /// `start_positions` / `end_positions` (batch) i64 token indices.
    pub fn forward(
        &self,
        input: &EncoderInput,
        positions: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<QuestionAnsweringOutput> {
        let h = self.bert.forward(input, mode)?.last_hidden_state;
        question_answering_output(&self.qa_outputs.forward(&h)?, positions)
    }
}
