//! XLNet (Yang et al., 2019) as transformers' `modeling_xlnet.py` builds it: Transformer-XL
//! blocks with relative positional attention (content, position and segment terms, each with
//! its own bias), memory carried from segment to segment, and two-stream attention: the
//! content stream h sees its own token, the query stream g (started from `mask_emb`) sees only
//! the context the permutation allows, so it can predict the token at its position.
//!
//! ptm keeps tensors batch-first, (batch, seq, d_model); transformers' XLNet works in
//! (seq, batch, d_model) internally and returns batch-first too. Memories are batch-first here:
//! (batch, mem_len, d_model) per layer.

use candle_core::{DType, Tensor};

use super::traits::PretrainingObjective;
use super::traits::{
    Backbone, CausalLm, DecodingState, PermutationLm, SequenceClassifier, SpanExtractor,
    TokenClassifier, state_of,
};
use super::traits::{Class, Family, Head};
use super::{DecoderInput, EncoderInput};
use crate::config::xlnet::AttnType;
use crate::config::{ModelConfig, XlnetConfig};
use crate::error::{Error, Result};
use crate::heads::{
    QuestionAnsweringOutput, SequenceClassifierOutput, SpanExtractionHead, TokenClassificationHead,
    TokenClassifierOutput, cross_entropy_loss, sequence_classification_loss,
};
use crate::nn::attention::merge_heads;
use crate::nn::ops::softmax_last_dim;
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Mode, ParamBuilder, dropout};
use crate::tokenizer::{SpecialTokens, TokenizerConventions, TokenizerKind};

/// What one forward pass of [`XlnetModel`] reads. Masks are f32 with 1 where attention is
/// forbidden, as transformers' `perm_mask`; `attention_mask` is BERT's (1 real, 0 padding).
#[derive(Clone, Copy, Default)]
pub struct XlnetInput<'a> {
    /// (batch, seq) u32
    pub input_ids: Option<&'a Tensor>,
    /// (batch, seq)
    pub attention_mask: Option<&'a Tensor>,
    /// (batch, seq) u32: segment ids (XLNet gives `<cls>` its own, 2).
    pub token_type_ids: Option<&'a Tensor>,
    /// (batch, seq, seq): 1 where position i may not see position j.
    pub perm_mask: Option<&'a Tensor>,
    /// (batch, num_predict, seq): row m is one-hot on the position the m-th prediction is for.
    pub target_mapping: Option<&'a Tensor>,
    /// One (batch, mem_len, d_model) tensor per layer, from the previous segment.
    pub mems: Option<&'a [Tensor]>,
    /// Return the memories for the next segment.
    pub use_mems: bool,
}

pub struct XlnetOutput {
    /// (batch, seq, d_model), or (batch, num_predict, d_model) with a target mapping (the query
    /// stream).
    pub last_hidden_state: Tensor,
    /// One (batch, mem_len, d_model) tensor per layer when `use_mems` (detached).
    pub mems: Vec<Tensor>,
}

/// `XLNetRelativeAttention`: projections stored (d_model, n_head, d_head) as in the checkpoint.
struct RelativeAttention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    r: Tensor,
    r_r_bias: Tensor,
    r_s_bias: Tensor,
    r_w_bias: Tensor,
    seg_embed: Tensor,
    layer_norm: LayerNorm,
    n_head: usize,
    d_head: usize,
    scale: f64,
    dropout: f64,
}

/// The masks and encodings every layer shares.
struct Context {
    /// (batch or 1, n_rel, d_model): sinusoids of the relative distances klen … -qlen.
    pos_emb: Tensor,
    /// (batch, 1, q, k): 1 where the content stream may not look (None: it sees everything).
    mask_h: Option<Tensor>,
    /// (batch, 1, q, k): the query stream's mask (also hides each position from itself).
    mask_g: Option<Tensor>,
    /// (batch, 1, q, k): 1 where positions i and j are in different segments.
    seg_diff: Option<Tensor>,
    /// (batch, num_predict, q)
    target_mapping: Option<Tensor>,
}

