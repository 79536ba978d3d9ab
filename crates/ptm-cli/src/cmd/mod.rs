pub mod bench;
pub mod convert;
pub mod embed;
pub mod eval;
pub mod finetune;
pub mod fill_mask;
pub mod generate;
pub mod info;
pub mod perplexity;
pub mod plot;
pub mod predict;
pub mod pretrain;
pub mod similarity;
pub mod task_model;
pub mod tokenizer;
pub mod train_options;

/// Output formats of the commands that print results.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}
