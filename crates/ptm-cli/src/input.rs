//! Reading input texts: JSONL with a `text` field (files ending in .jsonl, or --jsonl), else
//! one text per line; a file or stdin. Lines are at most `--max-line-bytes` long. Errors name
//! the file and line.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ptm::io::{LineReader, MAX_LINE_BYTES, line_content};

/// `--max-line-bytes`: the longest input line read.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LineLimitArg {
    /// The longest input line, in bytes; a longer one (a file without line breaks) is an
    /// error naming the line.
    #[arg(long = "max-line-bytes", default_value_t = MAX_LINE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_line_bytes: usize,
}

/// The next line of `lines` without its ending: None at the end. A line over the limit gets
/// the flag that raises it added to its message.
pub fn next_line<'a>(
    lines: &mut LineReader<impl BufRead>,
    buf: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>> {
    match lines.read_line(buf) {
        Ok(true) => Ok(Some(line_content(buf))),
        Ok(false) => Ok(None),
        Err(e) => Err(with_line_hint(e)),
    }
}

/// A line over the limit gets the flag that raises it added to its message.
pub fn with_line_hint(e: ptm::Error) -> anyhow::Error {
    match e {
        e @ ptm::Error::LineTooLong { .. } => anyhow::anyhow!("{e}; --max-line-bytes raises it"),
        e => e.into(),
    }
}

pub struct TextSource {
    lines: LineReader<Box<dyn BufRead>>,
    jsonl: bool,
}

impl TextSource {
    pub fn open(path: Option<&Path>, force_jsonl: bool, limit: LineLimitArg) -> Result<Self> {
        let (reader, name, jsonl): (Box<dyn BufRead>, String, bool) = match path {
            Some(p) => {
                let f = std::fs::File::open(p)
                    .with_context(|| format!("cannot open input {}", p.display()))?;
                let jsonl = force_jsonl || p.extension().is_some_and(|e| e == "jsonl");
                (
                    Box::new(std::io::BufReader::new(f)),
                    p.display().to_string(),
                    jsonl,
                )
            }
            None => (
                Box::new(std::io::stdin().lock()),
                "<stdin>".into(),
                force_jsonl,
            ),
        };
        Ok(TextSource {
            lines: LineReader::new(reader, name, limit.max_line_bytes),
            jsonl,
        })
    }

    /// The 1-based number of the line last read.
    pub fn line(&self) -> usize {
        self.lines.line()
    }

    pub fn name(&self) -> &str {
        self.lines.name()
    }

    /// Up to `n` more texts; empty at the end of the input.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        let mut buf = Vec::new();
        while out.len() < n {
            let Some(line) = next_line(&mut self.lines, &mut buf)? else {
                break;
            };
            let text = std::str::from_utf8(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: not valid UTF-8 (byte {})",
                    self.lines.name(),
                    self.lines.line(),
                    e.valid_up_to()
                )
            })?;
            out.push(if self.jsonl {
                self.parse_jsonl(text)?
            } else {
                text.to_string()
            });
        }
        Ok(out)
    }

    fn parse_jsonl(&self, line: &str) -> Result<String> {
        let (name, n) = (self.lines.name(), self.lines.line());
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{name}:{n}: invalid JSON: {e}"))?;
        match v.get("text") {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("{name}:{n}: field \"text\" is not a string"),
            None => bail!("{name}:{n}: no \"text\" field"),
        }
    }
}
