//! Tokenized corpora on disk. A corpus is tokenized once, streaming (a few MB of text in memory
//! at a time), into shards of little-endian u32 ids with two small indexes: where each sentence
//! ends (u64 token offsets) and where each document ends (u64 sentence counts). Training then
//! memory-maps the shards, so a corpus larger than RAM costs only page cache.
//!
//! `index.json` records the format, the tokenizer's hash and each source file's content hash
//! (not its path or time: a file edited in place with its time restored is still seen); a later
//! run with the same inputs reuses the shards. The folder is built under a temp name and renamed
//! into place, so a kill leaves no half-written corpus behind, and a lock beside it makes a
//! second process wait for the first to finish building, then reuse its work.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::corpus::{corpus_files, read_corpus_with_limit};
use super::fingerprint::{file_sha256, sha256_of};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

const INDEX: &str = "index.json";
/// 2: sources keyed on their content.
const FORMAT: u32 = 2;
/// A new shard starts at the first document end past this many tokens (256 MB of ids).
const SHARD_TOKENS: u64 = 1 << 26;
/// Text handed to the (parallel) tokenizer at once.
const BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Source {
    /// Where the text was read, for the reader's information (not part of the key).
    path: PathBuf,
    bytes: u64,
    sha256: String,
}

/// What decides whether shards can be reused: the sources' contents, in order.
fn content_key(sources: &[Source]) -> Vec<(&str, u64)> {
    sources
        .iter()
        .map(|s| (s.sha256.as_str(), s.bytes))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ShardInfo {
    name: String,
    tokens: u64,
    sentences: u64,
    documents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    format: u32,
    tokenizer_hash: String,
    sources: Vec<Source>,
    shards: Vec<ShardInfo>,
    /// Lines skipped because they were not UTF-8, as "file:line".
    skipped_lines: Vec<String>,
}

/// A contiguous run of ids inside one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub shard: u32,
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

struct Shard {
    info: ShardInfo,
    tokens: Mmap,
    sentence_ends: Mmap,
    document_ends: Mmap,
}

/// A tokenized corpus, memory-mapped.
pub struct TokenizedCorpus {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Documents before each shard, for addressing documents globally.
    first_document: Vec<usize>,
    skipped_lines: Vec<String>,
    /// Whether this call tokenized the text (false: the shards on disk were reused).
    pub built: bool,
    fingerprint: String,
}

impl TokenizedCorpus {
    /// Opens the tokenized corpus in `dir` if it was made from these files with this tokenizer,
    /// else tokenizes `files` (text, folders or JSONL, as [`read_corpus`](crate::data::read_corpus) reads them) into it.
    pub fn prepare(files: &[PathBuf], tokenizer: &Tokenizer, dir: &Path) -> Result<Self> {
        Self::prepare_with_limit(files, tokenizer, dir, crate::io::MAX_LINE_BYTES)
    }

    /// [`prepare`](Self::prepare) reading lines of at most `max_line_bytes`.
    pub fn prepare_with_limit(
        files: &[PathBuf],
        tokenizer: &Tokenizer,
        dir: &Path,
        max_line_bytes: usize,
    ) -> Result<Self> {
        let _building = lock_beside(dir)?;
        let sources = sources(files)?;
        let tokenizer_hash = sha256_of(&[tokenizer.to_json(false)?.as_bytes()]);
        if dir.join(INDEX).is_file()
            && let Ok(index) = crate::io::read_json::<Index>(&dir.join(INDEX))
            && index.format == FORMAT
            && index.tokenizer_hash == tokenizer_hash
            && content_key(&index.sources) == content_key(&sources)
        {
            return Self::open_index(dir, index, false);
        }
        let index = build(
            files,
            tokenizer,
            dir,
            sources,
            tokenizer_hash,
            max_line_bytes,
        )?;
        Self::open_index(dir, index, true)
    }

    /// A hash of what the ids were made from: the sources' contents and the tokenizer.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn open_index(dir: &Path, index: Index, built: bool) -> Result<Self> {
        if index.format != FORMAT {
            return Err(Error::invalid(format!(
                "{}: format {} (this ptm reads {FORMAT})",
                dir.join(INDEX).display(),
                index.format
            )));
        }
        let mut shards = Vec::new();
        let mut first_document = Vec::new();
        let mut documents = 0;
        for info in index.shards {
            let map = |ext: &str, width: u64, count: u64| -> Result<Mmap> {
                let path = dir.join(format!("{}.{ext}", info.name));
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
                if len != width * count {
                    return Err(Error::invalid(format!(
                        "{}: {len} bytes, the index says {}",
                        path.display(),
                        width * count
                    )));
                }
                // SAFETY: read-only map of a file only ptm writes, and only under a temp name.
                unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))
            };
            first_document.push(documents);
            documents += info.documents as usize;
            shards.push(Shard {
                tokens: map("tokens", 4, info.tokens)?,
                sentence_ends: map("sentences", 8, info.sentences)?,
                document_ends: map("documents", 8, info.documents)?,
                info,
            });
        }
        if documents == 0 {
            return Err(Error::invalid(format!(
                "the corpus in {} has no text",
                dir.display()
            )));
        }
        let mut parts: Vec<&[u8]> = vec![index.tokenizer_hash.as_bytes()];
        parts.extend(index.sources.iter().map(|s| s.sha256.as_bytes()));
        Ok(TokenizedCorpus {
            dir: dir.to_path_buf(),
            shards,
            first_document,
            fingerprint: sha256_of(&parts),
            skipped_lines: index.skipped_lines,
            built,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn num_tokens(&self) -> usize {
        self.shards.iter().map(|s| s.info.tokens as usize).sum()
    }

    pub fn num_documents(&self) -> usize {
        self.shards.iter().map(|s| s.info.documents as usize).sum()
    }

    /// "file:line" of every line skipped because it was not UTF-8.
    pub fn skipped_lines(&self) -> &[String] {
        &self.skipped_lines
    }

    /// The ids of a span.
    pub fn ids(&self, span: Span) -> Vec<u32> {
        let bytes = &self.shards[span.shard as usize].tokens
            [span.start as usize * 4..span.end as usize * 4];
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// The sentences of document `doc` (counted over the whole corpus), in order.
    pub fn document(&self, doc: usize) -> Vec<Span> {
        let shard_no = self.first_document.partition_point(|&f| f <= doc) - 1;
        let shard = &self.shards[shard_no];
        let local = doc - self.first_document[shard_no];
        let first_sentence = if local == 0 {
            0
        } else {
            read_u64(&shard.document_ends, local - 1)
        };
        let last_sentence = read_u64(&shard.document_ends, local);
        (first_sentence..last_sentence)
            .map(|s| Span {
                shard: shard_no as u32,
                start: if s == 0 {
                    0
                } else {
                    read_u64(&shard.sentence_ends, s as usize - 1)
                },
                end: read_u64(&shard.sentence_ends, s as usize),
            })
            .collect()
    }

    /// Each shard's length in ids.
    fn shard_tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.shards.iter().map(|s| s.info.tokens)
    }
}

fn read_u64(map: &Mmap, i: usize) -> u64 {
    let b = &map[i * 8..i * 8 + 8];
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Holds `.NAME.lock` beside `dir` until dropped: one process builds, the others wait and then
/// find its shards.
fn lock_beside(dir: &Path) -> Result<std::fs::File> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let path = dir.with_file_name(format!(".{name}.lock"));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::io::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.lock().map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

fn sources(files: &[PathBuf]) -> Result<Vec<Source>> {
    corpus_files(files)?
        .into_iter()
        .map(|path| {
            let bytes = std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
            Ok(Source {
                sha256: file_sha256(&path)?,
                path: std::path::absolute(&path).unwrap_or(path),
                bytes,
            })
        })
        .collect()
}

/// Splits a document into sentences whose concatenation is the document: a cut follows a run
/// of . ! ? (and closing quotes or brackets) when whitespace comes next, and follows 。！？
/// always. The whitespace stays at the start of the next sentence, so byte-level BPE sees the
/// same words as in the whole document.
pub fn split_sentences(doc: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = doc.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let cjk = matches!(c, '。' | '！' | '？');
        if !(cjk || matches!(c, '.' | '!' | '?')) {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if matches!(
                d,
                '.' | '!'
                    | '?'
                    | '。'
                    | '！'
                    | '？'
                    | '"'
                    | '\''
                    | ')'
                    | ']'
                    | '’'
                    | '”'
                    | '」'
                    | '』'
            ) {
                end = j + d.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let next_is_space = chars.peek().is_none_or(|&(_, d)| d.is_whitespace());
        if (cjk || next_is_space) && end > start {
            out.push(&doc[start..end]);
            start = end;
        }
    }
    if start < doc.len() {
        out.push(&doc[start..]);
    }
    out
}

/// Writes shards as documents arrive.
struct ShardWriter {
    dir: PathBuf,
    done: Vec<ShardInfo>,
    current: Option<(ShardInfo, [BufWriter<std::fs::File>; 3])>,
}

impl ShardWriter {
    fn document(&mut self, sentences: &[Vec<u32>]) -> Result<()> {
        if sentences.iter().all(Vec::is_empty) {
            return Ok(());
        }
        if self.current.is_none() {
            let name = format!("shard-{:05}", self.done.len());
            let open = |ext: &str| -> Result<BufWriter<std::fs::File>> {
                let path = self.dir.join(format!("{name}.{ext}"));
                Ok(BufWriter::new(
                    std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?,
                ))
            };
            let files = [open("tokens")?, open("sentences")?, open("documents")?];
            self.current = Some((
                ShardInfo {
                    name,
                    tokens: 0,
                    sentences: 0,
                    documents: 0,
                },
                files,
            ));
        }
        let Some((info, [tokens, sentence_ends, document_ends])) = &mut self.current else {
            unreachable!("opened above")
        };
        let io = |e| Error::io(&self.dir, e);
        for s in sentences.iter().filter(|s| !s.is_empty()) {
            for id in s {
                tokens.write_all(&id.to_le_bytes()).map_err(io)?;
            }
            info.tokens += s.len() as u64;
            sentence_ends
                .write_all(&info.tokens.to_le_bytes())
                .map_err(io)?;
            info.sentences += 1;
        }
        document_ends
            .write_all(&info.sentences.to_le_bytes())
            .map_err(io)?;
        info.documents += 1;
        if info.tokens >= SHARD_TOKENS {
            self.finish_shard()?;
        }
        Ok(())
    }

    fn finish_shard(&mut self) -> Result<()> {
        if let Some((info, files)) = self.current.take() {
            for f in files {
                let file = f
                    .into_inner()
                    .map_err(|e| Error::io(&self.dir, e.into_error()))?;
                file.sync_all().map_err(|e| Error::io(&self.dir, e))?;
            }
            self.done.push(info);
        }
        Ok(())
    }
}

fn build(
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    dir: &Path,
    sources: Vec<Source>,
    tokenizer_hash: String,
    max_line_bytes: usize,
) -> Result<Index> {
    let mut index = None;
    crate::io::write_dir_atomically(dir, |tmp| {
        let mut writer = ShardWriter {
            dir: tmp.to_path_buf(),
            done: Vec::new(),
            current: None,
        };
        let mut pending: Vec<String> = Vec::new();
        let mut pending_bytes = 0;
        let flush = |pending: &mut Vec<String>, writer: &mut ShardWriter| -> Result<()> {
            let split: Vec<Vec<&str>> = pending.iter().map(|d| split_sentences(d)).collect();
            let flat: Vec<&str> = split.iter().flatten().copied().collect();
            let mut ids = tokenizer.encode_plain(&flat)?.into_iter();
            for doc in &split {
                let sentences: Vec<Vec<u32>> = ids.by_ref().take(doc.len()).collect();
                writer.document(&sentences)?;
            }
            pending.clear();
            Ok(())
        };
        let report = read_corpus_with_limit(files, max_line_bytes, |doc| {
            pending_bytes += doc.len();
            pending.push(doc);
            if pending_bytes >= BATCH_BYTES {
                flush(&mut pending, &mut writer)?;
                pending_bytes = 0;
            }
            Ok(())
        })?;
        flush(&mut pending, &mut writer)?;
        writer.finish_shard()?;
        if writer.done.is_empty() {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            return Err(Error::invalid(format!(
                "the corpus {} has no text",
                names.join(", ")
            )));
        }
        let built = Index {
            format: FORMAT,
            tokenizer_hash,
            sources,
            shards: writer.done,
            skipped_lines: report
                .skipped_lines
                .iter()
                .map(|(f, l)| format!("{}:{l}", f.display()))
                .collect(),
        };
        let json = serde_json::to_string_pretty(&built).map_err(|source| Error::Json {
            path: tmp.join(INDEX),
            cause: source,
        })?;
        crate::io::write_atomic(&tmp.join(INDEX), json.as_bytes())?;
        index = Some(built);
        Ok(())
    })?;
    index.ok_or_else(|| Error::internal("the tokenized corpus was not written"))
}

/// A list of token-id examples, produced on demand.
pub trait Examples: Sync {
    fn num_examples(&self) -> usize;
    fn example(&self, i: usize) -> Vec<u32>;
}

impl Examples for Vec<Vec<u32>> {
    fn num_examples(&self) -> usize {
        self.len()
    }

    fn example(&self, i: usize) -> Vec<u32> {
        self[i].clone()
    }
}

/// Fixed-length blocks of each shard's documents concatenated, the remainder dropped (as
/// transformers' run_clm groups texts), optionally wrapped in `[CLS]` ... `[SEP]` for masked LM.
pub struct Blocks<'a> {
    corpus: &'a TokenizedCorpus,
    len: usize,
    wrap: Option<(u32, u32)>,
    /// Blocks before each shard.
    first: Vec<usize>,
    total: usize,
}

impl<'a> Blocks<'a> {
    /// Blocks of `len` ids; with `wrap = Some((cls, sep))` each example is `len + 2` long.
    pub fn new(corpus: &'a TokenizedCorpus, len: usize, wrap: Option<(u32, u32)>) -> Result<Self> {
        if len == 0 {
            return Err(Error::invalid("a block length of 0"));
        }
        let mut first = Vec::new();
        let mut total = 0;
        for tokens in corpus.shard_tokens() {
            first.push(total);
            total += tokens as usize / len;
        }
        Ok(Blocks {
            corpus,
            len,
            wrap,
            first,
            total,
        })
    }
}

impl Examples for Blocks<'_> {
    fn num_examples(&self) -> usize {
        self.total
    }

    fn example(&self, i: usize) -> Vec<u32> {
        let shard = self.first.partition_point(|&f| f <= i) - 1;
        let start = ((i - self.first[shard]) * self.len) as u64;
        let ids = self.corpus.ids(Span {
            shard: shard as u32,
            start,
            end: start + self.len as u64,
        });
        match self.wrap {
            Some((cls, sep)) => std::iter::once(cls)
                .chain(ids)
                .chain(std::iter::once(sep))
                .collect(),
            None => ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_cover_the_document() {
        let doc = "Mr. Darcy said \"No.\" Then he left! Is it? Yes 3.5 times…  End";
        let s = split_sentences(doc);
        assert_eq!(s.concat(), doc);
        assert_eq!(
            s,
            [
                "Mr.",
                " Darcy said \"No.\"",
                " Then he left!",
                " Is it?",
                " Yes 3.5 times…  End"
            ]
        );
        let zh = "床前明月光。疑是地上霜！举头望明月";
        assert_eq!(
            split_sentences(zh),
            ["床前明月光。", "疑是地上霜！", "举头望明月"]
        );
        assert!(split_sentences("").is_empty());
    }

    #[test]
    fn shards_round_trip_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("a.txt");
        std::fs::write(
            &text,
            "One two. Three four five.\n\nSix seven eight nine.\n\n \n\nten eleven\n",
        )
        .unwrap();
        let tok = crate::tokenizer::Tokenizer::from_dir(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizer"),
        )
        .unwrap();
        let cache = dir.path().join("tok");
        let c = TokenizedCorpus::prepare(std::slice::from_ref(&text), &tok, &cache).unwrap();
        assert!(c.built);
        assert_eq!(c.num_documents(), 3);
        let whole = tok
            .encode_plain(&[
                "One two. Three four five.",
                "Six seven eight nine.",
                "ten eleven",
            ])
            .unwrap();
        assert_eq!(c.num_tokens(), whole.iter().map(Vec::len).sum::<usize>());
        for (d, ids) in whole.iter().enumerate() {
            let got: Vec<u32> = c.document(d).into_iter().flat_map(|s| c.ids(s)).collect();
            assert_eq!(&got, ids);
        }
        assert_eq!(c.document(0).len(), 2);
        let blocks = Blocks::new(&c, 3, Some((2, 3))).unwrap();
        assert_eq!(blocks.num_examples(), c.num_tokens() / 3);
        let all: Vec<u32> = whole.concat();
        assert_eq!(blocks.example(1), [&[2][..], &all[3..6], &[3]].concat());
        drop(c);
        assert!(
            !TokenizedCorpus::prepare(std::slice::from_ref(&text), &tok, &cache)
                .unwrap()
                .built
        );
        // A source edited at the same size with its modification time put back (cp -p,
        // rsync -t) is tokenized again: the key is the content.
        let before = std::fs::metadata(&text).unwrap().modified().unwrap();
        let edited = std::fs::read_to_string(&text)
            .unwrap()
            .replace("two", "TWO");
        std::fs::write(&text, edited).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&text)
            .unwrap()
            .set_modified(before)
            .unwrap();
        let c = TokenizedCorpus::prepare(std::slice::from_ref(&text), &tok, &cache).unwrap();
        assert!(c.built, "same size and time, other content");
        let moved = dir.path().join("moved.txt");
        std::fs::copy(&text, &moved).unwrap();
        let again = TokenizedCorpus::prepare(std::slice::from_ref(&moved), &tok, &cache).unwrap();
        assert!(
            !again.built,
            "the same content elsewhere is the same corpus"
        );
        assert_eq!(again.fingerprint(), c.fingerprint());
        drop((c, again));
        // A changed source is tokenized again.
        std::fs::write(&text, "Something else entirely, and longer.\n").unwrap();
        let c = TokenizedCorpus::prepare(std::slice::from_ref(&text), &tok, &cache).unwrap();
        assert!(c.built && c.num_documents() == 1);
        std::fs::write(&text, "\n\n").unwrap();
        let err = TokenizedCorpus::prepare(std::slice::from_ref(&text), &tok, &cache)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("has no text") && err.contains("a.txt"),
            "{err}"
        );
    }
}
