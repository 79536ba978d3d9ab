//! GPT-2 (Radford et al., 2019) as transformers' `modeling_gpt2.py` builds it: learned
//! positions, pre-LayerNorm blocks, causal attention with a KV cache, a final LayerNorm, and the
//! LM head tied to the token embeddings.

use candle_core::{DType, Tensor};

pub use super::DecoderInput;
use super::EncoderInput;
use super::traits::PretrainingObjective;
use super::traits::{Backbone, CausalLm, DecodingState, SequenceClassifier, state_of};
use super::traits::{Class, Family, Head};
use crate::config::{Gpt2Config, ModelConfig};
use crate::error::{Error, Result};
use crate::heads::{
    CausalLMOutput, SequenceClassifierOutput, causal_lm_loss, sequence_classification_loss,
};
use crate::nn::attention::{
    KvCache, causal_mask_bias, merge_heads, scaled_dot_product_attention, split_heads,
};
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Mode, ParamBuilder, dropout};
use crate::tokenizer::{SpecialTokens, TokenizerConventions, TokenizerKind};

/// transformers' `Conv1D`: a linear layer whose weight is stored (in, out), the transpose of
/// `nn.Linear`'s. The checkpoint tensor is kept as it is and multiplied through a transposed
/// view, so the same weight is saved back unchanged and trains in place.
fn conv1d(vb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Linear> {
    let weight = vb.get((in_dim, out_dim), "weight", Init::normal(std))?; // (in, out)
    let bias = vb.get(out_dim, "bias", Init::Zeros)?;
    Linear::from_tensors(weight.t()?, Some(bias)).in_precision_of(vb)
}

struct Gpt2Attention {
    c_attn: Linear,
    c_proj: Linear,
    heads: usize,
    embed_dim: usize,
    scale: f64,
    attn_pdrop: f64,
    resid_pdrop: f64,
    layer: usize,
}

impl Gpt2Attention {
    fn new(cfg: &Gpt2Config, vb: &ParamBuilder, layer: usize) -> Result<Self> {
        let e = cfg.n_embd;
        let mut scale = if cfg.scale_attn_weights {
            1.0 / (cfg.head_dim() as f64).sqrt()
        } else {
            1.0
        };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        // GPT-2's scaled init: residual projections shrink with depth (1/√(2·n_layer)).
        let proj_std = cfg.initializer_range / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(Gpt2Attention {
            c_attn: conv1d(&vb.pp("c_attn"), e, 3 * e, cfg.initializer_range)?,
            c_proj: conv1d(&vb.pp("c_proj"), e, e, proj_std)?,
            heads: cfg.n_head,
            embed_dim: e,
            scale,
            attn_pdrop: cfg.attn_pdrop,
            resid_pdrop: cfg.resid_pdrop,
            layer,
        })
    }

    /// x (batch, seq, embed), mask (batch, 1, seq, past + seq)
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let qkv = self.c_attn.forward(x)?; // (b, s, 3e)
        let e = self.embed_dim;
        let q = split_heads(&qkv.narrow(2, 0, e)?, self.heads)?; // (b, heads, s, d)
        let k = split_heads(&qkv.narrow(2, e, e)?, self.heads)?;
        let v = split_heads(&qkv.narrow(2, 2 * e, e)?, self.heads)?;
        let (k, v) = match cache {
            Some(c) => c.append(self.layer, k, v)?,
            None => (k, v),
        };
        let ctx = scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            self.scale,
            self.attn_pdrop,
            mode,
        )?;
        dropout(
            &self.c_proj.forward(&merge_heads(&ctx)?)?,
            self.resid_pdrop,
            mode,
        )
    }
}

struct Gpt2Block {
    ln_1: LayerNorm,
    attn: Gpt2Attention,
    ln_2: LayerNorm,
    c_fc: Linear,
    activation: Activation,
    c_proj: Linear,
    resid_pdrop: f64,
}

