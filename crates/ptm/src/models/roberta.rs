//! RoBERTa (Liu et al., 2019) as transformers' `modeling_roberta.py` builds it: BERT's layers
//! under `roberta.`, positions counted from the padding id, and heads of its own (`lm_head`,
//! `classifier.dense`/`out_proj`), with the same weight names, so HF checkpoints load unchanged
//! and ptm's load in transformers.

use candle_core::{DType, Tensor};

use super::EncoderInput;
use super::bert::{BertEncoder, BertModelOutput, BertPooler};
use super::traits::PretrainingObjective;
use super::traits::{Backbone, MaskedLm, SequenceClassifier, SpanExtractor, TokenClassifier};
use super::traits::{Class, Family, Head};
use crate::config::{ModelConfig, ProblemType, RobertaConfig};
use crate::error::{Error, Result};
use crate::heads::{
    MaskedLMOutput, QuestionAnsweringOutput, SequenceClassifierOutput, SpanExtractionHead,
    TokenClassificationHead, TokenClassifierOutput, cross_entropy_loss,
    sequence_classification_loss,
};
use crate::nn::loss::{IGNORE_INDEX, cross_entropy};
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Mode, ParamBuilder, dropout};
use crate::tokenizer::{SpecialTokens, TokenizerConventions};

/// Word + position + token-type embeddings, then LayerNorm and dropout. Unlike BERT's, the
/// position of a token is its rank among the non-padding tokens of its row plus `padding_idx`
/// (fairseq's `make_positions`), and padding takes the `padding_idx` row.
pub struct RobertaEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: f64,
    padding_idx: u32,
    max_positions: usize,
}

impl RobertaEmbeddings {
    pub fn new(cfg: &RobertaConfig, vb: &ParamBuilder) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        let pad = cfg.padding_idx();
        Ok(RobertaEmbeddings {
            word_embeddings: Embedding::new(
                &vb.pp("word_embeddings"),
                cfg.vocab_size,
                h,
                std,
                Some(pad),
            )?,
            // The padding row gets no gradient, as with transformers' `padding_idx`.
            position_embeddings: Embedding::new(
                &vb.pp("position_embeddings"),
                cfg.max_position_embeddings,
                h,
                std,
                Some(pad),
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
            padding_idx: pad,
            max_positions: cfg.max_positions(),
        })
    }

    pub fn word_embeddings(&self) -> &Embedding {
        &self.word_embeddings
    }

    /// input_ids (batch, seq) -> position ids (batch, seq) u32: `padding_idx + 1, + 2, …` over
    /// the tokens that are not `padding_idx`, `padding_idx` on those that are. Fails naming the
    /// limit when a row has more tokens than the position table holds.
    pub fn position_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let pad = self.padding_idx;
        let mut positions = Vec::with_capacity(b * s);
        let mut longest = 0;
        for row in input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()? {
            let mut n = 0;
            for id in row {
                n += u32::from(id != pad);
                positions.push(if id == pad { pad } else { pad + n });
            }
            longest = longest.max(n as usize);
        }
        if longest > self.max_positions {
            return Err(Error::invalid(format!(
                "an input of {longest} tokens is longer than this RoBERTa reads: at most {} \
                 (max_position_embeddings less padding_idx + 1)",
                self.max_positions
            )));
        }
        Ok(Tensor::from_vec(positions, (b, s), input_ids.device())?)
    }

    /// input_ids (batch, seq) -> (batch, seq, hidden)
    pub fn forward(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        let ids = &input.input_ids;
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
        let positions = self.position_embeddings.forward(&self.position_ids(ids)?)?; // (b, seq, h)
        let x = (words.broadcast_add(&types)? + positions)?;
        dropout(&self.layer_norm.forward(&x)?, self.dropout, mode)
    }
}

/// The bare encoder (`RobertaModel`): embeddings, BERT's layers, optional pooler.
pub struct RobertaModel {
    embeddings: RobertaEmbeddings,
    encoder: BertEncoder,
    pooler: Option<BertPooler>,
}

impl RobertaModel {
    pub const ARCHITECTURE: &'static str = "RobertaModel";