impl RelativeAttention {
    fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        let (d, n, dh) = (cfg.d_model, cfg.n_head, cfg.head_dim());
        let init = Init::normal(cfg.initializer_range);
        let proj = |name: &str| vb.get((d, n, dh), name, init);
        Ok(RelativeAttention {
            q: proj("q")?,
            k: proj("k")?,
            v: proj("v")?,
            o: proj("o")?,
            r: proj("r")?,
            r_r_bias: vb.get((n, dh), "r_r_bias", init)?,
            r_s_bias: vb.get((n, dh), "r_s_bias", init)?,
            r_w_bias: vb.get((n, dh), "r_w_bias", init)?,
            seg_embed: vb.get((2, n, dh), "seg_embed", init)?,
            layer_norm: LayerNorm::new(&vb.pp("layer_norm"), d, cfg.layer_norm_eps)?,
            n_head: n,
            d_head: dh,
            scale: 1.0 / (dh as f64).sqrt(),
            dropout: cfg.dropout,
        })
    }

    /// x (batch, s, d_model) through a (d_model, n, d_head) projection -> (batch, n, s, d_head)
    fn heads(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let w = w.reshape((d, self.n_head * self.d_head))?;
        let y = x.reshape((b * s, d))?.matmul(&w)?; // (b·s, n·dh)
        Ok(y.reshape((b, s, self.n_head, self.d_head))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// A (n, d_head) bias shaped to add to (batch, n, s, d_head).
    fn bias(&self, b: &Tensor) -> Result<Tensor> {
        Ok(b.reshape((1, self.n_head, 1, self.d_head))?)
    }

    /// `rel_attn_core`: attention of queries q (b, n, i, dh) over keys/values of k_len positions,
    /// with the content, position and segment scores -> (b, n, i, dh).
    #[allow(clippy::too_many_arguments)] // transformers' rel_attn_core, argument for argument
    fn core(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        k_r: &Tensor,
        ctx: &Context,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let k_len = k.dim(2)?;
        let ac = q
            .broadcast_add(&self.bias(&self.r_w_bias)?)?
            .matmul(&k.t()?)?; // (b, n, i, j)
        let bd = q
            .broadcast_add(&self.bias(&self.r_r_bias)?)?
            .broadcast_matmul(&k_r.t()?)?; // (b, n, i, n_rel)
        let mut score = (ac + rel_shift(&bd, k_len)?)?;
        if let Some(diff) = &ctx.seg_diff {
            // Per (query, segment relation) score, then picked by whether j is in i's segment.
            let seg = self.seg_embed.permute((1, 2, 0))?.unsqueeze(0)?; // (1, n, dh, 2)
            let ef = q
                .broadcast_add(&self.bias(&self.r_s_bias)?)?
                .broadcast_matmul(&seg)?; // (b, n, i, 2)
            let (same, other) = (ef.narrow(3, 0, 1)?, ef.narrow(3, 1, 1)?);
            score = (score + same.broadcast_add(&diff.broadcast_mul(&(other - &same)?)?)?)?;
        }
        let mut score = (score * self.scale)?;
        if let Some(m) = mask {
            // transformers subtracts 1e30 rather than filling -inf: a fully masked row gets a
            // uniform distribution, not NaN.
            score = score.broadcast_sub(&(m * 1e30)?)?;
        }
        let prob = dropout(&softmax_last_dim(&score)?, self.dropout, mode)?;
        Ok(prob.matmul(v)?)
    }

    /// `post_attention`: back to d_model, dropout, residual, LayerNorm.
    fn post(&self, residual: &Tensor, vec: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, s, d) = residual.dims3()?;
        let o = self.o.reshape((d, self.n_head * self.d_head))?;
        let out = merge_heads(vec)?
            .reshape((b * s, self.n_head * self.d_head))?
            .matmul(&o.t()?)?
            .reshape((b, s, d))?;
        self.layer_norm
            .forward(&(dropout(&out, self.dropout, mode)? + residual)?)
    }

    /// h (b, q, d), g (b, m, d) -> both streams after attention.
    fn forward(
        &self,
        h: &Tensor,
        g: Option<&Tensor>,
        mem: Option<&Tensor>,
        ctx: &Context,
        mode: Mode,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cat = match mem {
            Some(m) if m.dim(1)? > 0 => Tensor::cat(&[m, h], 1)?,
            _ => h.clone(),
        };
        let k = self.heads(&cat, &self.k)?;
        let v = self.heads(&cat, &self.v)?;
        let k_r = self.heads(&ctx.pos_emb, &self.r)?; // (b or 1, n, n_rel, dh)
        let q_h = self.heads(h, &self.q)?;
        let vec_h = self.core(&q_h, &k, &v, &k_r, ctx, ctx.mask_h.as_ref(), mode)?;
        let out_h = self.post(h, &vec_h, mode)?;
        let out_g = match g {
            None => None,
            Some(g) => {
                let q_g = self.heads(g, &self.q)?; // (b, n, m, dh)
                let vec_g = match &ctx.target_mapping {
                    Some(tm) => {
                        // Each prediction's query sits at its target position, then comes back.
                        let tm = tm.unsqueeze(1)?; // (b, 1, m, q)
                        let q_pos = tm.t()?.broadcast_matmul(&q_g)?; // (b, n, q, dh)
                        let vec =
                            self.core(&q_pos, &k, &v, &k_r, ctx, ctx.mask_g.as_ref(), mode)?;
                        tm.broadcast_matmul(&vec)? // (b, n, m, dh)
                    }
                    None => self.core(&q_g, &k, &v, &k_r, ctx, ctx.mask_g.as_ref(), mode)?,
                };
                Some(self.post(g, &vec_g, mode)?)
            }
        };
        Ok((out_h, out_g))
    }
}

/// transformers' `rel_shift_bnij`: row i of x (b, n, i, n_rel) shifted so that column j holds
/// the score of the relative distance between i and j; the first `k_len` columns kept.
fn rel_shift(x: &Tensor, k_len: usize) -> Result<Tensor> {
    let (b, n, i, r) = x.dims4()?;
    let shifted = x.contiguous()?.reshape((b, n, r, i))?.narrow(2, 1, r - 1)?;
    Ok(shifted
        .contiguous()?
        .reshape((b, n, i, r - 1))?
        .narrow(3, 0, k_len)?)
}

