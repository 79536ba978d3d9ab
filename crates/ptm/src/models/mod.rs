//! Model families (one file each, named after transformers' modules) and what loading and
//! saving a model directory needs around them.

pub mod bert;
pub mod gpt2;
pub mod xlnet;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::Encoding;

use crate::checkpoint::{
    INT8_SCALE_SUFFIX, SAFETENSORS, SavedTensor, Weights, save_safetensors_entries,
};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::{Mode, ParamStore, Precision, StoreOptions};
use crate::tokenizer::{PadSpec, Tokenizer};

/// The inputs of an encoder: (batch, seq) u32 tensors.
#[derive(Clone)]
pub struct EncoderInput {
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding; all ones when absent.
    pub attention_mask: Option<Tensor>,
    /// Segment ids (0 for sentence A, 1 for B); all zeros when absent.
    pub token_type_ids: Option<Tensor>,
}

impl EncoderInput {
    /// Pads token encodings to the longest as `pad` says (mask 0 on padding).
    pub fn from_encodings(encodings: &[&Encoding], pad: PadSpec, device: &Device) -> Result<Self> {
        let b = encodings.len();
        let seq = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let padded = |f: fn(&Encoding) -> &[u32], fill: u32| -> Result<Tensor> {
            let mut flat = Vec::with_capacity(b * seq);
            for e in encodings {
                let v = f(e);
                let fills = std::iter::repeat_n(fill, seq - v.len());
                if pad.left {
                    flat.extend(fills);
                    flat.extend_from_slice(v);
                } else {
                    flat.extend_from_slice(v);
                    flat.extend(fills);
                }
            }
            Ok(Tensor::from_vec(flat, (b, seq), device)?)
        };
        Ok(EncoderInput {
            input_ids: padded(Encoding::get_ids, pad.id)?,
            attention_mask: Some(padded(Encoding::get_attention_mask, 0)?),
            token_type_ids: Some(padded(Encoding::get_type_ids, 0)?),
        })
    }
}

/// A model directory opened for loading: where it is and its config.
pub struct Pretrained {
    pub dir: PathBuf,
    pub config: ModelConfig,
}

impl Pretrained {
    /// Opens a local directory or a Hugging Face cache entry (`org/name`).
    pub fn open(spec: &str) -> Result<Self> {
        Self::from_dir(&crate::hub::resolve_model_dir(spec)?)
    }

    /// Reads `dir/config.json`, refusing a model whose weights could not fit in memory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        crate::limits::check_model(&config)?;
        Ok(Pretrained {
            dir: dir.to_path_buf(),
            config,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.config.dims().vocab_size
    }

    pub fn max_positions(&self) -> usize {
        self.config.dims().max_positions
    }

    /// The tokenizer, checked to fit the model's embeddings.
    pub fn checked_tokenizer(&self) -> Result<Tokenizer> {
        let tok = self.tokenizer()?;
        tok.check_fits(self.vocab_size())?;
        Ok(tok)
    }

    /// The parameter store backed by this directory's weights. A checkpoint with int8 linear
    /// weights runs them in int8 for inference unless bf16 is asked for.
    pub fn store(&self, opts: &StoreOptions) -> Result<ParamStore> {
        let weights = Weights::from_dir(&self.dir)?;
        let mut opts = opts.clone();
        if self.config.common().int8_weights && !opts.trainable && opts.precision == Precision::F32
        {
            opts.precision = Precision::Int8;
        }
        Ok(ParamStore::new(
            Some(weights),
            &[base_prefix(&self.config)],
            &opts,
        ))
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_dir(&self.dir)
    }
}

/// The name under which a family's heads hold the base model (`base_model_prefix`).
pub fn base_prefix(config: &ModelConfig) -> &'static str {
    match config {
        ModelConfig::Bert(_) => "bert",
        ModelConfig::Gpt2(_) | ModelConfig::Xlnet(_) => "transformer",
    }
}

/// Logs what a load initialised or left unused, as transformers warns.
pub fn report_load(store: &ParamStore, architecture: &str) {
    let new = store.newly_initialized();
    if !new.is_empty() {
        tracing::warn!(
            "{architecture}: {} weights were not in the checkpoint and are newly initialised \
             (train before use): {}",
            new.len(),
            new.join(", ")
        );
    }
    let unused = store.unused_weights();
    if !unused.is_empty() {
        tracing::info!(
            "{architecture}: checkpoint weights not used: {}",
            unused.join(", ")
        );
    }
}