    /// `vb` is the model's root: the checkpoint root for a bare `RobertaModel`, `roberta`
    /// under a head.
    pub fn new(cfg: &RobertaConfig, vb: &ParamBuilder, add_pooling_layer: bool) -> Result<Self> {
        Ok(RobertaModel {
            embeddings: RobertaEmbeddings::new(cfg, &vb.pp("embeddings"))?,
            encoder: BertEncoder::new(cfg, &vb.pp("encoder"))?,
            pooler: add_pooling_layer
                .then(|| BertPooler::new(cfg, vb))
                .transpose()?,
        })
    }

    pub fn embeddings(&self) -> &RobertaEmbeddings {
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

/// `lm_head`: dense + exact GELU (whatever `hidden_act` says) + `layer_norm`, then the decoder:
/// tied to the word embeddings with bias `lm_head.bias`, or (`tie_word_embeddings` false) a
/// Linear of its own, `lm_head.decoder`, as transformers 5 unties both weight and bias.
struct RobertaLMHead {
    dense: Linear,
    layer_norm: LayerNorm,
    decoder: Linear,
}

impl RobertaLMHead {
    fn new(cfg: &RobertaConfig, vb: &ParamBuilder, word_embeddings: &Tensor) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        // `lm_head.bias` always exists, as in transformers, unused when untied.
        let bias = vb.get_or_init(cfg.vocab_size, "bias", Init::Zeros)?;
        let decoder = if cfg.tie_word_embeddings {
            Linear::from_tensors(word_embeddings.clone(), Some(bias)).in_precision_of(vb)?
        } else {
            Linear::new_head(&vb.pp("decoder"), h, cfg.vocab_size, std)?
        };
        Ok(RobertaLMHead {
            dense: Linear::new_head(&vb.pp("dense"), h, h, std)?,
            layer_norm: LayerNorm::new_head(&vb.pp("layer_norm"), h, cfg.layer_norm_eps)?,
            decoder,
        })
    }

    /// (..., hidden) -> (..., vocab)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self
            .layer_norm
            .forward(&self.dense.forward_activated(x, Activation::Gelu)?)?;
        self.decoder.forward(&x)
    }

    /// The masked-LM loss projecting only the labelled positions onto the vocabulary (as
    /// BERT's head does): the cross-entropy over all logits, where the rest carry -100;
    /// None when no position is labelled.
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
        let (n, device) = (rows.len(), hidden.device());
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

/// `RobertaForMaskedLM`.
pub struct RobertaForMaskedLM {
    pub roberta: RobertaModel,
    lm_head: RobertaLMHead,
}

impl RobertaForMaskedLM {
    pub const ARCHITECTURE: &'static str = "RobertaForMaskedLM";

    pub fn new(cfg: &RobertaConfig, vb: &ParamBuilder) -> Result<Self> {
        let roberta = RobertaModel::new(cfg, &vb.pp("roberta"), false)?;
        let tied = roberta.embeddings.word_embeddings.weight().clone();
        let lm_head = RobertaLMHead::new(cfg, &vb.pp("lm_head"), &tied)?;
        Ok(RobertaForMaskedLM { roberta, lm_head })
    }

    /// `labels` (batch, seq) i64 with -100 where no loss is taken.
    pub fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<MaskedLMOutput> {
        let h = self.roberta.forward(input, mode)?.last_hidden_state;
        let logits = self.lm_head.forward(&h)?; // (b, s, vocab)
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
        let h = self.roberta.forward(input, mode)?.last_hidden_state;
        self.lm_head.labelled_loss(&h, labels)
    }
}

/// `classifier`: on the `<s>` state, dropout, dense, tanh, dropout, `out_proj`. RoBERTa has no
/// pooler under its heads; this plays its part.
struct RobertaClassificationHead {
    dense: Linear,
    out_proj: Linear,
    dropout: f64,
}

impl RobertaClassificationHead {
    fn new(cfg: &RobertaConfig, vb: &ParamBuilder) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        Ok(RobertaClassificationHead {
            dense: Linear::new_head(&vb.pp("dense"), h, h, std)?,
            out_proj: Linear::new_head(&vb.pp("out_proj"), h, cfg.common.num_labels(), std)?,
            dropout: cfg.classifier_dropout(),
        })
    }