/// `XLNetFeedForward`: layer_1, activation, layer_2, residual, LayerNorm.
struct FeedForward {
    layer_1: Linear,
    layer_2: Linear,
    layer_norm: LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl FeedForward {
    fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        let std = cfg.initializer_range;
        Ok(FeedForward {
            layer_1: Linear::new(&vb.pp("layer_1"), cfg.d_model, cfg.d_inner, std)?,
            layer_2: Linear::new(&vb.pp("layer_2"), cfg.d_inner, cfg.d_model, std)?,
            layer_norm: LayerNorm::new(&vb.pp("layer_norm"), cfg.d_model, cfg.layer_norm_eps)?,
            activation: cfg.ff_activation,
            dropout: cfg.dropout,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let inner = dropout(
            &self.layer_1.forward_activated(x, self.activation)?,
            self.dropout,
            mode,
        )?;
        let out = dropout(&self.layer_2.forward(&inner)?, self.dropout, mode)?;
        self.layer_norm.forward(&(out + x)?)
    }
}

struct XlnetLayer {
    rel_attn: RelativeAttention,
    ff: FeedForward,
}

/// `XLNetModel`.
pub struct XlnetModel {
    word_embedding: Embedding,
    mask_emb: Tensor,
    layers: Vec<XlnetLayer>,
    config: XlnetConfig,
}

impl XlnetModel {
    pub const ARCHITECTURE: &'static str = "XLNetModel";

    pub fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        let std = cfg.initializer_range;
        let layers = (0..cfg.n_layer)
            .map(|i| {
                let l = vb.pp(format!("layer.{i}"));
                Ok(XlnetLayer {
                    rel_attn: RelativeAttention::new(cfg, &l.pp("rel_attn"))?,
                    ff: FeedForward::new(cfg, &l.pp("ff"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(XlnetModel {
            word_embedding: Embedding::new(
                &vb.pp("word_embedding"),
                cfg.vocab_size,
                cfg.d_model,
                std,
                None,
            )?,
            mask_emb: vb.get((1, 1, cfg.d_model), "mask_emb", Init::normal(std))?,
            layers,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &XlnetConfig {
        &self.config
    }

    pub fn word_embedding(&self) -> &Embedding {
        &self.word_embedding
    }

    pub fn forward(&self, input: XlnetInput, mode: Mode) -> Result<XlnetOutput> {
        let ids = input
            .input_ids
            .ok_or_else(|| Error::invalid("XLNet needs input_ids"))?;
        let (b, q_len) = ids.dims2()?;
        let cfg = &self.config;
        let mems = input.mems.unwrap_or(&[]);
        if !mems.is_empty() && mems.len() != self.layers.len() {
            return Err(Error::invalid(format!(
                "mems holds {} layers, the model has {}",
                mems.len(),
                self.layers.len()
            )));
        }
        let m_len = match mems.first() {
            Some(m) => {
                let (mb, ml, md) = m.dims3()?;
                if mb != b || md != cfg.d_model {
                    return Err(Error::invalid(format!(
                        "mems have shape {:?}, expected [{b}, mem_len, {}]",
                        m.dims(),
                        cfg.d_model
                    )));
                }
                ml
            }
            None => 0,
        };
        let k_len = m_len + q_len;
        let device = ids.device();
        let (attn_mask, non_tgt_mask) = self.masks(&input, b, q_len, m_len)?;
        let seg_diff = match input.token_type_ids {
            Some(tt) => {
                let tt = tt.to_dtype(DType::U32)?;
                let cat = if m_len > 0 {
                    Tensor::cat(&[&Tensor::zeros((b, m_len), DType::U32, device)?, &tt], 1)?
                } else {
                    tt.clone()
                };
                let diff = tt.unsqueeze(2)?.broadcast_ne(&cat.unsqueeze(1)?)?; // (b, q, k)
                Some(diff.to_dtype(DType::F32)?.unsqueeze(1)?)
            }
            None => None,
        };
        let target_mapping = match input.target_mapping {
            Some(tm) => {
                let (tb, _, tq) = tm.dims3()?;
                if tb != b || tq != q_len {
                    return Err(Error::invalid(format!(
                        "target_mapping has shape {:?}, expected [{b}, num_predict, {q_len}]",
                        tm.dims()
                    )));
                }
                Some(tm.to_dtype(DType::F32)?)
            }
            None => None,
        };
        let ctx = Context {
            pos_emb: dropout(
                &self.relative_positional_encoding(q_len, k_len, b, device)?,
                cfg.dropout,
                mode,
            )?,
            mask_h: non_tgt_mask,
            mask_g: attn_mask,
            seg_diff,
            target_mapping,
        };
        let mut h = dropout(&self.word_embedding.forward(ids)?, cfg.dropout, mode)?;
        let mut g = match &ctx.target_mapping {
            Some(tm) => Some(dropout(
                &self
                    .mask_emb
                    .broadcast_as((b, tm.dim(1)?, cfg.d_model))?
                    .contiguous()?,
                cfg.dropout,
                mode,
            )?),
            None => None,
        };
        let mut new_mems = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if input.use_mems {
                new_mems.push(self.cache_mem(&h, mems.get(i))?);
            }
            let (out_h, out_g) = layer
                .rel_attn
                .forward(&h, g.as_ref(), mems.get(i), &ctx, mode)?;
            h = layer.ff.forward(&out_h, mode)?;
            g = out_g.map(|g| layer.ff.forward(&g, mode)).transpose()?;
        }
        let last_hidden_state = dropout(g.as_ref().unwrap_or(&h), cfg.dropout, mode)?;
        Ok(XlnetOutput {
            last_hidden_state,
            mems: new_mems,
        })
    }

    /// The query stream's mask and the content stream's (which lets each position see itself),
    /// (batch, 1, q, k) each, from attn_type, padding and perm_mask; None when nothing is hidden.
    fn masks(
        &self,
        input: &XlnetInput,
        b: usize,
        q_len: usize,
        m_len: usize,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let k_len = m_len + q_len;
        let device = input
            .input_ids
            .map(|t| t.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut mask: Option<Tensor> = None;
        if self.config.attn_type == AttnType::Uni {
            // Hidden: j beyond i (after the memory); with same_length, also j < i within the segment.
            let same_length = self.config.same_length;
            let m: Vec<f32> = (0..q_len)
                .flat_map(|i| {
                    (0..k_len).map(move |j| {
                        (j > i + m_len || (same_length && j < q_len && j < i)) as u8 as f32
                    })
                })
                .collect();
            mask = Some(Tensor::from_vec(m, (1, 1, q_len, k_len), &device)?);
        }
        let mut data: Option<Tensor> = None;
        if let Some(am) = input.attention_mask {
            let pad = (1.0 - am.to_dtype(DType::F32)?)?; // (b, q): 1 at padding
            data = Some(pad.reshape((b, 1, 1, q_len))?);
        }
        if let Some(pm) = input.perm_mask {
            if pm.dims() != [b, q_len, q_len] {
                return Err(Error::invalid(format!(
                    "perm_mask has shape {:?}, expected [{b}, {q_len}, {q_len}]",
                    pm.dims()
                )));
            }
            let pm = pm.to_dtype(DType::F32)?.unsqueeze(1)?;
            data = Some(match data {
                Some(d) => d.broadcast_add(&pm)?,
                None => pm,
            });
        }
        if let Some(d) = data {
            // The memory is always visible.
            let d = if m_len > 0 {
                let dims = d.dims().to_vec();
                Tensor::cat(
                    &[
                        &Tensor::zeros((dims[0], 1, dims[2], m_len), DType::F32, &device)?,
                        &d,
                    ],
                    3,
                )?
            } else {
                d
            };
            mask = Some(match mask {
                Some(m) => m.broadcast_add(&d)?,
                None => d,
            });
        }
        let Some(mask) = mask else {
            return Ok((None, None));
        };
        let mask = mask
            .gt(0f32)?
            .to_dtype(DType::F32)?
            .broadcast_as((b, 1, q_len, k_len))?
            .contiguous()?;
        let eye: Vec<f32> = (0..q_len)
            .flat_map(|i| (0..k_len).map(move |j| (j == m_len + i) as u8 as f32))
            .collect();
        let eye = Tensor::from_vec(eye, (1, 1, q_len, k_len), &device)?;
        let non_tgt = mask.broadcast_sub(&eye)?.gt(0f32)?.to_dtype(DType::F32)?;
        Ok((Some(mask), Some(non_tgt)))
    }

    /// Sinusoids of the relative distances k_len, k_len-1, … down to -q_len (bi) or 0 (uni),
    /// clamped to ±clamp_len; with bi_data, the first half of the batch counts forward and the
    /// second backward. -> (batch or 1, n_rel, d_model)
    fn relative_positional_encoding(
        &self,
        q_len: usize,
        k_len: usize,
        b: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let d = cfg.d_model;
        let inv_freq: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / 10000f32.powf(i as f32 / d as f32))
            .collect();
        let end = match cfg.attn_type {
            AttnType::Bi => -(q_len as i64),
            AttnType::Uni => -1,
        };
        let clamp = |p: f32| {
            if cfg.clamp_len > 0 {
                p.clamp(-(cfg.clamp_len as f32), cfg.clamp_len as f32)
            } else {
                p
            }
        };
        let encode = |positions: Vec<f32>| -> Result<Tensor> {
            let n = positions.len();
            let mut emb = vec![0f32; n * d];
            for (row, &p) in emb.chunks_mut(d).zip(&positions) {
                for (k, &f) in inv_freq.iter().enumerate() {
                    row[k] = (p * f).sin();
                    row[d / 2 + k] = (p * f).cos();
                }
            }
            Ok(Tensor::from_vec(emb, (1, n, d), device)?)
        };
        let forward: Vec<f32> = ((end + 1)..=(k_len as i64))
            .rev()
            .map(|p| clamp(p as f32))
            .collect();
        if !cfg.bi_data {
            return encode(forward);
        }
        if !b.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "bi_data needs an even batch size, got {b}"
            )));
        }
        let backward: Vec<f32> = ((end + 1)..=(k_len as i64))
            .rev()
            .map(|p| clamp(-(p as f32)))
            .collect();
        let (fwd, bwd) = (encode(forward)?, encode(backward)?);
        Ok(Tensor::cat(
            &[
                fwd.broadcast_as((b / 2, fwd.dim(1)?, d))?,
                bwd.broadcast_as((b / 2, bwd.dim(1)?, d))?,
            ],
            0,
        )?
        .contiguous()?)
    }

    /// `cache_mem`: this segment's input states (the first reuse_len of them) after the old
    /// memory, the last mem_len kept (all when mem_len is 0 or unset), detached.
    fn cache_mem(&self, current: &Tensor, previous: Option<&Tensor>) -> Result<Tensor> {
        let q_len = current.dim(1)?;
        let current = match self.config.reuse_len {
            Some(r) if r > 0 => current.narrow(1, 0, r.min(q_len))?,
            _ => current.clone(),
        };
        let all = match previous {
            Some(p) if p.dim(1)? > 0 => Tensor::cat(&[p, &current], 1)?,
            _ => current,
        };
        let len = all.dim(1)?;
        let keep = match self.config.mem_len {
            Some(m) if m > 0 => m.min(len),
            _ => len,
        };
        Ok(all.narrow(1, len - keep, keep)?.detach())
    }
}

/// `XLNetLMHeadModel`: the states through `lm_loss`, tied to the word embeddings, with a bias.
pub struct XlnetLMHeadModel {
    pub transformer: XlnetModel,
    lm_loss: Linear,
}

pub struct XlnetLMOutput {
    pub loss: Option<Tensor>,
    /// (batch, seq or num_predict, vocab)
    pub logits: Tensor,
    pub mems: Vec<Tensor>,
}

impl XlnetLMHeadModel {
    pub const ARCHITECTURE: &'static str = "XLNetLMHeadModel";

    pub fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        let transformer = XlnetModel::new(cfg, &vb.pp("transformer"))?;
        let bias = vb.get_or_init(cfg.vocab_size, "lm_loss.bias", Init::Zeros)?;
        let weight = if cfg.tie_word_embeddings {
            transformer.word_embedding().weight().clone()
        } else {
            vb.get_or_init(
                (cfg.vocab_size, cfg.d_model),
                "lm_loss.weight",
                Init::normal(cfg.initializer_range),
            )?
        };
        let lm_loss =
            Linear::from_tensors(weight, Some(bias)).in_precision_of(&vb.pp("lm_loss"))?;
        Ok(XlnetLMHeadModel {
            transformer,
            lm_loss,
        })
    }

    /// `labels` (batch, seq or num_predict) i64, -100 where no loss is taken; no shift (each
    /// position, or each target of the mapping, predicts its own token).
    pub fn forward(
        &self,
        input: XlnetInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<XlnetLMOutput> {
        let out = self.transformer.forward(input, mode)?;
        let logits = self.lm_loss.forward(&out.last_hidden_state)?;
        let loss = match labels {
            Some(l) => {
                let (b, s, _) = logits.dims3()?;
                if l.dims() != [b, s] {
                    return Err(Error::invalid(format!(
                        "labels have shape {:?}, expected [{b}, {s}]",
                        l.dims()
                    )));
                }
                Some(cross_entropy_loss(&logits, l)?)
            }
            None => None,
        };
        Ok(XlnetLMOutput {
            loss,
            logits,
            mems: out.mems,
        })
    }
}

/// What XLNet carries between generation steps: each layer's memory, without the last two
/// positions (they are fed again), and the previous token.
#[derive(Clone, Default)]
pub struct XlnetGenerationState {
    /// One (batch, mem, d_model) tensor per layer; empty before the first step.
    mems: Vec<Tensor>,
    /// (batch, 1): the token before the newest.
    previous: Option<Tensor>,
}

impl XlnetGenerationState {
    /// Keeps, in order, the batch rows `rows` (beam search follows its beams this way).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for m in &mut self.mems {
            *m = m.index_select(rows, 0)?;
        }
        if let Some(p) = &mut self.previous {
            *p = p.index_select(rows, 0)?;
        }
        Ok(())
    }
}

/// Tokens fed again at each step, as transformers' `prepare_inputs_for_generation` (its
/// "offset"): the newest token and the one before it.
const GENERATION_OFFSET: usize = 2;

impl XlnetLMHeadModel {
    /// One generation step as transformers runs XLNet: the new tokens (the prompt at first,
    /// then one per row after the previous token) followed by a dummy token that nothing sees
    /// (perm_mask) and that alone is predicted (target_mapping) from the query stream, with
    /// the memory of the earlier steps. -> logits (batch, 1, vocab) of the next token.
    pub fn generation_step(
        &self,
        new_ids: &Tensor,
        state: &mut XlnetGenerationState,
    ) -> Result<Tensor> {
        let (b, n) = new_ids.dims2()?;
        let device = new_ids.device();
        let ids = new_ids.to_dtype(DType::U32)?;
        let fed = match &state.previous {
            Some(prev) => Tensor::cat(&[prev, &ids], 1)?,
            None => ids.clone(),
        };
        let fed = Tensor::cat(&[&fed, &Tensor::zeros((b, 1), DType::U32, device)?], 1)?; // (b, len + 1)
        let len = fed.dim(1)?;
        let last_col: Vec<f32> = (0..len * len)
            .map(|k| (k % len == len - 1) as u8 as f32)
            .collect();
        let perm_mask = Tensor::from_vec(last_col, (1, len, len), device)?
            .broadcast_as((b, len, len))?
            .contiguous()?;
        let one_hot: Vec<f32> = (0..len).map(|k| (k == len - 1) as u8 as f32).collect();
        let target_mapping = Tensor::from_vec(one_hot, (1, 1, len), device)?
            .broadcast_as((b, 1, len))?
            .contiguous()?;
        let out = self.forward(
            XlnetInput {
                input_ids: Some(&fed),
                perm_mask: Some(&perm_mask),
                target_mapping: Some(&target_mapping),
                mems: (!state.mems.is_empty()).then_some(state.mems.as_slice()),
                use_mems: true,
                ..Default::default()
            },
            None,
            Mode::Eval,
        )?;
        state.mems = out
            .mems
            .iter()
            .map(|m| {
                let keep = m.dim(1)?.saturating_sub(GENERATION_OFFSET);
                Ok(m.narrow(1, 0, keep)?.contiguous()?)
            })
            .collect::<Result<Vec<_>>>()?;
        if state
            .mems
            .first()
            .is_some_and(|m| m.dim(1).unwrap_or(0) == 0)
        {
            state.mems.clear();
        }
        state.previous = Some(ids.narrow(1, n - 1, 1)?.contiguous()?);
        Ok(out.logits)
    }
}

/// `XLNetSequenceSummary` (summary_type "last"): the last position's state (XLNet pads on the
/// left, so that is `<cls>`), through dropout, a dense layer and an activation.
struct SequenceSummary {
    summary: Option<Linear>,
    activation: Option<Activation>,
    first_dropout: f64,
    last_dropout: f64,
}

impl SequenceSummary {
    fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        let labels = cfg.common.num_labels();
        let out = if cfg.summary_proj_to_labels && labels > 0 {
            labels
        } else {
            cfg.d_model
        };
        let summary = cfg
            .summary_use_proj
            .then(|| Linear::new_head(&vb.pp("summary"), cfg.d_model, out, cfg.initializer_range))
            .transpose()?;
        Ok(SequenceSummary {
            summary,
            activation: cfg.summary_activation,
            first_dropout: cfg.summary_first_dropout,
            last_dropout: cfg.summary_last_dropout,
        })
    }

    /// (batch, seq, d_model) -> (batch, d_model or labels)
    fn forward(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        let s = hidden.dim(1)?;
        let mut x = dropout(
            &hidden.narrow(1, s - 1, 1)?.squeeze(1)?,
            self.first_dropout,
            mode,
        )?;
        if let Some(dense) = &self.summary {
            x = dense.forward(&x)?;
        }
        if let Some(a) = self.activation {
            x = a.forward(&x)?;
        }
        dropout(&x, self.last_dropout, mode)
    }
}

/// `XLNetForSequenceClassification`.
pub struct XlnetForSequenceClassification {
    pub transformer: XlnetModel,
    sequence_summary: SequenceSummary,
    logits_proj: Linear,
}

impl XlnetForSequenceClassification {
    pub const ARCHITECTURE: &'static str = "XLNetForSequenceClassification";

    pub fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        let out = if cfg.summary_proj_to_labels {
            cfg.common.num_labels()
        } else {
            cfg.d_model
        };
        Ok(XlnetForSequenceClassification {
            transformer: XlnetModel::new(cfg, &vb.pp("transformer"))?,
            sequence_summary: SequenceSummary::new(cfg, &vb.pp("sequence_summary"))?,
            logits_proj: Linear::new_head(
                &vb.pp("logits_proj"),
                out,
                cfg.common.num_labels(),
                cfg.initializer_range,
            )?,
        })
    }

    /// `labels` (batch): i64 class ids, or f32 for regression / multi-label, as transformers
    /// picks the loss.
    pub fn forward(
        &self,
        input: XlnetInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<SequenceClassifierOutput> {
        let h = self.transformer.forward(input, mode)?.last_hidden_state;
        let logits = self
            .logits_proj
            .forward(&self.sequence_summary.forward(&h, mode)?)?; // (b, labels)
        let problem = self.transformer.config().common.problem_type;
        let loss = labels
            .map(|l| sequence_classification_loss(&logits, l, problem))
            .transpose()?;
        Ok(SequenceClassifierOutput { loss, logits })
    }
}

/// `XLNetForTokenClassification`: a label per position (no dropout before the classifier, as
/// in transformers).
pub struct XlnetForTokenClassification {
    pub transformer: XlnetModel,
    head: TokenClassificationHead,
}

impl XlnetForTokenClassification {
    pub const ARCHITECTURE: &'static str = "XLNetForTokenClassification";

    pub fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(XlnetForTokenClassification {
            transformer: XlnetModel::new(cfg, &vb.pp("transformer"))?,
            head: TokenClassificationHead::new(
                vb,
                cfg.d_model,
                cfg.common.num_labels(),
                cfg.initializer_range,
                0.0,
            )?,
        })
    }

    /// `labels` (batch, seq) i64, -100 where no loss is taken.
    pub fn forward(
        &self,
        input: XlnetInput,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<TokenClassifierOutput> {
        let h = self.transformer.forward(input, mode)?.last_hidden_state; // (b, s, d_model)
        self.head.forward(&h, labels, mode)
    }
}

/// `XLNetForQuestionAnsweringSimple`: start and end logits of the answer span.
pub struct XlnetForQuestionAnsweringSimple {
    pub transformer: XlnetModel,
    head: SpanExtractionHead,
}

impl XlnetForQuestionAnsweringSimple {
    pub const ARCHITECTURE: &'static str = "XLNetForQuestionAnsweringSimple";

    pub fn new(cfg: &XlnetConfig, vb: &ParamBuilder) -> Result<Self> {
        Ok(XlnetForQuestionAnsweringSimple {
            transformer: XlnetModel::new(cfg, &vb.pp("transformer"))?,
            head: SpanExtractionHead::new(vb, cfg.d_model, cfg.initializer_range)?,
        })
    }

    /// `positions`: start and end token indices (batch) i64.
    pub fn forward(
        &self,
        input: XlnetInput,
        positions: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<QuestionAnsweringOutput> {
        let h = self.transformer.forward(input, mode)?.last_hidden_state; // (b, s, d_model)
        self.head.forward(&h, positions)
    }
}

// The registry's entry for XLNet and the capabilities its classes have.

fn xlnet_config(config: &ModelConfig) -> Result<&XlnetConfig> {
    match config {
        ModelConfig::Xlnet(c) => Ok(c),
        other => Err(Error::internal(format!(
            "the XLNet family was given a {} config",
            other.model_type()
        ))),
    }
}

/// Text put before an XLNet prompt, as transformers' text-generation pipeline does, so a short
/// prompt has context to attend to; the document ends with XLNet's `<eod>`. (A public-domain
/// paragraph: the opening of Pride and Prejudice.)
pub const XLNET_PADDING_TEXT: &str = "It is a truth universally acknowledged, that a single man in possession of a good \
fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first \
entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is \
considered as the rightful property of some one or other of their daughters. <eod> ";

/// XLNet in the registry ([`crate::models::auto`]).
pub struct XlnetFamily;

impl Family for XlnetFamily {
    fn model_type(&self) -> &'static str {
        "xlnet"
    }

    fn base_model_prefix(&self) -> &'static str {
        "transformer"
    }

    fn classes(&self) -> &'static [Class] {
        &[
            Class {
                architecture: XlnetModel::ARCHITECTURE,
                head: Head::Base,
            },
            Class {
                architecture: XlnetLMHeadModel::ARCHITECTURE,
                head: Head::CausalLm,
            },
            Class {
                architecture: XlnetForSequenceClassification::ARCHITECTURE,
                head: Head::SequenceClassification,
            },
            Class {
                architecture: XlnetForTokenClassification::ARCHITECTURE,
                head: Head::TokenClassification,
            },
            Class {
                architecture: XlnetForQuestionAnsweringSimple::ARCHITECTURE,
                head: Head::QuestionAnswering,
            },
        ]
    }

