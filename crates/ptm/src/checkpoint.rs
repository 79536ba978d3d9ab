//! Checkpoint files in the Hugging Face layout: find the weights of a model directory
//! (`model.safetensors`, a sharded `model.safetensors.index.json`, `pytorch_model.bin`), read
//! them lazily (safetensors are memory-mapped), and write `model.safetensors` atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

pub const SAFETENSORS: &str = "model.safetensors";
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
pub const PYTORCH_BIN: &str = "pytorch_model.bin";
pub const PYTORCH_BIN_INDEX: &str = "pytorch_model.bin.index.json";

/// The tensors of a checkpoint, read on demand.
pub struct Weights {
    files: Vec<PathBuf>,
    backend: Backend,
    /// tensor name -> index into `files` (and into the backend's readers)
    routing: HashMap<String, usize>,
}

enum Backend {
    Safetensors(Vec<MmapedSafetensors>),
    Pickle(Vec<PthTensors>),
    Memory(HashMap<String, Tensor>),
}

impl Weights {
    /// Finds and opens the weights of a model directory, preferring safetensors as
    /// transformers does.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound {
                spec: dir.display().to_string(),
                message: "not a directory".into(),
            });
        }
        let single = dir.join(SAFETENSORS);
        if single.is_file() {
            return Self::from_safetensors(&[single]);
        }
        let index = dir.join(SAFETENSORS_INDEX);
        if index.is_file() {
            return Self::from_safetensors(&shards(&index)?);
        }
        let bin = dir.join(PYTORCH_BIN);
        if bin.is_file() {
            return Self::from_pytorch(&[bin]);
        }
        let bin_index = dir.join(PYTORCH_BIN_INDEX);
        if bin_index.is_file() {
            return Self::from_pytorch(&shards(&bin_index)?);
        }
        Err(Error::NoWeights {
            dir: dir.to_path_buf(),
            looked_for: vec![
                SAFETENSORS,
                SAFETENSORS_INDEX,
                PYTORCH_BIN,
                PYTORCH_BIN_INDEX,
            ],
        })
    }

    pub fn from_safetensors(files: &[PathBuf]) -> Result<Self> {
        let mut readers = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            // SAFETY: the map is read-only; like every mmap user we assume the file is not
            // truncated under us while the model is loaded.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| bad(path, e))?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            readers.push(st);
        }
        Ok(Weights {
            files: files.to_vec(),
            backend: Backend::Safetensors(readers),
            routing,
        })
    }

    pub fn from_pytorch(files: &[PathBuf]) -> Result<Self> {
        let mut readers = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            crate::pickle_check::check_archive(path)?;
            let pth = crate::pickle_check::without_panics(path, || PthTensors::new(path, None))?
                .map_err(|e| bad(path, e))?;
            for name in pth.tensor_infos().keys() {
                routing.insert(name.clone(), i);
            }
            readers.push(pth);
        }
        Ok(Weights {
            files: files.to_vec(),
            backend: Backend::Pickle(readers),
            routing,
        })
    }

    /// Weights held in memory, e.g. built by a program or a test.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        let routing = tensors.keys().map(|k| (k.clone(), 0)).collect();
        Weights {
            files: Vec::new(),
            backend: Backend::Memory(tensors),
            routing,
        }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routing.keys().map(String::as_str)
    }

    /// The file holding `name`, for error messages.
    pub fn file_of(&self, name: &str) -> PathBuf {
        self.routing
            .get(name)
            .and_then(|i| self.files.get(*i))
            .cloned()
            .unwrap_or_else(|| PathBuf::from("(in memory)"))
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let i = *self.routing.get(name)?;
        match &self.backend {
            Backend::Safetensors(r) => r[i].get(name).ok().map(|v| v.shape().to_vec()),
            Backend::Pickle(r) => r[i]
                .tensor_infos()
                .get(name)
                .map(|t| t.layout.dims().to_vec()),
            Backend::Memory(m) => m.get(name).map(|t| t.dims().to_vec()),
        }
    }

    /// Reads one tensor, converted to `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let i = *self.routing.get(name).ok_or_else(|| Error::MissingWeight {
            name: name.to_string(),
            files: self.files.clone(),
        })?;
        let loaded = match &self.backend {
            Backend::Safetensors(r) => match r[i].get(name) {
                Ok(view) if view.dtype() == safetensors::Dtype::I8 => {
                    return self.dequantize(name, &view, dtype, device);
                }
                Ok(view) if dtype.is_float() && !is_float(view.dtype()) => {
                    return Err(bad(
                        &self.file_of(name),
                        format!(
                            "weight `{name}` is stored as {:?}, an integer type, where a float \
                             weight is expected (integers are never read as float bits)",
                            view.dtype()
                        ),
                    ));
                }
                _ => r[i].load(name, device),
            },
            Backend::Pickle(r) => {
                self.check_pickled_size(i, name, &r[i])?;
                r[i].get(name).and_then(|t| {
                    t.ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} vanished")))?
                        .to_device(device)
                })
            }
            Backend::Memory(m) => m[name].to_device(device),
        };
        let tensor =
            loaded.map_err(|e| bad(&self.file_of(name), format!("weight `{name}`: {e}")))?;
        if dtype.is_float() && !tensor.dtype().is_float() {
            return Err(bad(
                &self.file_of(name),
                format!(
                    "weight `{name}` is stored as {:?}, an integer type, where a float weight is \
                     expected",
                    tensor.dtype()
                ),
            ));
        }
        let tensor = tensor.to_dtype(dtype)?;
        if dtype.is_float() {
            // One NaN or infinity spreads to every output; refused here, with its name, it
            // cannot pass silently as `null`s or plausible-looking int8 numbers.
            if let Some(what) = crate::nn::ops::first_non_finite(&tensor)? {
                return Err(bad(
                    &self.file_of(name),
                    format!("weight `{name}` holds {what}: the checkpoint is damaged"),
                ));
            }
        }
        Ok(tensor)
    }
}

