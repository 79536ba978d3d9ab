//! `ptm info`: what a model directory holds.

use anyhow::{Context, Result};
use ptm::config::ModelConfig;
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
    let ModelDir { root: dir, sentence_transformers: st, pretrained } = ModelDir::open(&a.model)?;
    let (arch, store) = load_architecture(&pretrained, &StoreOptions::default())
        .with_context(|| format!("loading {}", pretrained.dir.display()))?;
    let tokenizer = pretrained.tokenizer().ok();
    let ModelConfig::Bert(c) = &pretrained.config;
    let mut info = json!({
        "path": dir.display().to_string(),
        "model_type": pretrained.config.model_type(),
        "architecture": arch,
        "parameters": store.num_parameters(),
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "layers": c.num_hidden_layers,
        "attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size,
        "activation": c.hidden_act.name(),
        "max_position_embeddings": c.max_position_embeddings,
        "labels": c.common.id2label,
    });
    if let Some(t) = &tokenizer {
        info["tokenizer_vocab_size"] = json!(t.vocab_size());
    }
    if let Some(s) = &st {
        let pooling: Vec<_> = s.pooling.iter().map(|p| serde_json::to_value(p).unwrap_or_default()).collect();
        info["sentence_transformers"] =
            json!({ "pooling": pooling, "normalize": s.normalize, "max_seq_length": s.max_seq_length });
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
