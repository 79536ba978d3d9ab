pub mod bench;
pub mod convert;
pub mod embed;
pub mod eval;
pub mod fill_mask;
pub mod finetune;
pub mod generate;
pub mod info;
pub mod perplexity;
pub mod plot;
pub mod predict;
pub mod pretrain;
pub mod quantize;
pub mod similarity;
pub mod task_model;
pub mod tokenizer;
pub mod train_options;

/// `--dtype`: the number format of linear-layer weights for inference.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DtypeArg {
    /// Linear-layer weights: f32; bf16 (products accumulated in f32); or int8 (per-output-
    /// feature weight scales, inputs quantized per row as they arrive).
    #[arg(long = "dtype", default_value = "f32")]
    pub dtype: ptm::nn::Precision,
}

impl DtypeArg {
    pub fn store(&self) -> ptm::nn::StoreOptions {
        ptm::nn::StoreOptions {
            precision: self.dtype,
            ..Default::default()
        }
    }
}

/// Output formats of the commands that print results.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}