    /// transformers' `XLNetTokenizer`: padded on the left, since the summary reads the last
    /// position.
    fn tokenizer(&self) -> TokenizerConventions {
        let t = |s: &str| Some(s.to_string());
        TokenizerConventions {
            class: "XLNetTokenizer",
            special: SpecialTokens {
                unk: t("<unk>"),
                sep: t("<sep>"),
                pad: t("<pad>"),
                cls: t("<cls>"),
                mask: t("<mask>"),
                bos: t("<s>"),
                eos: t("</s>"),
            },
            padding_left: true,
            trains: Some(TokenizerKind::Unigram),
        }
    }

    fn pretraining_objectives(&self) -> &'static [PretrainingObjective] {
        &[PretrainingObjective::Plm]
    }

    fn backbone(
        &self,
        config: &ModelConfig,
        vb: &ParamBuilder,
        _add_pooling_layer: bool,
    ) -> Result<Box<dyn Backbone>> {
        Ok(Box::new(XlnetModel::new(xlnet_config(config)?, vb)?))
    }

    fn causal_lm(&self, c: &ModelConfig, vb: &ParamBuilder) -> Option<Result<Box<dyn CausalLm>>> {
        Some(xlnet_config(c).and_then(|c| Ok(Box::new(XlnetLMHeadModel::new(c, vb)?) as _)))
    }

    fn permutation_lm(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn PermutationLm>>> {
        Some(xlnet_config(c).and_then(|c| Ok(Box::new(XlnetLMHeadModel::new(c, vb)?) as _)))
    }

    fn sequence_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SequenceClassifier>>> {
        Some(
            xlnet_config(c)
                .and_then(|c| Ok(Box::new(XlnetForSequenceClassification::new(c, vb)?) as _)),
        )
    }

    fn token_classifier(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn TokenClassifier>>> {
        Some(
            xlnet_config(c)
                .and_then(|c| Ok(Box::new(XlnetForTokenClassification::new(c, vb)?) as _)),
        )
    }

    fn span_extractor(
        &self,
        c: &ModelConfig,
        vb: &ParamBuilder,
    ) -> Option<Result<Box<dyn SpanExtractor>>> {
        Some(
            xlnet_config(c)
                .and_then(|c| Ok(Box::new(XlnetForQuestionAnsweringSimple::new(c, vb)?) as _)),
        )
    }

    fn summarises_last_token(&self) -> bool {
        true
    }
}

pretrained_model!(XlnetModel, XlnetModel::ARCHITECTURE, |m| m
    .word_embedding
    .weight()
    .device());
pretrained_model!(XlnetLMHeadModel, Self::ARCHITECTURE, |m| m
    .transformer
    .word_embedding
    .weight()
    .device());
pretrained_model!(XlnetForSequenceClassification, Self::ARCHITECTURE, |m| m
    .transformer
    .word_embedding
    .weight()
    .device());
pretrained_model!(XlnetForTokenClassification, Self::ARCHITECTURE, |m| m
    .transformer
    .word_embedding
    .weight()
    .device());
pretrained_model!(XlnetForQuestionAnsweringSimple, Self::ARCHITECTURE, |m| m
    .transformer
    .word_embedding
    .weight()
    .device());

/// XLNet reads an encoder input with its padding mask and segment ids.
fn xlnet_input(input: &EncoderInput) -> XlnetInput<'_> {
    XlnetInput {
        input_ids: Some(&input.input_ids),
        attention_mask: input.attention_mask.as_ref(),
        token_type_ids: input.token_type_ids.as_ref(),
        ..Default::default()
    }
}