impl Gpt2Block {
    fn new(cfg: &Gpt2Config, vb: &ParamBuilder, layer: usize) -> Result<Self> {
        let (e, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        let proj_std = cfg.initializer_range / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(Gpt2Block {
            ln_1: LayerNorm::new(&vb.pp("ln_1"), e, eps)?,
            attn: Gpt2Attention::new(cfg, &vb.pp("attn"), layer)?,
            ln_2: LayerNorm::new(&vb.pp("ln_2"), e, eps)?,
            c_fc: conv1d(
                &vb.pp("mlp.c_fc"),
                e,
                cfg.inner_dim(),
                cfg.initializer_range,
            )?,
            activation: cfg.activation_function,
            c_proj: conv1d(&vb.pp("mlp.c_proj"), cfg.inner_dim(), e, proj_std)?,
            resid_pdrop: cfg.resid_pdrop,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.ln_1.forward(x)?, mask, cache, mode)?)?;
        let h = self
            .c_fc
            .forward_activated(&self.ln_2.forward(&x)?, self.activation)?;
        let h = dropout(&self.c_proj.forward(&h)?, self.resid_pdrop, mode)?;
        Ok((x + h)?)
    }
}

/// The bare decoder (`GPT2Model`).
pub struct Gpt2Model {
    wte: Embedding,
    wpe: Embedding,
    h: Vec<Gpt2Block>,
    ln_f: LayerNorm,
    embd_pdrop: f64,
    n_positions: usize,
}

impl Gpt2Model {
    pub const ARCHITECTURE: &'static str = "GPT2Model";

    /// `vb` is the model's root: the checkpoint root for a bare model, `transformer` under a head.
    pub fn new(cfg: &Gpt2Config, vb: &ParamBuilder) -> Result<Self> {
        let std = cfg.initializer_range;
        Ok(Gpt2Model {
            wte: Embedding::new(&vb.pp("wte"), cfg.vocab_size, cfg.n_embd, std, None)?,
            wpe: Embedding::new(&vb.pp("wpe"), cfg.n_positions, cfg.n_embd, std, None)?,
            h: (0..cfg.n_layer)
                .map(|i| Gpt2Block::new(cfg, &vb.pp(format!("h.{i}")), i))
                .collect::<Result<_>>()?,
            ln_f: LayerNorm::new(&vb.pp("ln_f"), cfg.n_embd, cfg.layer_norm_epsilon)?,
            embd_pdrop: cfg.embd_pdrop,
            n_positions: cfg.n_positions,
        })
    }

    pub fn wte(&self) -> &Embedding {
        &self.wte
    }

    pub fn num_layers(&self) -> usize {
        self.h.len()
    }

    pub fn max_positions(&self) -> usize {
        self.n_positions
    }

    /// (batch, seq, embed). With a cache, only the new positions are passed and the cache grows.
    pub fn forward(
        &self,
        input: DecoderInput,
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, s) = input.input_ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        if past + s > self.n_positions {
            return Err(Error::invalid(format!(
                "{} positions exceed the model's {} (n_positions)",
                past + s,
                self.n_positions
            )));
        }
        let positions = match input.position_ids {
            Some(p) => self.wpe.forward(p)?, // (b, s, e)
            None => self.wpe.weight().narrow(0, past, s)?.unsqueeze(0)?, // (1, s, e)
        };
        let x = self
            .wte
            .forward(input.input_ids)?
            .broadcast_add(&positions)?;
        let mut x = dropout(&x, self.embd_pdrop, mode)?;
        let mask = causal_mask_bias(b, s, past, input.attention_mask, x.dtype(), x.device())?;
        for block in &self.h {
            x = block.forward(&x, &mask, cache.as_deref_mut(), mode)?;
        }
        self.ln_f.forward(&x)
    }
}

/// `GPT2LMHeadModel`: next-token logits from the decoder, through the tied embeddings.
pub struct Gpt2LMHeadModel {
    pub transformer: Gpt2Model,
    lm_head: Linear,
}

impl Gpt2LMHeadModel {
    pub const ARCHITECTURE: &'static str = "GPT2LMHeadModel";

