//! `ptm info`: what a model directory holds.

use anyhow::{Context, Result};
use ptm::models::load_architecture;
use ptm::nn::StoreOptions;
use ptm::sentence_transformers::ModelDir;
use serde_json::json;

use super::Format;

/// Show a model's architecture, size, vocabulary and limits.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or org/name in the Hugging Face cache.
    #[arg(long)]
    model: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(a: Args) -> Result<()> {
    let ModelDir {
        root: dir,
        sentence_transformers: st,
        pretrained,
    } = ModelDir::open(&a.model)?;
    let (arch, store) = load_architecture(&pretrained, &StoreOptions::default())
        .with_context(|| format!("loading {}", pretrained.dir.display()))?;
    let tokenizer = pretrained.tokenizer().ok();
    let d = pretrained.config.dims();
    let mut info = json!({
        "path": dir.display().to_string(),
        "model_type": pretrained.config.model_type(),
        "architecture": arch,
        "parameters": store.num_parameters(),
        "vocab_size": d.vocab_size,
        "hidden_size": d.hidden_size,
        "layers": d.layers,
        "attention_heads": d.heads,
        "intermediate_size": d.intermediate_size,
        "activation": d.activation.name(),
        // Relative positions (XLNet) have no limit: null, as transformers' -1 means.
        "max_position_embeddings": (d.max_positions != usize::MAX).then_some(d.max_positions),
        "labels": pretrained.config.common().id2label,
    });
    if let Some(t) = &tokenizer {
        info["tokenizer_vocab_size"] = json!(t.vocab_size());
    }
    if let Some(s) = &st {
        let pooling: Vec<_> = s
            .pooling
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect();
        info["sentence_transformers"] = json!({ "pooling": pooling, "normalize": s.normalize, "max_seq_length": s.max_seq_length });
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        Format::Text => {
            if let serde_json::Value::Object(m) = &info {
                for (k, v) in m {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    println!("{k:<24} {v}");
                }
            }
        }
    }
    Ok(())
}