impl Weights {
    /// A pickled tensor must lie inside its storage, and the storage inside the file, before
    /// candle allocates the shape it claims.
    fn check_pickled_size(&self, i: usize, name: &str, pth: &PthTensors) -> Result<()> {
        let Some(info) = pth.tensor_infos().get(name) else {
            return Ok(());
        };
        let path = &self.files[i];
        let file_len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let elems = info.layout.shape().elem_count() as u128;
        let storage_bytes = info.storage_size as u128 * info.dtype.size_in_bytes() as u128;
        if elems + info.layout.start_offset() as u128 > info.storage_size as u128
            || storage_bytes > file_len as u128
        {
            return Err(bad(
                path,
                format!(
                    "weight `{name}`: shape {:?} (offset {}) does not fit its storage of {} \
                     elements in a file of {file_len} bytes",
                    info.layout.dims(),
                    info.layout.start_offset(),
                    info.storage_size
                ),
            ));
        }
        Ok(())
    }

    /// An int8 weight times its `_scale` tensor (values × scale broadcast), as f32.
    fn dequantize(
        &self,
        name: &str,
        view: &safetensors::tensor::TensorView<'_>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let scale_name = format!("{name}{INT8_SCALE_SUFFIX}");
        if !self.contains(&scale_name) {
            return Err(bad(
                &self.file_of(name),
                format!("int8 weight `{name}` has no `{scale_name}`"),
            ));
        }
        let values: Vec<f32> = view.data().iter().map(|&b| b as i8 as f32).collect();
        let values = Tensor::from_vec(values, view.shape(), device)?;
        let scale = self.load(&scale_name, DType::F32, device)?;
        let weight = values.broadcast_mul(&scale).map_err(|e| {
            bad(
                &self.file_of(name),
                format!(
                    "int8 weight `{name}` {:?} and `{scale_name}` {:?}: {e}",
                    view.shape(),
                    scale.dims()
                ),
            )
        })?;
        Ok(weight.to_dtype(dtype)?)
    }
}

