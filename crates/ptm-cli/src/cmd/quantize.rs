//! `ptm quantize --int8`: a copy of a model whose linear-layer weights are stored as int8 with
//! one f32 scale per output feature (about a quarter of their f32 size). The copy runs with
//! the int8 kernels, its inputs quantized per row at run time; embeddings, LayerNorm and task
//! heads tied to the embeddings stay f32. transformers cannot read it: keep the f32 model for
//! Python.

use anyhow::{Result, bail};
use ptm::nn::{Precision, StoreOptions};

/// Write a copy of a model with int8 linear-layer weights.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    paths: super::convert::Paths,
    /// Dynamic int8 quantization of the linear layers (the one method).
    #[arg(long)]
    int8: bool,
}

pub fn run(a: Args) -> Result<()> {
    if !a.int8 {
        bail!("say which quantization: --int8 (dynamic int8 linear layers) is the one ptm has");
    }
    super::convert::save(
        &a.paths,
        &StoreOptions {
            precision: Precision::Int8,
            ..Default::default()
        },
    )
}
