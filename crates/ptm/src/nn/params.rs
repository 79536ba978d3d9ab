//! Parameters: where a model's weights come from and where they are kept.
//!
//! ptm has its own builder rather than candle-nn's `VarBuilder` because loading HF checkpoints
//! needs things it lacks: names tried with and without the family prefix (`bert.`) and the
//! legacy `gamma`/`beta` LayerNorm names, errors that name the weight and both shapes, head
//! weights that may be freshly initialised (and are reported) while base weights must exist,
//! HF's initialisation drawn from a seed per weight name, and one registry of every parameter
//! (as `Var`s when training) that the optimizer and `save_pretrained` read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::Precision;
use crate::checkpoint::Weights;
use crate::error::{Error, Result};

/// How a weight is initialised when it does not come from a checkpoint (HF's `_init_weights`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal(0, std); `zero_row` (an embedding's padding index) is set to zero.
    Normal {
        std: f64,
        zero_row: Option<usize>,
    },
    Zeros,
    Ones,
}

impl Init {
    pub fn normal(std: f64) -> Self {
        Init::Normal {
            std,
            zero_row: None,
        }
    }
}

/// One parameter, named as in Hugging Face checkpoints.
#[derive(Clone)]
pub struct Param {
    pub name: String,
    /// Set when the store is trainable: the optimizer updates this variable in place.
    pub var: Option<Var>,
    pub tensor: Tensor,
}

struct Inner {
    source: Option<Weights>,
    /// Family prefixes tried when a name is missing (`bert` lets `bert.x` match `x` and back).
    prefixes: Vec<String>,
    params: Vec<Param>,
    index: HashMap<String, usize>,
    initialized: Vec<String>,
    used: HashSet<String>,
    seed: u64,
    trainable: bool,
    precision: Precision,
    /// Parameters run as int8 linear weights: (name, stored transposed).
    int8: Vec<(String, bool)>,
    dtype: DType,
    device: Device,
}

/// The registry of a model's parameters; cheap to clone (shared).
#[derive(Clone)]
pub struct ParamStore(Arc<Mutex<Inner>>);

/// Options for building a model's parameters.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub dtype: DType,
    pub device: Device,
    /// Keep parameters as `Var`s so that a backward pass reaches them.
    pub trainable: bool,
    /// Seed of the initialisation of weights that are not loaded.
    pub seed: u64,
    /// Number format of linear-layer weights (see [`Precision`]).
    pub precision: Precision,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            trainable: false,
            seed: 42,
            precision: Precision::F32,
        }
    }
}

