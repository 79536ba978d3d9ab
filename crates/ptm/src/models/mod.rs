//! Model families (one file each, named after transformers' modules) and what loading and
//! saving a model directory needs around them.

/// `PreTrainedModel` for a class: its transformers name and where its parameters live.
macro_rules! pretrained_model {
    ($ty:ty, $arch:expr, |$m:ident| $device:expr) => {
        impl $crate::models::traits::PreTrainedModel for $ty {
            fn architecture(&self) -> &'static str {
                $arch
            }
            fn device(&self) -> candle_core::Device {
                let $m = self;
                $device.clone()
            }
        }
    };
}

/// A head capability whose `forward(input, targets, mode)` is the class's own, reading the
/// encoder input through `$read` (the family's view of it: `std::convert::identity` when the
/// class takes an `EncoderInput`).
macro_rules! head_capability {
    ($trait:ident for $ty:ty, $targets:ty => $out:ty, $read:expr) => {
        impl $crate::models::traits::$trait for $ty {
            fn forward(
                &self,
                input: &$crate::models::EncoderInput,
                targets: $targets,
                mode: $crate::nn::Mode,
            ) -> $crate::Result<$out> {
                <$ty>::forward(self, $read(input), targets, mode)
            }
        }
    };
}

pub mod auto;
pub mod bert;
pub mod gpt2;
pub mod roberta;
pub mod traits;
pub mod xlnet;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use tokenizers::Encoding;
pub use traits::PreTrainedModel;

use crate::checkpoint::{
    INT8_SCALE_SUFFIX, SAFETENSORS, SavedTensor, Weights, save_safetensors_entries,
};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::{ParamStore, Precision, StoreOptions};
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

/// The inputs of a decoder step: (batch, seq) u32 ids; the mask covers cached and new
/// positions (batch, past + seq); position ids (batch, seq) default to past..past + seq.
#[derive(Clone, Copy)]
pub struct DecoderInput<'a> {
    pub input_ids: &'a Tensor,
    pub attention_mask: Option<&'a Tensor>,
    pub position_ids: Option<&'a Tensor>,
}

impl<'a> DecoderInput<'a> {
    pub fn new(input_ids: &'a Tensor) -> Self {
        DecoderInput {
            input_ids,
            attention_mask: None,
            position_ids: None,
        }
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
            &[auto::family(&self.config)?.base_model_prefix()],
            &opts,
        ))
    }

    /// Builds a capability over this directory's weights, as transformers'
    /// `AutoModelFor….from_pretrained`: `p.load(auto::sequence_classifier, &opts)`. Weights the
    /// checkpoint lacks (a new head) are initialised and logged; the store holds them for
    /// training and saving.
    pub fn load<M: ?Sized>(
        &self,
        build: fn(&ModelConfig, &crate::nn::ParamBuilder) -> Result<Box<M>>,
        opts: &StoreOptions,
    ) -> Result<(Box<M>, ParamStore)> {
        let store = self.store(opts)?;
        let model = build(&self.config, &store.root())?;
        report_load(&store, &self.dir.display().to_string());
        Ok((model, store))
    }

    /// The tokenizer, with the family's conventions where its files leave something unsaid.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_dir_with(&self.dir, Some(&auto::family(&self.config)?.tokenizer()))
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

/// Loads the bare model (no pooler, no head) of a model directory, for embeddings.
pub fn load_backbone(
    pretrained: &Pretrained,
    opts: &StoreOptions,
) -> Result<(Box<dyn traits::Backbone>, ParamStore)> {
    let store = pretrained.store(opts)?;
    let model = auto::backbone(&pretrained.config, &store.root(), false)?;
    report_load(&store, model.architecture());
    Ok((model, store))
}

/// Builds the class the config's `architectures` names (the bare model when none), loading and
/// checking every weight it needs. Returns the class name and the filled parameter store.
pub fn load_architecture(
    pretrained: &Pretrained,
    opts: &StoreOptions,
) -> Result<(String, ParamStore)> {
    let store = pretrained.store(opts)?;
    let (arch, _) = auto::build_named_class(
        &pretrained.config,
        &store.root(),
        &pretrained.dir.join("config.json"),
    )?;
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
