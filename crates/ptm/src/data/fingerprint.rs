//! Content hashes (SHA-256, stable across machines and toolchains): the key of the tokenized
//! corpus cache and the fingerprint of a run's training data. Files are hashed by streaming, so
//! a corpus larger than memory costs one read.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The SHA-256 of a file's bytes, as hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(hasher.finalize().as_slice()))
}

/// The SHA-256 of several parts, each length-prefixed so that ("ab", "c") and ("a", "bc")
/// differ.
pub fn sha256_of(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update((p.len() as u64).to_le_bytes());
        hasher.update(p);
    }
    hex(hasher.finalize().as_slice())
}

/// The fingerprint of training data read from `files` (their contents, in order, not their
/// names or times) by `tokenizer`, with `settings` (task, lengths, label names...) that shape
/// the examples.
pub fn data_fingerprint(
    files: &[PathBuf],
    tokenizer: &crate::tokenizer::Tokenizer,
    settings: &str,
) -> Result<String> {
    let mut parts = vec![sha256_of(&[tokenizer.to_json(false)?.as_bytes()])];
    for f in crate::data::corpus_files(files)? {
        parts.push(file_sha256(&f)?);
    }
    parts.push(settings.to_string());
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    Ok(sha256_of(&refs))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_parts_are_delimited() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, "abc").unwrap();
        // FIPS 180-2's example.
        assert_eq!(
            file_sha256(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(sha256_of(&[b"ab", b"c"]), sha256_of(&[b"a", b"bc"]));
        let err = file_sha256(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
