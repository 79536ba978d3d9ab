//! Checks on `pytorch_model.bin` before candle's pickle reader sees it. That reader trusts
//! lengths and tuple sizes it reads (candle 0.11): a BINUNICODE length is allocated before it is
//! read, a LONG1 of more than 8 bytes overflows a shift, and a short `_rebuild_tensor_v2` tuple
//! panics. Here every length-prefixed argument must fit in the pickle, a panic inside the reader
//! becomes an error, and a tensor must fit in its storage and the storage in the file before any
//! of it is allocated.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

fn bad(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::BadWeights {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Walks every `data.pkl` in the archive: each opcode candle reads must have its arguments
/// inside the pickle. Opcodes candle does not know end the walk (candle refuses them itself).
pub fn check_archive(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(path, e))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(path, e))?;
        let name = entry.name().map_err(|e| bad(path, e))?.into_owned();
        if !name.ends_with("data.pkl") {
            continue;
        }
        // Stored entries (as torch writes them) cannot hold more than the file; a larger claim
        // is refused before it is read.
        if entry.size() > file_len {
            return Err(bad(
                path,
                format!(
                    "{name} claims {} bytes in a file of {file_len}",
                    entry.size()
                ),
            ));
        }
        let mut pickle = Vec::with_capacity(entry.size() as usize);
        entry
            .by_ref()
            .take(file_len)
            .read_to_end(&mut pickle)
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        walk(&pickle).map_err(|m| bad(path, format!("{name}: {m}")))?;
    }
    Ok(())
}

fn walk(p: &[u8]) -> std::result::Result<(), String> {
    let mut at = 0;
    while at < p.len() {
        let op = p[at];
        let args = &p[at + 1..];
        let need = |n: usize| -> std::result::Result<usize, String> {
            if n > args.len() {
                Err(format!(
                    "opcode {op:#04x} at byte {at} needs {n} bytes, {} are left",
                    args.len()
                ))
            } else {
                Ok(n)
            }
        };
        let le32 = |a: &[u8]| u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as usize;
        let len = match op {
            b'.' => return Ok(()),
            0x80 | b'q' | b'K' | b'h' => need(1)?,
            b'M' => need(2)?,
            b'r' | b'J' | b'j' => need(4)?,
            b'G' => need(8)?,
            b'X' => 4 + need(4 + le32(&args[..need(4)?]))? - 4,
            0x8a => {
                let n = args[..need(1)?][0] as usize;
                if n > 8 {
                    return Err(format!("a {n}-byte integer at byte {at} (at most 8)"));
                }
                need(1 + n)?
            }
            // GLOBAL: module and name, each a line.
            b'c' => {
                let lines: Vec<usize> = args
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i)
                    .take(2)
                    .collect();
                match lines.get(1) {
                    Some(end) => end + 1,
                    None => return Err(format!("GLOBAL at byte {at} has no two lines")),
                }
            }
            b')' | b'R' | b'(' | b't' | b'Q' | b'N' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | b's'
            | b'u' | b'}' | b'd' | b'b' | 0x81 | b']' | b'a' | b'e' => 0,
            _ => return Ok(()),
        };
        at += 1 + len;
    }
    Ok(())
}

/// Runs candle's reader, a panic inside it (a malformed pickle it does not check) turned into an
/// error naming the file. The panic message is not printed: it is the error's text.
pub fn without_panics<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("malformed");
        bad(path, format!("the pickle is malformed ({why})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_and_long_integers_are_refused() {
        assert!(walk(b"\x80\x02}q\x00X\x03\x00\x00\x00abc.").is_ok());
        assert!(
            walk(b"\x80\x02X\xff\xff\xff\x7f")
                .unwrap_err()
                .contains("needs")
        );
        let e = walk(b"\x80\x02\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01.").unwrap_err();
        assert!(e.contains("9-byte integer"), "{e}");
        assert!(
            walk(b"\x80\x02J\x01")
                .unwrap_err()
                .contains("needs 4 bytes")
        );
        assert!(walk(b"ctorch\nFloat").unwrap_err().contains("two lines"));
    }

    #[test]
    fn a_panic_becomes_an_error_naming_the_file() {
        let err = without_panics(Path::new("m.bin"), || -> u8 {
            panic!("index out of bounds")
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("m.bin") && err.contains("index out of bounds"),
            "{err}"
        );
    }
}