impl ParamStore {
    /// A store whose weights come from `source` (a checkpoint) or, with `None`, are all
    /// initialised from the seed.
    pub fn new(source: Option<Weights>, prefixes: &[&str], opts: &StoreOptions) -> Self {
        ParamStore(Arc::new(Mutex::new(Inner {
            source,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            params: Vec::new(),
            index: HashMap::new(),
            initialized: Vec::new(),
            used: HashSet::new(),
            seed: opts.seed,
            trainable: opts.trainable,
            precision: opts.precision,
            int8: Vec::new(),
            dtype: opts.dtype,
            device: opts.device.clone(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the registry half-updated in a way that
        // matters to readers, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The builder at the root of the name tree.
    pub fn root(&self) -> ParamBuilder {
        ParamBuilder {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    /// Every parameter in creation order.
    pub fn params(&self) -> Vec<Param> {
        self.lock().params.clone()
    }

    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.lock()
            .params
            .iter()
            .map(|p| (p.name.clone(), p.tensor.clone()))
            .collect()
    }

    pub fn num_parameters(&self) -> usize {
        self.lock()
            .params
            .iter()
            .map(|p| p.tensor.elem_count())
            .sum()
    }

    /// Names that were initialised because the checkpoint lacked them.
    pub fn newly_initialized(&self) -> Vec<String> {
        self.lock().initialized.clone()
    }

    /// Checkpoint tensors no parameter used (a head the model does not have, buffers).
    pub fn unused_weights(&self) -> Vec<String> {
        let inner = self.lock();
        let Some(source) = &inner.source else {
            return Vec::new();
        };
        let mut unused: Vec<String> = source
            .names()
            .filter(|n| !inner.used.contains(*n) && !is_used_scale(&inner.used, n))
            .map(str::to_string)
            .collect();
        unused.sort();
        unused
    }

    pub fn dtype(&self) -> DType {
        self.lock().dtype
    }

    pub fn precision(&self) -> Precision {
        self.lock().precision
    }

    pub fn trainable(&self) -> bool {
        self.lock().trainable
    }

    /// The parameters that run as int8 linear weights, with whether each is stored (in, out).
    pub fn int8_linear_weights(&self) -> Vec<(String, bool)> {
        self.lock().int8.clone()
    }

    /// Notes that parameter `name` (if it is one: tied heads are not) runs in int8.
    pub(crate) fn record_int8(&self, name: &str, transposed: bool) {
        let mut inner = self.lock();
        if inner.index.contains_key(name) && !inner.int8.iter().any(|(n, _)| n == name) {
            inner.int8.push((name.to_string(), transposed));
        }
    }

    pub fn device(&self) -> Device {
        self.lock().device.clone()
    }
}

/// A position in the parameter name tree (`vb.pp("encoder").pp("layer.0")`).
#[derive(Clone)]
pub struct ParamBuilder {
    store: ParamStore,
    prefix: String,
}

impl ParamBuilder {
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        ParamBuilder {
            store: self.store.clone(),
            prefix,
        }
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn device(&self) -> Device {
        self.store.device()
    }

    pub fn dtype(&self) -> DType {
        self.store.dtype()
    }

    pub(crate) fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A weight that must be in the checkpoint when there is one (base model weights).
    pub fn get(&self, shape: impl Into<Shape>, name: &str, init: Init) -> Result<Tensor> {
        self.fetch(shape.into(), name, init, false)
    }

    /// A weight that is initialised when the checkpoint lacks it (a new task head), which is
    /// recorded in [`ParamStore::newly_initialized`].
    pub fn get_or_init(&self, shape: impl Into<Shape>, name: &str, init: Init) -> Result<Tensor> {
        self.fetch(shape.into(), name, init, true)
    }

    fn fetch(&self, shape: Shape, name: &str, init: Init, may_init: bool) -> Result<Tensor> {
        let full = self.full_name(name);
        let mut guard = self.store.lock();
        let inner: &mut Inner = &mut guard;
        if let Some(&i) = inner.index.get(&full) {
            let t = inner.params[i].tensor.clone();
            return check_shape(&full, "(this model)".into(), shape.dims(), t.dims()).map(|_| t);
        }
        let tensor = match &inner.source {
            Some(src) => match resolve(src, &inner.prefixes, &full) {
                Some(src_name) => {
                    let found_shape = src.shape(&src_name).unwrap_or_default();
                    check_shape(&full, src.file_of(&src_name), shape.dims(), &found_shape)?;
                    let t = src.load(&src_name, inner.dtype, &inner.device)?;
                    inner.used.insert(src_name);
                    t
                }
                None if !may_init => {
                    return Err(Error::MissingWeight {
                        name: full,
                        files: src.files().to_vec(),
                    });
                }
                None => {
                    inner.initialized.push(full.clone());
                    init_tensor(&shape, init, inner.seed, &full, inner.dtype, &inner.device)?
                }
            },
            None => init_tensor(&shape, init, inner.seed, &full, inner.dtype, &inner.device)?,
        };
        let (tensor, var) = if inner.trainable {
            let var = Var::from_tensor(&tensor)?;
            (var.as_tensor().clone(), Some(var))
        } else {
            (tensor, None)
        };
        inner.index.insert(full.clone(), inner.params.len());
        inner.params.push(Param {
            name: full,
            var,
            tensor: tensor.clone(),
        });
        Ok(tensor)
    }
}

/// An int8 weight's scale, read with the weight.
fn is_used_scale(used: &HashSet<String>, name: &str) -> bool {
    name.strip_suffix(crate::checkpoint::INT8_SCALE_SUFFIX)
        .is_some_and(|w| used.contains(w))
}

fn check_shape(
    name: &str,
    file: std::path::PathBuf,
    expected: &[usize],
    found: &[usize],
) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            name: name.to_string(),
            file,
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
    }
}

/// The checkpoint name that holds `name`: itself, with or without a family prefix, or with the
/// LayerNorm `gamma`/`beta` names of TF-era checkpoints.
fn resolve(src: &Weights, prefixes: &[String], name: &str) -> Option<String> {
    let mut candidates = vec![name.to_string()];
    for p in prefixes {
        let dotted = format!("{p}.");
        match name.strip_prefix(&dotted) {
            Some(bare) => candidates.push(bare.to_string()),
            None => candidates.push(format!("{dotted}{name}")),
        }
    }
    let legacy: Vec<String> = candidates
        .iter()
        .filter_map(|c| {
            c.strip_suffix("LayerNorm.weight")
                .map(|s| format!("{s}LayerNorm.gamma"))
                .or_else(|| {
                    c.strip_suffix("LayerNorm.bias")
                        .map(|s| format!("{s}LayerNorm.beta"))
                })
        })
        .collect();
    candidates.extend(legacy);
    candidates.into_iter().find(|c| src.contains(c))
}

/// A stable 64-bit hash (FNV-1a), so a weight's initial values depend only on seed and name.
fn name_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn init_tensor(
    shape: &Shape,
    init: Init,
    seed: u64,
    name: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = match init {
        Init::Zeros => Tensor::zeros(shape, dtype, device)?,
        Init::Ones => Tensor::ones(shape, dtype, device)?,
        Init::Normal { std, zero_row } => {
            let mut rng = ChaCha8Rng::seed_from_u64(name_seed(seed, name));
            let normal = Normal::new(0.0f32, std as f32)
                .map_err(|e| Error::internal(format!("init of {name}: {e}")))?;
            let mut values: Vec<f32> = (0..shape.elem_count())
                .map(|_| normal.sample(&mut rng))
                .collect();
            if let (Some(row), [_, cols]) = (zero_row, shape.dims())
                && let Some(r) = values.get_mut(row * cols..(row + 1) * cols)
            {
                r.fill(0.0);
            }
            Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?
        }
    };
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(tensors: &[(&str, &[usize])]) -> Weights {
        Weights::from_tensors(
            tensors
                .iter()
                .map(|(n, s)| {
                    (
                        n.to_string(),
                        Tensor::ones(*s, DType::F32, &Device::Cpu).unwrap(),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn prefixed_and_bare_names_resolve_both_ways() {
        let bare = ParamStore::new(
            Some(memory(&[("a.weight", &[2])])),
            &["bert"],
            &Default::default(),
        );
        assert!(
            bare.root()
                .pp("bert.a")
                .get(2, "weight", Init::Zeros)
                .is_ok()
        );
        let prefixed = ParamStore::new(
            Some(memory(&[("bert.a.weight", &[2])])),
            &["bert"],
            &Default::default(),
        );
        assert!(
            prefixed
                .root()
                .pp("a")
                .get(2, "weight", Init::Zeros)
                .is_ok()
        );
        assert!(prefixed.unused_weights().is_empty());
    }

    #[test]
    fn legacy_gamma_beta_names_load() {
        let s = ParamStore::new(
            Some(memory(&[
                ("x.LayerNorm.gamma", &[3]),
                ("x.LayerNorm.beta", &[3]),
            ])),
            &[],
            &Default::default(),
        );
        let ln = s.root().pp("x.LayerNorm");
        assert!(ln.get(3, "weight", Init::Zeros).is_ok() && ln.get(3, "bias", Init::Zeros).is_ok());
    }

    #[test]
    fn shape_mismatch_names_weight_and_both_shapes() {
        let s = ParamStore::new(Some(memory(&[("w", &[4, 3])])), &[], &Default::default());
        let err = s
            .root()
            .get((3, 4), "w", Init::Zeros)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`w`") && err.contains("[3, 4]") && err.contains("[4, 3]"),
            "{err}"
        );
    }

    #[test]
    fn missing_base_weight_is_an_error_but_a_head_is_initialised() {
        let s = ParamStore::new(Some(memory(&[("w", &[2])])), &[], &Default::default());
        let err = s.root().get(2, "v", Init::Zeros).unwrap_err().to_string();
        assert!(err.contains("`v`") && err.contains("missing"), "{err}");
        s.root()
            .get_or_init((2, 2), "head.weight", Init::normal(0.02))
            .unwrap();
        assert_eq!(s.newly_initialized(), vec!["head.weight".to_string()]);
        assert_eq!(s.unused_weights(), vec!["w".to_string()]);
    }

    #[test]
    fn init_is_seeded_per_name_and_zeroes_the_padding_row() {
        let opts = StoreOptions {
            seed: 7,
            ..Default::default()
        };
        let init = Init::Normal {
            std: 0.02,
            zero_row: Some(1),
        };
        let a = ParamStore::new(None, &[], &opts)
            .root()
            .get((3, 4), "emb", init)
            .unwrap();
        let b = ParamStore::new(None, &[], &opts)
            .root()
            .get((3, 4), "emb", init)
            .unwrap();
        let other = ParamStore::new(None, &[], &opts)
            .root()
            .get((3, 4), "emb2", init)
            .unwrap();
        let (a, b, other) = (
            a.to_vec2::<f32>().unwrap(),
            b.to_vec2::<f32>().unwrap(),
            other.to_vec2::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert!(a[1].iter().all(|v| *v == 0.0) && a[0].iter().any(|v| *v != 0.0));
        let std = (a.concat().iter().map(|v| v * v).sum::<f32>() / 8.0).sqrt();
        assert!((0.005..0.05).contains(&std), "{std}");
    }

    #[test]
    fn trainable_store_hands_out_variables() {
        let opts = StoreOptions {
            trainable: true,
            ..Default::default()
        };
        let s = ParamStore::new(None, &[], &opts);
        let t = s.root().get(2, "w", Init::Ones).unwrap();
        assert!(t.is_variable());
        assert!(s.params()[0].var.is_some());
    }
}
