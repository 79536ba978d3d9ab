//! `ptm perplexity`: sliding-window perplexity of a text under a causal language model.

use std::path::{Path, PathBuf};

use anyhow::Result;
use ptm::generate::{load_causal_lm, perplexity};
use ptm::models::Pretrained;
use ptm::tokenizer::Padding;

use super::Format;
use crate::input::{LineLimitArg, next_line};

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
    /// Window length, at most the model's positions (default: all of them).
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    dtype: super::DtypeArg,
    #[command(flatten)]
    line_limit: LineLimitArg,
}

pub fn run(a: Args) -> Result<()> {
    let pretrained = Pretrained::open(&a.model)?;
    let mut tokenizer = pretrained.checked_tokenizer()?;
    tokenizer.set_padding(Padding::None)?;
    // The windows cut the text; the tokenizer must not.
    tokenizer.set_truncation(None)?;
    let (model, _) = load_causal_lm(&pretrained, &a.dtype.store())?;
    let bytes = read_lines(&a.input, a.line_limit)?;
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
    let max_length = a.max_length.unwrap_or(model.max_positions());
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

/// The bytes of `path`, line endings kept, read line by line so that a file without line
/// breaks stops at the line limit.
fn read_lines(path: &Path, limit: LineLimitArg) -> Result<Vec<u8>> {
    let mut lines = ptm::io::LineReader::open(path, limit.max_line_bytes)?;
    let (mut bytes, mut buf) = (Vec::new(), Vec::new());
    while next_line(&mut lines, &mut buf)?.is_some() {
        bytes.extend_from_slice(&buf);
    }
    Ok(bytes)
}