    /// (batch, seq, hidden) -> (batch, labels)
    fn forward(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = dropout(&hidden.narrow(1, 0, 1)?.squeeze(1)?, self.dropout, mode)?; // (b, h)
        let x = dropout(&self.dense.forward(&x)?.tanh()?, self.dropout, mode)?;
        self.out_proj.forward(&x)
    }
}

/// `RobertaForSequenceClassification`.
pub struct RobertaForSequenceClassification {
    pub roberta: RobertaModel,
    classifier: RobertaClassificationHead,
    problem_type: Option<ProblemType>,
}

impl RobertaForSequenceClassification {
    pub const ARCHITECTURE: &'static str = "RobertaForSequenceClassification";

    pub fn new(cfg: &RobertaConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(RobertaForSequenceClassification {
            roberta: RobertaModel::new(cfg, &vb.pp("roberta"), false)?,
            classifier: RobertaClassificationHead::new(cfg, &vb.pp("classifier"))?,
            problem_type: cfg.common.problem_type,
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
        let h = self.roberta.forward(input, mode)?.last_hidden_state;
        let logits = self.classifier.forward(&h, mode)?;
        let loss = labels
            .map(|l| sequence_classification_loss(&logits, l, self.problem_type))
            .transpose()?;
        Ok(SequenceClassifierOutput { loss, logits })
    }
}

/// `RobertaForTokenClassification`: dropout and a linear layer on every token's state.
pub struct RobertaForTokenClassification {
    pub roberta: RobertaModel,
    head: TokenClassificationHead,
}

impl RobertaForTokenClassification {
    pub const ARCHITECTURE: &'static str = "RobertaForTokenClassification";

    pub fn new(cfg: &RobertaConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(RobertaForTokenClassification {
            roberta: RobertaModel::new(cfg, &vb.pp("roberta"), false)?,
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
        let h = self.roberta.forward(input, mode)?.last_hidden_state; // (b, s, hidden)
        self.head.forward(&h, labels, mode)
    }
}

/// `RobertaForQuestionAnswering`: start and end logits of the answer span.
pub struct RobertaForQuestionAnswering {
    pub roberta: RobertaModel,
    head: SpanExtractionHead,
}

impl RobertaForQuestionAnswering {
    pub const ARCHITECTURE: &'static str = "RobertaForQuestionAnswering";

    pub fn new(cfg: &RobertaConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(RobertaForQuestionAnswering {
            roberta: RobertaModel::new(cfg, &vb.pp("roberta"), false)?,
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
        let h = self.roberta.forward(input, mode)?.last_hidden_state; // (b, s, hidden)
        self.head.forward(&h, positions)
    }
}

// The registry's entry for RoBERTa and the capabilities its classes have.

fn roberta_config(config: &ModelConfig) -> Result<&RobertaConfig> {
    match config {
        ModelConfig::Roberta(c) => Ok(c),
        other => Err(Error::internal(format!(
            "the RoBERTa family was given a {} config",
            other.model_type()
        ))),
    }
}

/// RoBERTa in the registry ([`crate::models::auto`]).
pub struct RobertaFamily;

impl Family for RobertaFamily {
    fn model_type(&self) -> &'static str {
        "roberta"
    }

    fn base_model_prefix(&self) -> &'static str {
        "roberta"
    }

    fn classes(&self) -> &'static [Class] {
        &[
            Class {
                architecture: RobertaModel::ARCHITECTURE,
                head: Head::Base,
            },
            Class {
                architecture: RobertaForMaskedLM::ARCHITECTURE,
                head: Head::MaskedLm,
            },
            Class {
                architecture: RobertaForSequenceClassification::ARCHITECTURE,
                head: Head::SequenceClassification,
            },
            Class {
                architecture: RobertaForTokenClassification::ARCHITECTURE,
                head: Head::TokenClassification,
            },
            Class {
                architecture: RobertaForQuestionAnswering::ARCHITECTURE,
                head: Head::QuestionAnswering,
            },
        ]
    }

    /// transformers' `RobertaTokenizer`: byte-level BPE, `<s> A </s></s> B </s>`. ptm trains
    /// byte-level BPE for GPT-2, so none is trained for this family.
    fn tokenizer(&self) -> TokenizerConventions {
        let t = |s: &str| Some(s.to_string());
        TokenizerConventions {
            class: "RobertaTokenizer",
            special: SpecialTokens {
                unk: t("<unk>"),
                sep: t("</s>"),
                pad: t("<pad>"),
                cls: t("<s>"),
                mask: t("<mask>"),
                bos: t("<s>"),
                eos: t("</s>"),
            },
            padding_left: false,
            trains: None,
        }
    }

    /// RoBERTa drops next-sentence prediction (Liu et al., 2019): masked LM only.
    fn pretraining_objectives(&self) -> &'static [PretrainingObjective] {
        &[PretrainingObjective::Mlm]
    }

    fn backbone(
        &self,
        config: &ModelConfig,
        vb: &ParamBuilder,
        add_pooling_layer: bool,
    ) -> Result<Box<dyn Backbone>> {
        Ok(Box::new(RobertaModel::new(
            roberta_config(config)?,
            vb,
            add_pooling_layer,
        )?))
    }

    fn masked_lm(&self, c: &ModelConfig, vb: &ParamBuilder) -> Option<Result<Box<dyn MaskedLm>>> {
        Some(roberta_config(c).and_then(|c| Ok(Box::new(RobertaForMaskedLM::new(c, vb)?) as _)))
    }

    fn sequence_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SequenceClassifier>>> {
        Some(
            roberta_config(c)
                .and_then(|c| Ok(Box::new(RobertaForSequenceClassification::new(c, vb)?) as _)),
        )
    }

    fn token_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn TokenClassifier>>> {
        Some(
            roberta_config(c)
                .and_then(|c| Ok(Box::new(RobertaForTokenClassification::new(c, vb)?) as _)),
        )
    }

    fn span_extractor(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SpanExtractor>>> {
        Some(
            roberta_config(c)
                .and_then(|c| Ok(Box::new(RobertaForQuestionAnswering::new(c, vb)?) as _)),
        )
    }
}

fn roberta_device(m: &RobertaModel) -> &candle_core::Device {
    m.embeddings.word_embeddings.weight().device()
}

pretrained_model!(RobertaModel, RobertaModel::ARCHITECTURE, |m| {
    roberta_device(m)
});
pretrained_model!(RobertaForMaskedLM, Self::ARCHITECTURE, |m| roberta_device(
    &m.roberta
));
pretrained_model!(RobertaForSequenceClassification, Self::ARCHITECTURE, |m| {
    roberta_device(&m.roberta)
});
pretrained_model!(RobertaForTokenClassification, Self::ARCHITECTURE, |m| {
    roberta_device(&m.roberta)
});
pretrained_model!(RobertaForQuestionAnswering, Self::ARCHITECTURE, |m| {
    roberta_device(&m.roberta)
});

impl Backbone for RobertaModel {
    fn last_hidden_state(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        Ok(self.forward(input, mode)?.last_hidden_state)
    }
}

impl MaskedLm for RobertaForMaskedLM {
    fn forward(
        &self,
        input: &EncoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<MaskedLMOutput> {
        RobertaForMaskedLM::forward(self, input, labels, mode)
    }

    fn masked_lm_loss(
        &self,
        input: &EncoderInput,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<Option<Tensor>> {
        RobertaForMaskedLM::masked_lm_loss(self, input, labels, mode)
    }
}

head_capability!(SequenceClassifier for RobertaForSequenceClassification, Option<&Tensor> => SequenceClassifierOutput, std::convert::identity);

head_capability!(TokenClassifier for RobertaForTokenClassification, Option<&Tensor> => TokenClassifierOutput, std::convert::identity);

head_capability!(SpanExtractor for RobertaForQuestionAnswering, Option<(&Tensor, &Tensor)> => QuestionAnsweringOutput, std::convert::identity);
