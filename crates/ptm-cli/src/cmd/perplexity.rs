//! `ptm perplexity`: sliding-window perplexity of a text under a causal language model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ptm::generate::{load_causal_lm, perplexity};
use ptm::models::Pretrained;
use ptm::tokenizer::Padding;

use super::Format;

/// Perplexity of a text file, windows of the model's length advancing by --stride tokens.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    /// A UTF-8 text file, scored as one text.
    #[arg(long)]
    input: PathBuf,
    /// Tokens each window advances (default: the window length, no overlap).
    #[arg(long)]
    stride: Option<usize>,
    /// Window length (default: the model's positions).
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    dtype: super::DtypeArg,
}

pub fn run(a: Args) -> Result<()> {
    let pretrained = Pretrained::open(&a.model)?;
    let mut tokenizer = pretrained.checked_tokenizer()?;
    tokenizer.set_padding(Padding::None)?;
    let (model, _) = load_causal_lm(&pretrained, &a.dtype.store())?;
    let bytes =
        std::fs::read(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        anyhow::anyhow!("{}:{line}: not valid UTF-8", a.input.display())
    })?;
    let ids = tokenizer.encode_batch(&[text.as_str()])?.encodings[0]
        .get_ids()
        .to_vec();
    let max_length = a
        .max_length
        .unwrap_or(model.max_positions())
        .min(model.max_positions());
    let stride = a.stride.unwrap_or(max_length);
    let (ppl, tokens) = perplexity(&*model, &ids, max_length, stride)?;
    match a.format {
        super::Format::Json => println!(
            "{}",
            serde_json::json!({ "perplexity": ppl, "tokens": tokens, "max_length": max_length, "stride": stride })
        ),
        super::Format::Text => println!(
            "perplexity {ppl:.4} over {tokens} tokens (window {max_length}, stride {stride})"
        ),
    }
    Ok(())
}
