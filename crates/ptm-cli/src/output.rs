//! Writing results: to stdout, or to a file that appears (atomically, via a temp name) only
//! when the command succeeds, so a failed run never leaves a half-written file behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

enum Out {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        w: BufWriter<File>,
        tmp: PathBuf,
        path: PathBuf,
    },
}

pub struct Sink {
    out: Out,
    committed: bool,
}

impl Sink {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let out = match path {
            None => Out::Stdout(BufWriter::new(std::io::stdout())),
            Some(p) => {
                let mut name = p.file_name().unwrap_or_default().to_os_string();
                name.push(".tmp");
                let tmp = p.with_file_name(name);
                let f = File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                Out::File {
                    w: BufWriter::new(f),
                    tmp,
                    path: p.to_path_buf(),
                }
            }
        };
        Ok(Sink {
            out,
            committed: false,
        })
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match &mut self.out {
            Out::Stdout(w) => w,
            Out::File { w, .. } => w,
        }
    }

    /// Flushes; for a file, syncs and renames it into place.
    pub fn finish(mut self) -> Result<()> {
        match &mut self.out {
            Out::Stdout(w) => w.flush()?,
            Out::File { w, tmp, path } => {
                w.flush().context("writing output")?;
                w.get_ref().sync_all()?;
                std::fs::rename(&*tmp, &*path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let (false, Out::File { tmp, .. }) = (self.committed, &self.out) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
