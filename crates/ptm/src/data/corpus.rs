//! Pretraining corpora: plain-text files or folders of them (documents separated by blank
//! lines) and JSONL files with a `text` field per line. Lines that are not UTF-8 are skipped
//! and reported with their file and line; malformed JSON is an error naming both. A line
//! longer than the limit (`MAX_LINE_BYTES` by default) is an error naming both too.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{LineReader, MAX_LINE_BYTES};

/// What reading a corpus found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CorpusReport {
    pub files: usize,
    pub documents: usize,
    /// (file, 1-based line) of every line skipped because it was not UTF-8.
    pub skipped_lines: Vec<(PathBuf, usize)>,
}

/// Calls `on_document` with every document of `paths` (files, or folders read recursively in
/// name order; `.jsonl` files by line, others as text), in order; lines of at most
/// [`MAX_LINE_BYTES`].
pub fn read_corpus(
    paths: &[PathBuf],
    on_document: impl FnMut(String) -> Result<()>,
) -> Result<CorpusReport> {
    read_corpus_with_limit(paths, MAX_LINE_BYTES, on_document)
}

/// [`read_corpus`] with lines of at most `max_line_bytes`.
pub fn read_corpus_with_limit(
    paths: &[PathBuf],
    max_line_bytes: usize,
    mut on_document: impl FnMut(String) -> Result<()>,
) -> Result<CorpusReport> {
    let mut report = CorpusReport::default();
    for file in corpus_files(paths)? {
        report.files += 1;
        let jsonl = file.extension().is_some_and(|e| e == "jsonl");
        let mut lines = LineReader::open(&file, max_line_bytes)?;
        read_file(&mut lines, &file, jsonl, &mut report, &mut on_document)?;
    }
    Ok(report)
}

/// The files `paths` name: files themselves, folders' files recursively in name order
/// (hidden ones skipped).
pub fn corpus_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(files_under(path)?);
    }
    Ok(out)
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for e in entries {
        out.extend(files_under(&e)?);
    }
    Ok(out)
}

fn read_file(
    lines: &mut LineReader<impl std::io::BufRead>,
    file: &Path,
    jsonl: bool,
    report: &mut CorpusReport,
    on_document: &mut impl FnMut(String) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut doc = String::new();
    let mut emit = |doc: &mut String, report: &mut CorpusReport| -> Result<()> {
        if !doc.trim().is_empty() {
            report.documents += 1;
            on_document(std::mem::take(doc))?;
        }
        doc.clear();
        Ok(())
    };
    while lines.read_line(&mut buf)? {
        let line_no = lines.line();
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            report.skipped_lines.push((file.to_path_buf(), line_no));
            continue;
        };
        if jsonl {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                Error::invalid(format!("{}:{line_no}: invalid JSON: {e}", file.display()))
            })?;
            match v.get("text") {
                Some(serde_json::Value::String(t)) => {
                    doc.push_str(t);
                    emit(&mut doc, report)?;
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "{}:{line_no}: no string \"text\" field",
                        file.display()
                    )));
                }
            }
        } else if line.trim().is_empty() {
            emit(&mut doc, report)?;
        } else {
            if !doc.is_empty() {
                doc.push('\n');
            }
            doc.push_str(line);
        }
    }
    emit(&mut doc, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_folders_and_jsonl_with_bad_lines_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(
            dir.path().join("a.txt"),
            b"first doc line 1\nline 2\n\n\nsecond doc\n\xff\xfe broken\nstill second\n",
        )
        .unwrap();
        std::fs::write(
            sub.join("c.jsonl"),
            "{\"text\": \"third\"}\n\n{\"text\": \"fourth\", \"id\": 2}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden"), "ignored").unwrap();
        let mut docs = Vec::new();
        let report = read_corpus(&[dir.path().to_path_buf()], |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            docs,
            vec![
                "first doc line 1\nline 2",
                "second doc\nstill second",
                "third",
                "fourth"
            ]
        );
        assert_eq!((report.files, report.documents), (2, 4));
        assert_eq!(report.skipped_lines, vec![(dir.path().join("a.txt"), 6)]);
    }

    #[test]
    fn malformed_jsonl_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.jsonl");
        std::fs::write(&f, "{\"text\": \"ok\"}\n{\"txt\": 1}\n").unwrap();
        let err = read_corpus(&[f], |_| Ok(())).unwrap_err().to_string();
        assert!(
            err.contains("x.jsonl:2") && err.contains("\"text\""),
            "{err}"
        );
        let err = read_corpus(&[dir.path().join("missing.txt")], |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.txt"), "{err}");
    }

    #[test]
    fn a_line_past_the_limit_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, "short\n\n0123456789\n").unwrap();
        let err = read_corpus_with_limit(std::slice::from_ref(&f), 8, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}:3: a line longer than 8 bytes (the limit per line)",
                f.display()
            )
        );
        let report = read_corpus_with_limit(&[f], 10, |_| Ok(())).unwrap();
        assert_eq!(report.documents, 2);
    }
}
