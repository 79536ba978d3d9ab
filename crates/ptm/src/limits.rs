//! Sizes checked before anything is allocated: a config or a flag that asks for more memory
//! than the machine has is refused with the fields and the estimate named, instead of an abort
//! inside the allocator or a run that grows until the OOM killer ends it. Size arithmetic is
//! checked: an overflow is an error, never a wrap.

use std::path::Path;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Bytes of memory this process can still use: the smaller of the system's available memory
/// and what its cgroup allows beyond its current use. `None` where neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kb.checked_mul(1024)
    });
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // "max" (no limit) does not parse and counts as none.
    let cgroup =
        read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The config's size fields under their names in its own family.
struct SizeFields {
    vocab: (&'static str, usize),
    hidden: (&'static str, usize),
    layers: (&'static str, usize),
    intermediate: (&'static str, usize),
    /// Learned position embeddings (`None`: relative positions, no table).
    positions: Option<(&'static str, usize)>,
}

fn size_fields(config: &ModelConfig) -> SizeFields {
    let (d, n) = (config.dims(), config.dim_names());
    SizeFields {
        vocab: ("vocab_size", d.vocab_size),
        hidden: (n.hidden, d.hidden_size),
        layers: (n.layers, d.layers),
        intermediate: (n.intermediate, d.intermediate_size),
        positions: n.positions.map(|p| (p, d.max_positions)),
    }
}

impl SizeFields {
    fn describe(&self) -> String {
        let mut fields = vec![self.vocab, self.hidden, self.layers, self.intermediate];
        fields.extend(self.positions);
        fields
            .iter()
            .map(|(name, v)| format!("{name} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Multiplies and adds sizes, `None` on overflow.
fn product(factors: &[usize]) -> Option<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f as u64))
}

/// About how many parameters the config's model has (embeddings, per layer the attention's
/// four projections and the feed-forward pair; norms and biases are too small to matter).
pub fn parameter_count(config: &ModelConfig) -> Result<u64> {
    let path = &origin(config);
    let f = size_fields(config);
    if f.layers.1 == 0 {
        return Err(Error::config(path, f.layers.0, "must be at least 1"));
    }
    // Token ids are u32 everywhere, as in the tokenizers crate.
    if f.vocab.1 as u64 > u32::MAX as u64 + 1 {
        return Err(Error::config(
            path,
            f.vocab.0,
            format!("{} is more tokens than 32-bit ids can address", f.vocab.1),
        ));
    }
    let (h, i) = (f.hidden.1, f.intermediate.1);
    let count = (|| {
        let per_layer = product(&[4, h, h])?.checked_add(product(&[2, h, i])?)?;
        let mut total = product(&[f.layers.1])?.checked_mul(per_layer)?;
        total = total.checked_add(product(&[f.vocab.1, h])?)?;
        if let Some((_, p)) = f.positions {
            total = total.checked_add(product(&[p, h])?)?;
        }
        Some(total)
    })();
    count.ok_or_else(|| {
        Error::config(
            path,
            f.hidden.0,
            format!("the model's size overflows 64 bits ({})", f.describe()),
        )
    })
}

/// Refuses a model whose weights alone (4 bytes each, f32) would not fit in memory.
pub fn check_model(config: &ModelConfig) -> Result<()> {
    let params = parameter_count(config)?;
    fits(params.saturating_mul(4), "its weights", config)
}

/// Where the config was read from, for messages.
fn origin(config: &ModelConfig) -> std::path::PathBuf {
    config
        .common()
        .path
        .clone()
        .unwrap_or_else(|| "config.json".into())
}

/// Refuses training that cannot fit: weights, gradients and the two Adam moments (16 bytes a
/// parameter) plus the activations a step keeps for backward (at least, per token and layer,
/// the dozen hidden-sized tensors and two feed-forward ones, and the logits over the
/// vocabulary). A lower bound: what passes may still be tight, what fails cannot run.
pub fn check_training(config: &ModelConfig, batch_size: usize, seq_len: usize) -> Result<()> {
    let params = parameter_count(config)?;
    let f = size_fields(config);
    let tokens = product(&[batch_size, seq_len]).unwrap_or(u64::MAX);
    let per_token = (12 * f.hidden.1 as u64)
        .saturating_add(2 * f.intermediate.1 as u64)
        .saturating_mul(f.layers.1 as u64)
        .saturating_add(2 * f.vocab.1 as u64);
    let bytes = params
        .saturating_mul(16)
        .saturating_add(tokens.saturating_mul(per_token).saturating_mul(4));
    fits(
        bytes,
        &format!("training in batches of {batch_size} x {seq_len} tokens"),
        config,
    )
}

fn fits(bytes: u64, what: &str, config: &ModelConfig) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if bytes <= available {
        return Ok(());
    }
    let f = size_fields(config);
    Err(Error::config(
        origin(config),
        f.hidden.0,
        format!(
            "{what} would need at least {} of memory, and {} is available ({})",
            human(bytes),
            human(available),
            f.describe()
        ),
    ))
}

/// Refuses a tokenizer vocabulary that the trainer could not hold (about 72 bytes an entry for
/// the token, its id and the trainer's counts) or that 32-bit ids cannot address.
pub fn check_vocab_size(vocab_size: usize) -> Result<()> {
    let flag = "--vocab-size";
    if vocab_size == 0 || vocab_size as u64 > u32::MAX as u64 {
        return Err(Error::invalid(format!(
            "{flag} {vocab_size} is not between 1 and {}",
            u32::MAX
        )));
    }
    let bytes = (vocab_size as u64).saturating_mul(72);
    match available_memory() {
        Some(available) if bytes > available => Err(Error::invalid(format!(
            "{flag} {vocab_size} would need at least {} of memory, and {} is available",
            human(bytes),
            human(available)
        ))),
        _ => Ok(()),
    }
}

/// Bytes in the largest unit that keeps a number at least 1 (1.5 GB, 310 TB).
fn human(bytes: u64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bert(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ModelConfig> {
        let mut v = serde_json::json!({
            "model_type": "bert", "vocab_size": 100, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
            "max_position_embeddings": 64
        });
        edit(&mut v);
        ModelConfig::from_value(v, Path::new("c.json"))
    }

    #[test]
    fn tiny_models_pass_and_sizes_are_counted() {
        let c = bert(|_| {}).unwrap();
        assert_eq!(
            parameter_count(&c).unwrap(),
            2 * (4 * 32 * 32 + 2 * 32 * 37) + 100 * 32 + 64 * 32
        );
        check_model(&c).unwrap();
        check_training(&c, 16, 64).unwrap();
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocation() {
        let err = |c: ModelConfig| check_model(&c).unwrap_err().to_string();
        let huge = bert(|v| {
            v["hidden_size"] = 1_000_000_000u64.into();
            v["num_attention_heads"] = 1.into();
        })
        .unwrap();
        let e = err(huge);
        assert!(
            e.contains("c.json: field `hidden_size`") && e.contains("hidden_size 1000000000"),
            "{e}"
        );
        // Overflow is an error, never a wrap to a small number.
        let wraps = bert(|v| {
            v["hidden_size"] = (1u64 << 40).into();
            v["num_attention_heads"] = 1.into();
        })
        .unwrap();
        assert!(err(wraps).contains("overflows"));
        let e = err(bert(|v| v["vocab_size"] = (1u64 << 40).into()).unwrap());
        assert!(e.contains("vocab_size") && e.contains("32-bit"), "{e}");
        let e = err(bert(|v| v["num_hidden_layers"] = 0.into()).unwrap());
        assert!(
            e.contains("field `num_hidden_layers`: must be at least 1"),
            "{e}"
        );
        if available_memory().is_some() {
            let deep = bert(|v| v["num_hidden_layers"] = 1_000_000_000u64.into()).unwrap();
            let e = err(deep);
            assert!(
                e.contains("num_hidden_layers 1000000000") && e.contains("available"),
                "{e}"
            );
            let c = bert(|_| {}).unwrap();
            let e = check_training(&c, 1 << 20, 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("training in batches of 1048576 x 1048576"),
                "{e}"
            );
            let e = check_vocab_size(4_000_000_000).unwrap_err().to_string();
            assert!(e.contains("--vocab-size 4000000000 would need"), "{e}");
        } else {
            println!("no /proc/meminfo or cgroup limit here: the memory bounds are not exercised");
        }
        assert!(check_vocab_size(1 << 33).is_err());
        check_vocab_size(8000).unwrap();
    }
}