impl Backbone for XlnetModel {
    fn last_hidden_state(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        Ok(self.forward(xlnet_input(input), mode)?.last_hidden_state)
    }
}

head_capability!(SequenceClassifier for XlnetForSequenceClassification, Option<&Tensor> => SequenceClassifierOutput, xlnet_input);

head_capability!(TokenClassifier for XlnetForTokenClassification, Option<&Tensor> => TokenClassifierOutput, xlnet_input);

head_capability!(SpanExtractor for XlnetForQuestionAnsweringSimple, Option<(&Tensor, &Tensor)> => QuestionAnsweringOutput, xlnet_input);

impl PermutationLm for XlnetLMHeadModel {
    fn permutation_logits(
        &self,
        input_ids: &Tensor,
        perm_mask: &Tensor,
        target_mapping: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let input = XlnetInput {
            input_ids: Some(input_ids),
            perm_mask: Some(perm_mask),
            target_mapping: Some(target_mapping),
            ..Default::default()
        };
        Ok(self.forward(input, None, mode)?.logits)
    }
}

impl DecodingState for XlnetGenerationState {
    fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        XlnetGenerationState::select_rows(self, rows)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// XLNet generates left to right by predicting a dummy token after the text (see
/// [`XlnetLMHeadModel::generation_step`]).
impl CausalLm for XlnetLMHeadModel {
    fn new_state(&self) -> Box<dyn DecodingState> {
        Box::new(XlnetGenerationState::default())
    }

    fn step(&self, input: DecoderInput, state: &mut dyn DecodingState) -> Result<Tensor> {
        let state = state_of::<XlnetGenerationState>(state, Self::ARCHITECTURE)?;
        // transformers drops the attention mask of XLNet's generation inputs, so padding
        // would be attended to: refuse it rather than differ.
        if let Some(m) = input.attention_mask
            && m.to_dtype(DType::F32)?.min_all()?.to_scalar::<f32>()? < 1.0
        {
            return Err(Error::invalid(
                "XLNet generates one prompt per batch (it cannot mask padding): use a batch size of 1",
            ));
        }
        self.generation_step(input.input_ids, state)
    }

    fn causal_lm_loss(&self, _: &Tensor, _: &Tensor, _: Mode) -> Result<Tensor> {
        Err(Error::unsupported(
            "XLNet has no left-to-right loss; perplexity needs a causal LM (gpt2)",
        ))
    }

    fn max_positions(&self) -> usize {
        usize::MAX
    }

    fn masks_padding(&self) -> bool {
        false
    }

    fn prompt_prefix(&self) -> Option<&'static str> {
        Some(XLNET_PADDING_TEXT)
    }
}
