//! `ptm fill-mask`: the most likely tokens for each mask, as transformers' pipeline gives them.

use anyhow::Result;
use ptm::pipelines::FillMask;

use super::Format;

/// Predict the tokens hidden behind the mask token ([MASK] for BERT).
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (with a masked-LM head), or org/name in the Hugging Face cache.
    #[arg(long)]
    model: String,
    /// Candidates per mask.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Text containing the mask token.
    text: String,
    #[command(flatten)]
    dtype: super::DtypeArg,
}

pub fn run(a: Args) -> Result<()> {
    let pipe = FillMask::load(&a.model, &a.dtype.store())?;
    let predictions = pipe.predict(&a.text, a.top_k.max(1))?;
    match a.format {
        // transformers returns a list for one mask and a list of lists for several.
        Format::Json if predictions.len() == 1 => {
            println!("{}", serde_json::to_string(&predictions[0])?)
        }
        Format::Json => println!("{}", serde_json::to_string(&predictions)?),
        Format::Text => {
            for (i, row) in predictions.iter().enumerate() {
                if predictions.len() > 1 {
                    println!("mask {}:", i + 1);
                }
                for p in row {
                    println!("{:.4}  {:<15} {}", p.score, p.token_str, p.sequence);
                }
            }
        }
    }
    Ok(())
}
