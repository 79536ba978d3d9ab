//! `ptm quantize --int8`: a copy of a model whose linear-layer weights are stored as int8 with
//! one f32 scale per output feature (about a quarter of their f32 size). The copy runs with
//! the int8 kernels, its inputs quantized per row at run time; embeddings, LayerNorm and task
//! heads tied to the embeddings stay f32. transformers cannot read it: keep the f32 model for
//! Python.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ptm::nn::{Precision, StoreOptions};

/// Write a copy of a model with int8 linear-layer weights.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or org/name in the Hugging Face cache.
    #[arg(long)]
    model: String,
    /// Output directory (created; files in it are replaced atomically).
    #[arg(long)]
    output: PathBuf,
    /// Dynamic int8 quantization of the linear layers (the one method).
    #[arg(long)]
    int8: bool,
}

pub fn run(a: Args) -> Result<()> {
    if !a.int8 {
        bail!("say which quantization: --int8 (dynamic int8 linear layers) is the one ptm has");
    }
    super::convert::save(&a.model, &a.output, &StoreOptions { precision: Precision::Int8, ..Default::default() })
}