    pub fn new(cfg: &Gpt2Config, vb: &ParamBuilder) -> Result<Self> {
        let transformer = Gpt2Model::new(cfg, &vb.pp("transformer"))?;
        let weight = if cfg.tie_word_embeddings {
            transformer.wte().weight().clone()
        } else {
            vb.get_or_init(
                (cfg.vocab_size, cfg.n_embd),
                "lm_head.weight",
                Init::normal(cfg.initializer_range),
            )?
        };
        Ok(Gpt2LMHeadModel {
            transformer,
            lm_head: Linear::from_tensors(weight, None).in_precision_of(&vb.pp("lm_head"))?,
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.transformer.num_layers())
    }

    /// `labels` (batch, seq) i64: the input ids, with -100 where no loss is taken; the shift
    /// to next-token targets happens here, as in transformers.
    pub fn forward(
        &self,
        input: DecoderInput,
        labels: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<CausalLMOutput> {
        let h = self.transformer.forward(input, cache, mode)?;
        let logits = self.lm_head.forward(&h)?; // (b, s, vocab)
        let loss = labels.map(|l| causal_lm_loss(&logits, l)).transpose()?;
        Ok(CausalLMOutput { loss, logits })
    }
}

/// `GPT2ForSequenceClassification`: the logits at each row's last non-padding token.
pub struct Gpt2ForSequenceClassification {
    pub transformer: Gpt2Model,
    score: Linear,
    pad_token_id: Option<u32>,
    config: Gpt2Config,
}

impl Gpt2ForSequenceClassification {
    pub const ARCHITECTURE: &'static str = "GPT2ForSequenceClassification";

    pub fn new(cfg: &Gpt2Config, vb: &ParamBuilder) -> Result<Self> {
        let n = cfg.common.num_labels();
        let weight = vb.get_or_init(
            (n, cfg.n_embd),
            "score.weight",
            Init::normal(cfg.initializer_range),
        )?;
        Ok(Gpt2ForSequenceClassification {
            transformer: Gpt2Model::new(cfg, &vb.pp("transformer"))?,
            score: Linear::from_tensors(weight, None).in_precision_of(&vb.pp("score"))?,
            pad_token_id: cfg.pad_token_id,
            config: cfg.clone(),
        })
    }

    pub fn forward(
        &self,
        input: DecoderInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<SequenceClassifierOutput> {
        let h = self.transformer.forward(input, None, mode)?;
        let all = self.score.forward(&h)?; // (b, s, labels)
        let (b, s) = input.input_ids.dims2()?;
        // transformers: the highest position holding a non-padding token (the last one without
        // a pad id, which then needs a batch of one).
        let last: Vec<u32> = match self.pad_token_id {
            Some(pad) => {
                let ids = input.input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
                ids.iter()
                    .map(|row| row.iter().rposition(|t| *t != pad).unwrap_or(0) as u32)
                    .collect()
            }
            None if b == 1 => vec![s as u32 - 1],
            None => {
                return Err(Error::unsupported(
                    "cannot classify a batch larger than 1 without pad_token_id",
                ));
            }
        };
        let n = all.dim(2)?;
        let idx = Tensor::from_vec(last, (b, 1, 1), all.device())?
            .broadcast_as((b, 1, n))?
            .contiguous()?;
        let logits = all.contiguous()?.gather(&idx, 1)?.squeeze(1)?; // (b, labels)
        let loss = labels
            .map(|l| sequence_classification_loss(&logits, l, self.config.common.problem_type))
            .transpose()?;
        Ok(SequenceClassifierOutput { loss, logits })
    }
}

// The registry's entry for GPT-2 and the capabilities its classes have.

fn gpt2_config(config: &ModelConfig) -> Result<&Gpt2Config> {
    match config {
        ModelConfig::Gpt2(c) => Ok(c),
        other => Err(Error::internal(format!(
            "the GPT-2 family was given a {} config",
            other.model_type()
        ))),
    }
}

/// GPT-2 in the registry ([`crate::models::auto`]).
pub struct Gpt2Family;

impl Family for Gpt2Family {
    fn model_type(&self) -> &'static str {
        "gpt2"
    }

    fn base_model_prefix(&self) -> &'static str {
        "transformer"
    }

    fn classes(&self) -> &'static [Class] {
        &[
            Class {
                architecture: Gpt2Model::ARCHITECTURE,
                head: Head::Base,
            },
            Class {
                architecture: Gpt2LMHeadModel::ARCHITECTURE,
                head: Head::CausalLm,
            },
            Class {
                architecture: Gpt2ForSequenceClassification::ARCHITECTURE,
                head: Head::SequenceClassification,
            },
        ]
    }

