//! File helpers: every write goes to `name.tmp`, is synced, then renamed into place, so a
//! crash leaves either the old file or the new one, never half of one.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` into the temp file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Persist the rename itself; not every platform can open a directory, so best effort.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        cause: source,
    })
}

/// Creates `dir` (and parents), with the error naming it.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Fills a hidden temp folder beside `dir` with `fill`, then renames it to `dir` (replacing
/// what was there): a kill at any moment leaves the old `dir` or the new one, whole. When
/// `fill` fails the temp folder is removed.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.with_file_name(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    create_dir_all(&tmp)?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    if let Some(parent) = dir.parent().and_then(|p| File::open(p).ok()) {
        // Persist the rename; best effort, as in write_atomic.
        let _ = parent.sync_all();
    }
    Ok(())
}

/// The longest line, in bytes, that the readers of texts accept by default: a file without
/// line breaks (`/dev/zero`) is refused there instead of filling memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Reads a file or stream line by line, each line at most `limit` bytes (its ending not
/// counted), so one endless line costs at most `limit` bytes of memory; errors name the
/// source and the line.
pub struct LineReader<R> {
    reader: R,
    name: String,
    limit: usize,
    line: usize,
}

impl LineReader<std::io::BufReader<File>> {
    /// Opens `path`, with errors naming it.
    pub fn open(path: &Path, limit: usize) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(LineReader::new(
            std::io::BufReader::new(f),
            path.display().to_string(),
            limit,
        ))
    }
}

impl<R: BufRead> LineReader<R> {
    /// `name` is what messages call the source (a path, `<stdin>`).
    pub fn new(reader: R, name: impl Into<String>, limit: usize) -> Self {
        LineReader {
            reader,
            name: name.into(),
            limit,
            line: 0,
        }
    }

    /// Replaces `buf` with the next line, its ending (`\n` or `\r\n`) kept; false at the end.
    pub fn read_line(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        // Two bytes past the limit: room for "\r\n" after a line of exactly `limit` bytes.
        let cap = self.limit.saturating_add(2) as u64;
        let n = self
            .reader
            .by_ref()
            .take(cap)
            .read_until(b'\n', buf)
            .map_err(|e| Error::io(&self.name, e))?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        if line_content(buf).len() > self.limit {
            return Err(Error::LineTooLong {
                source_name: self.name.clone(),
                line: self.line,
                limit: self.limit,
            });
        }
        Ok(true)
    }

    /// The 1-based number of the line last read.
    pub fn line(&self) -> usize {
        self.line
    }

    /// What messages call the source.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `line` without its ending (`\n` or `\r\n`).
pub fn line_content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        let mut r = LineReader::new(bytes, "in.txt", limit);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while r.read_line(&mut buf)? {
            out.push(line_content(&buf).to_vec());
        }
        Ok(out)
    }

    #[test]
    fn lines_up_to_the_limit_are_read_whole() {
        let lines = lines_of(b"abcd\r\nab\n\nabcd", 4).unwrap();
        assert_eq!(lines, [&b"abcd"[..], b"ab", b"", b"abcd"]);
    }

    #[test]
    fn a_longer_line_names_the_source_and_line() {
        let err = lines_of(b"ab\nabcde\nab\n", 4).unwrap_err().to_string();
        assert_eq!(
            err,
            "in.txt:2: a line longer than 4 bytes (the limit per line)"
        );
        let err = lines_of(b"abcdef", 4).unwrap_err().to_string();
        assert!(err.starts_with("in.txt:1:"), "{err}");
    }

    #[test]
    fn an_endless_line_stops_at_the_limit() {
        let mut r = LineReader::new(
            std::io::BufReader::new(std::io::repeat(0)),
            "zeros",
            1 << 10,
        );
        let mut buf = Vec::new();
        assert!(r.read_line(&mut buf).is_err());
        assert!(buf.len() <= (1 << 10) + 2, "{}", buf.len());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("a.json.tmp").exists());
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(!dir.path().join("a.bin.tmp").exists());
    }
}