/// Fails when a load had to initialise weights that a pipeline needs trained (a task head),
/// naming them and saying which head `what` needs.
pub fn require_trained(store: &ParamStore, dir: &Path, what: &str) -> Result<()> {
    let missing = store.newly_initialized();
    if missing.is_empty() {
        return Ok(());
    }
    Err(crate::Error::invalid(format!(
        "{}: the checkpoint has no {what} ({} missing); it needs a model trained with one",
        dir.display(),
        missing.join(", ")
    )))
}

/// The bare network of any supported family: token states for embeddings and pipelines.
#[allow(clippy::large_enum_variant)] // one per process; boxing would buy nothing
pub enum EncoderModel {
    Bert(bert::BertModel),
    Gpt2(gpt2::Gpt2Model),
    Xlnet(xlnet::XlnetModel),
}

impl EncoderModel {
    /// Loads the bare encoder (no pooler, no head) of a model directory.
    pub fn load(pretrained: &Pretrained, opts: &StoreOptions) -> Result<(Self, ParamStore)> {
        let store = pretrained.store(opts)?;
        let model = match &pretrained.config {
            ModelConfig::Bert(cfg) => {
                EncoderModel::Bert(bert::BertModel::new(cfg, &store.root(), false)?)
            }
            ModelConfig::Gpt2(cfg) => EncoderModel::Gpt2(gpt2::Gpt2Model::new(cfg, &store.root())?),
            ModelConfig::Xlnet(cfg) => {
                EncoderModel::Xlnet(xlnet::XlnetModel::new(cfg, &store.root())?)
            }
        };
        report_load(&store, "encoder");
        Ok((model, store))
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        match self {
            EncoderModel::Bert(m) => m.embeddings().word_embeddings().weight().device().clone(),
            EncoderModel::Gpt2(m) => m.wte().weight().device().clone(),
            EncoderModel::Xlnet(m) => m.word_embedding().weight().device().clone(),
        }
    }

    /// (batch, seq, hidden)
    pub fn forward(&self, input: &EncoderInput, mode: Mode) -> Result<Tensor> {
        match self {
            EncoderModel::Bert(m) => Ok(m.forward(input, mode)?.last_hidden_state),
            EncoderModel::Gpt2(m) => {
                let input = gpt2::DecoderInput {
                    input_ids: &input.input_ids,
                    attention_mask: input.attention_mask.as_ref(),
                    position_ids: None,
                };
                m.forward(input, None, mode)
            }
            EncoderModel::Xlnet(m) => {
                let input = xlnet::XlnetInput {
                    input_ids: Some(&input.input_ids),
                    attention_mask: input.attention_mask.as_ref(),
                    token_type_ids: input.token_type_ids.as_ref(),
                    ..Default::default()
                };
                Ok(m.forward(input, mode)?.last_hidden_state)
            }
        }
    }
}

/// The model classes ptm can build, by family, with transformers' class names.
pub const BERT_ARCHITECTURES: &[&str] = &[
    "BertModel",
    bert::BertForMaskedLM::ARCHITECTURE,
    bert::BertForNextSentencePrediction::ARCHITECTURE,
    bert::BertForPreTraining::ARCHITECTURE,
    bert::BertForSequenceClassification::ARCHITECTURE,
    bert::BertForTokenClassification::ARCHITECTURE,
    bert::BertForQuestionAnswering::ARCHITECTURE,
];
pub const GPT2_ARCHITECTURES: &[&str] = &[
    "GPT2Model",
    gpt2::Gpt2LMHeadModel::ARCHITECTURE,
    gpt2::Gpt2ForSequenceClassification::ARCHITECTURE,
];
pub const XLNET_ARCHITECTURES: &[&str] = &[
    "XLNetModel",
    xlnet::XlnetLMHeadModel::ARCHITECTURE,
    xlnet::XlnetForSequenceClassification::ARCHITECTURE,
    xlnet::XlnetForTokenClassification::ARCHITECTURE,
    xlnet::XlnetForQuestionAnsweringSimple::ARCHITECTURE,
];

