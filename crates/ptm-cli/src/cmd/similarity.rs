//! `ptm similarity`: the cosine similarity of every pair of the given texts.

use anyhow::{Context, Result, bail};
use ptm::pipelines::{EmbeddingOptions, SentenceEmbedder, cosine_similarity};

use super::Format;

/// Embed texts and print their cosine similarity matrix.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or org/name in the Hugging Face cache.
    #[arg(long)]
    model: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Two or more texts.
    texts: Vec<String>,
    #[command(flatten)]
    dtype: super::DtypeArg,
}

pub fn run(a: Args) -> Result<()> {
    if a.texts.len() < 2 {
        bail!("give at least two texts to compare");
    }
    let embedder = SentenceEmbedder::load(
        &a.model,
        &EmbeddingOptions {
            store: a.dtype.store(),
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", a.model))?;
    let refs: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    let e = embedder.embed(&refs)?;
    let sim: Vec<Vec<f32>> = e
        .iter()
        .map(|x| e.iter().map(|y| cosine_similarity(x, y)).collect())
        .collect();
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "texts": a.texts, "similarity": sim })
        ),
        Format::Text => {
            for (i, t) in a.texts.iter().enumerate() {
                println!("[{i}] {t}");
            }
            print!("\n    ");
            for j in 0..a.texts.len() {
                print!("{:>7}", format!("[{j}]"));
            }
            println!();
            for (i, row) in sim.iter().enumerate() {
                print!("{:>4}", format!("[{i}]"));
                for v in row {
                    print!("{v:>7.3}");
                }
                println!();
            }
        }
    }
    Ok(())
}