fn is_float(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype::*;
    matches!(dtype, F16 | BF16 | F32 | F64)
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadWeights {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The shard files named by a `*.index.json`, each checked to exist.
fn shards(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = crate::io::read_json(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = parsed.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::config(index, "weight_map", "lists no shard files"));
    }
    files
        .into_iter()
        .map(|f| {
            let refuse = |why: &str| {
                Err(Error::config(
                    index,
                    "weight_map",
                    format!("shard {f:?} {why}"),
                ))
            };
            // A plain name inside the model directory: no absolute path, no `..`, and (after
            // symbolic links are followed) still inside it.
            let plain = Path::new(&f)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                return refuse("is not a file name inside the model directory");
            }
            let p = dir.join(&f);
            if !p.is_file() {
                return refuse("is missing");
            }
            let inside = match (std::fs::canonicalize(&p), std::fs::canonicalize(dir)) {
                (Ok(file), Ok(dir)) => file.starts_with(dir),
                _ => false,
            };
            if !inside {
                return refuse("leads outside the model directory");
            }
            Ok(p)
        })
        .collect()
}

/// Writes named tensors as `path` (safetensors with HF's `{"format": "pt"}` metadata, which
/// transformers requires), atomically.
pub fn save_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    save_safetensors_entries(
        tensors
            .iter()
            .map(|(n, t)| (n.clone(), SavedTensor::Float(t.clone())))
            .collect(),
        path,
    )
}

/// Names the per-output-feature scales of an int8 weight: `X.weight` has `X.weight_scale`.
pub const INT8_SCALE_SUFFIX: &str = "_scale";

/// A tensor as written to a checkpoint.
pub enum SavedTensor {
    Float(Tensor),
    /// Symmetric int8 values; their scale is a separate f32 tensor.
    Int8 {
        values: Vec<i8>,
        shape: Vec<usize>,
    },
}

impl SavedTensor {
    /// A linear layer's weight as int8 values and f32 scales, one per output feature: a
    /// (out, in) weight has scales (out, 1); a `transposed` (in, out) one (GPT-2's Conv1D)
    /// has (1, out), so that values × scale broadcasts back in either layout.
    pub fn int8(weight: &Tensor, transposed: bool) -> Result<(SavedTensor, SavedTensor)> {
        let rows = if transposed {
            weight.t()?
        } else {
            weight.clone()
        }; // (out, in)
        let (out, inp) = rows.dims2()?;
        let data: Vec<f32> = rows.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let (q, scale) = crate::nn::quantize_int8_rows(&data, inp);
        let (values, scale_shape) = if transposed {
            (
                (0..inp * out)
                    .map(|i| q[(i % out) * inp + i / out])
                    .collect(),
                (1, out),
            )
        } else {
            (q, (out, 1))
        };
        let scale = Tensor::from_vec(scale, scale_shape, &Device::Cpu)?;
        Ok((
            SavedTensor::Int8 {
                values,
                shape: weight.dims().to_vec(),
            },
            SavedTensor::Float(scale),
        ))
    }
}

/// A safetensors entry over either kind of tensor.
enum Entry {
    Float(Tensor),
    Int8(Vec<u8>, Vec<usize>),
}

impl safetensors::View for &Entry {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            Entry::Float(t) => safetensors::View::dtype(t),
            Entry::Int8(..) => safetensors::Dtype::I8,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Entry::Float(t) => t.dims(),
            Entry::Int8(_, s) => s,
        }
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Entry::Float(t) => safetensors::View::data(t),
            Entry::Int8(b, _) => std::borrow::Cow::Borrowed(b),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Entry::Float(t) => safetensors::View::data_len(t),
            Entry::Int8(b, _) => b.len(),
        }
    }
}

/// Writes named tensors, float and int8, as `path`, atomically.
pub fn save_safetensors_entries(tensors: Vec<(String, SavedTensor)>, path: &Path) -> Result<()> {
    let entries: Vec<(String, Entry)> = tensors
        .into_iter()
        .map(|(n, t)| {
            Ok((
                n,
                match t {
                    SavedTensor::Float(t) => Entry::Float(t.to_device(&Device::Cpu)?.contiguous()?),
                    SavedTensor::Int8 { values, shape } => {
                        Entry::Int8(values.into_iter().map(|v| v as u8).collect(), shape)
                    }
                },
            ))
        })
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(entries.iter().map(|(n, e)| (n.as_str(), e)), Some(metadata))
            .map_err(|e| bad(path, e))?;
    crate::io::write_atomic(path, &bytes)
}
