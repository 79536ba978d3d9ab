//! Reading input texts: JSONL with a `text` field (files ending in .jsonl, or --jsonl), else
//! one text per line; a file or stdin. Errors name the file and line.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub struct TextSource {
    reader: Box<dyn BufRead>,
    name: String,
    jsonl: bool,
    line: usize,
}

impl TextSource {
    pub fn open(path: Option<&Path>, force_jsonl: bool) -> Result<Self> {
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
            reader,
            name,
            jsonl,
            line: 0,
        })
    }

    /// Up to `n` more texts; empty at the end of the input.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        let mut buf = Vec::new();
        while out.len() < n {
            buf.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading {}", self.name))?;
            if read == 0 {
                break;
            }
            self.line += 1;
            for end in [b'\n', b'\r'] {
                if buf.last() == Some(&end) {
                    buf.pop();
                }
            }
            let text = std::str::from_utf8(&buf).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: not valid UTF-8 (byte {})",
                    self.name,
                    self.line,
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
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: invalid JSON: {e}", self.name, self.line))?;
        match v.get("text") {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!(
                "{}:{}: field \"text\" is not a string",
                self.name,
                self.line
            ),
            None => bail!("{}:{}: no \"text\" field", self.name, self.line),
        }
    }
}
