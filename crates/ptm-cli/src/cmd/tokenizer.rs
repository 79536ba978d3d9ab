//! `ptm tokenizer train`: a new tokenizer from a corpus, saved as tokenizer.json and friends.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ptm::data::read_corpus_with_limit;

use crate::input::{LineLimitArg, with_line_hint};
use ptm::tokenizer::{TokenizerKind, train_tokenizer};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a WordPiece, byte-level BPE or Unigram tokenizer on text files.
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// wordpiece (BERT), bpe (GPT-2, byte-level) or unigram (SentencePiece-style).
    #[arg(long, default_value = "wordpiece")]
    kind: String,
    #[arg(long, default_value_t = 8000)]
    vocab_size: usize,
    /// Keep case (WordPiece lower-cases by default, as bert-base-uncased).
    #[arg(long)]
    cased: bool,
    #[arg(long)]
    output: PathBuf,
    /// Text files or folders (documents separated by blank lines), or JSONL with "text".
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    line_limit: LineLimitArg,
}

pub fn run(c: Command) -> Result<()> {
    let Command::Train(a) = c;
    let kind = TokenizerKind::parse(&a.kind)?;
    // Before the corpus is read: a vocabulary that cannot fit is known from the flag alone.
    ptm::limits::check_vocab_size(a.vocab_size)?;
    let mut docs = Vec::new();
    let report = read_corpus_with_limit(&a.files, a.line_limit.max_line_bytes, |d| {
        docs.push(d);
        Ok(())
    })
    .map_err(with_line_hint)?;
    for (file, line) in &report.skipped_lines {
        eprintln!("skipped {}:{line}: not valid UTF-8", file.display());
    }
    anyhow::ensure!(!docs.is_empty(), "the corpus has no text");
    let tok = train_tokenizer(kind, a.vocab_size, !a.cased, docs.into_iter())?;
    ptm::io::create_dir_all(&a.output)?;
    tok.save(&a.output)
        .with_context(|| format!("saving to {}", a.output.display()))?;
    eprintln!(
        "trained a {} tokenizer of {} tokens on {} documents ({} lines skipped) into {}",
        a.kind,
        tok.vocab_size(),
        report.documents,
        report.skipped_lines.len(),
        a.output.display()
    );
    Ok(())
}