/// Builds the class the config's `architectures` names (the bare model when none), loading and
/// checking every weight it needs. Returns the class name and the filled parameter store.
pub fn load_architecture(
    pretrained: &Pretrained,
    opts: &StoreOptions,
) -> Result<(String, ParamStore)> {
    let store = pretrained.store(opts)?;
    let root = store.root();
    let named = pretrained.config.common().architectures.first().cloned();
    let unsupported = |arch: &str, supported: &[&str]| {
        crate::Error::config(
            pretrained.dir.join("config.json"),
            "architectures",
            format!(
                "{arch} is not supported; supported: {}",
                supported.join(", ")
            ),
        )
    };
    let arch = match &pretrained.config {
        ModelConfig::Bert(cfg) => {
            let arch = named.unwrap_or_else(|| "BertModel".into());
            match arch.as_str() {
                "BertModel" => drop(bert::BertModel::new(cfg, &root, true)?),
                "BertForMaskedLM" => drop(bert::BertForMaskedLM::new(cfg, &root)?),
                "BertForNextSentencePrediction" => {
                    drop(bert::BertForNextSentencePrediction::new(cfg, &root)?)
                }
                "BertForPreTraining" => drop(bert::BertForPreTraining::new(cfg, &root)?),
                "BertForSequenceClassification" => {
                    drop(bert::BertForSequenceClassification::new(cfg, &root)?)
                }
                "BertForTokenClassification" => {
                    drop(bert::BertForTokenClassification::new(cfg, &root)?)
                }
                "BertForQuestionAnswering" => {
                    drop(bert::BertForQuestionAnswering::new(cfg, &root)?)
                }
                other => return Err(unsupported(other, BERT_ARCHITECTURES)),
            }
            arch
        }
        ModelConfig::Gpt2(cfg) => {
            let arch = named.unwrap_or_else(|| "GPT2Model".into());
            match arch.as_str() {
                "GPT2Model" => drop(gpt2::Gpt2Model::new(cfg, &root)?),
                "GPT2LMHeadModel" => drop(gpt2::Gpt2LMHeadModel::new(cfg, &root)?),
                "GPT2ForSequenceClassification" => {
                    drop(gpt2::Gpt2ForSequenceClassification::new(cfg, &root)?)
                }
                other => return Err(unsupported(other, GPT2_ARCHITECTURES)),
            }
            arch
        }
        ModelConfig::Xlnet(cfg) => {
            let arch = named.unwrap_or_else(|| "XLNetModel".into());
            match arch.as_str() {
                "XLNetModel" => drop(xlnet::XlnetModel::new(cfg, &root)?),
                "XLNetLMHeadModel" => drop(xlnet::XlnetLMHeadModel::new(cfg, &root)?),
                "XLNetForSequenceClassification" => {
                    drop(xlnet::XlnetForSequenceClassification::new(cfg, &root)?)
                }
                "XLNetForTokenClassification" => {
                    drop(xlnet::XlnetForTokenClassification::new(cfg, &root)?)
                }
                "XLNetForQuestionAnsweringSimple" => {
                    drop(xlnet::XlnetForQuestionAnsweringSimple::new(cfg, &root)?)
                }
                other => return Err(unsupported(other, XLNET_ARCHITECTURES)),
            }
            arch
        }
    };
    report_load(&store, &arch);
    Ok((arch, store))
}

/// Writes a model directory that transformers loads: config.json (with `architectures`),
/// model.safetensors and, when given, the tokenizer files. Each file is written atomically.
pub fn save_pretrained(
    dir: &Path,
    config: &ModelConfig,
    architecture: &str,
    store: &ParamStore,
    tokenizer: Option<&Tokenizer>,
) -> Result<()> {
    crate::io::create_dir_all(dir)?;
    let mut config = config.clone();
    config.common_mut().architectures = vec![architecture.to_string()];
    let int8 = store.int8_linear_weights();
    config.common_mut().int8_weights = !int8.is_empty();
    let mut tensors = Vec::new();
    for (name, t) in store.named_tensors() {
        match int8.iter().find(|(n, _)| *n == name) {
            Some(&(_, transposed)) => {
                let (values, scale) = SavedTensor::int8(&t, transposed)?;
                tensors.push((format!("{name}{INT8_SCALE_SUFFIX}"), scale));
                tensors.push((name, values));
            }
            None => tensors.push((name, SavedTensor::Float(t))),
        }
    }
    save_safetensors_entries(tensors, &dir.join(SAFETENSORS))?;
    if let Some(t) = tokenizer {
        t.save(dir)?;
    }
    // config.json last: a directory with a config is a complete model.
    config.save(dir)
}
