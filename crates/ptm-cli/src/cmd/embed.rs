//! `ptm embed`: one JSON line `{"embedding": [...]}` per input text, in order.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ptm::heads::Pooling;
use ptm::pipelines::{EmbeddingOptions, SentenceEmbedder};

use crate::input::{LineLimitArg, TextSource};
use crate::output::Sink;

/// Embed texts: JSONL with a "text" field (files ending in .jsonl) or one text per line.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or org/name in the Hugging Face cache.
    #[arg(long)]
    model: String,
    /// Input file (default: stdin).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output file, written atomically (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Read the input as JSONL whatever its name.
    #[arg(long)]
    jsonl: bool,
    /// Pooling (default: the model's sentence-transformers config, else mean).
    #[arg(long, value_parser = parse_pooling)]
    pooling: Option<Pooling>,
    /// L2-normalise the embeddings (default: as the model's config says).
    #[arg(long, overrides_with = "no_normalize")]
    normalize: bool,
    /// Do not normalise.
    #[arg(long)]
    no_normalize: bool,
    /// Truncate texts to this many tokens (default: max_seq_length, else the model's limit).
    #[arg(long)]
    max_length: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    dtype: super::DtypeArg,
    #[command(flatten)]
    line_limit: LineLimitArg,
}

#[derive(serde::Serialize)]
struct Row<'a> {
    embedding: &'a [f32],
}

pub fn parse_pooling(s: &str) -> Result<Pooling, String> {
    Pooling::parse(s).map_err(|e| e.to_string())
}

/// Texts read and embedded at a time, so inputs larger than memory stream through.
const CHUNK: usize = 1024;

pub fn run(a: Args) -> Result<()> {
    let opts = EmbeddingOptions {
        pooling: a.pooling.map(|p| vec![p]),
        normalize: match (a.normalize, a.no_normalize) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        max_length: a.max_length,
        batch_size: Some(a.batch_size),
        store: a.dtype.store(),
    };
    let embedder =
        SentenceEmbedder::load(&a.model, &opts).with_context(|| format!("loading {}", a.model))?;
    let mut source = TextSource::open(a.input.as_deref(), a.jsonl, a.line_limit)?;
    let mut sink = Sink::open(a.output.as_deref())?;
    loop {
        let first = source.line() + 1;
        let texts = source.next_chunk(CHUNK)?;
        if texts.is_empty() {
            break;
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embeddings = embedder
            .embed(&refs)
            .with_context(|| format!("{} lines {first}-{}", source.name(), source.line()))?;
        for e in embeddings {
            // f32 as f32: the shortest text that reads back to the same value.
            serde_json::to_writer(sink.writer(), &Row { embedding: &e })?;
            sink.writer().write_all(b"\n")?;
        }
    }
    sink.finish()
}