    /// transformers' `GPT2Tokenizer`: one `<|endoftext|>` for unknown, beginning and end; no
    /// padding token.
    fn tokenizer(&self) -> TokenizerConventions {
        let eot = Some("<|endoftext|>".to_string());
        TokenizerConventions {
            class: "GPT2Tokenizer",
            special: SpecialTokens {
                unk: eot.clone(),
                bos: eot.clone(),
                eos: eot,
                ..Default::default()
            },
            padding_left: false,
            trains: Some(TokenizerKind::Bpe),
        }
    }

    fn pretraining_objectives(&self) -> &'static [PretrainingObjective] {
        &[PretrainingObjective::Clm]
    }

    fn backbone(
        &self,
        config: &ModelConfig,
        vb: &ParamBuilder,
        _add_pooling_layer: bool,
    ) -> Result<Box<dyn Backbone>> {
        Ok(Box::new(Gpt2Model::new(gpt2_config(config)?, vb)?))
    }

    fn causal_lm(&self, c: &ModelConfig, vb: &ParamBuilder) -> Option<Result<Box<dyn CausalLm>>> {
        Some(gpt2_config(c).and_then(|c| Ok(Box::new(Gpt2LMHeadModel::new(c, vb)?) as _)))
    }

    fn sequence_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SequenceClassifier>>> {
        Some(
            gpt2_config(c)
                .and_then(|c| Ok(Box::new(Gpt2ForSequenceClassification::new(c, vb)?) as _)),
        )
    }
}

pretrained_model!(Gpt2Model, Gpt2Model::ARCHITECTURE, |m| m
    .wte
    .weight()
    .device());
pretrained_model!(Gpt2LMHeadModel, Self::ARCHITECTURE, |m| m
    .transformer
    .wte
    .weight()
    .device());
pretrained_model!(Gpt2ForSequenceClassification, Self::ARCHITECTURE, |m| m
    .transformer
    .wte
    .weight()
    .device());

/// An encoder input read left to right: GPT-2 has no token types.
fn decoder_input(input: &EncoderInput) -> DecoderInput<'_> {
    DecoderInput {
        input_ids: &input.input_ids,
        attention_mask: input.attention_mask.as_ref(),
        position_ids: None,
    }
}

impl Backbone for Gpt2Model {
    fn last_hidden_state(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        self.forward(decoder_input(input), None, mode)
    }
}

head_capability!(SequenceClassifier for Gpt2ForSequenceClassification, Option<&Tensor> => SequenceClassifierOutput, decoder_input);

impl DecodingState for KvCache {
    fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        KvCache::select_rows(self, rows)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl CausalLm for Gpt2LMHeadModel {
    fn new_state(&self) -> Box<dyn DecodingState> {
        Box::new(self.new_cache())
    }

    fn step(&self, input: DecoderInput, state: &mut dyn DecodingState) -> Result<Tensor> {
        let cache = state_of::<KvCache>(state, Self::ARCHITECTURE)?;
        Ok(self.forward(input, None, Some(cache), Mode::Eval)?.logits)
    }

    fn causal_lm_loss(&self, input_ids: &Tensor, labels: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward(DecoderInput::new(input_ids), Some(labels), None, mode)?
            .loss
            .ok_or_else(|| Error::internal("GPT-2 returned no loss for labels"))
    }

    fn max_positions(&self) -> usize {
        self.transformer.max_positions()
    }
}
