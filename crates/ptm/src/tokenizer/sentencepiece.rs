//! SentencePiece `spiece.model` files (XLNet, ALBERT) read into a `tokenizers` pipeline the way
//! transformers (5.x) builds an `XLNetTokenizer` from one: the Unigram pieces and scores, quote
//! and accent normalisation then the model's own precompiled normalisation, whitespace split and
//! Metaspace pre-tokenisation, and XLNet's `X <sep> <cls>` template with `<cls>` in segment 2.
//!
//! The file is a protobuf `ModelProto`. ptm reads the few fields it needs with a small wire-format
//! reader rather than a protobuf crate: the schema is fixed, and prost's code generation would
//! add a build step and minutes of compile time for three messages.

use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::AddedToken;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{
    Lowercase, NFKD, NormalizerWrapper, Precompiled, Replace, Sequence, StripAccents,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;

use super::SpecialTokens;
use crate::error::{Error, Result};

pub const SPIECE_MODEL: &str = "spiece.model";

/// A piece's type in `ModelProto.SentencePiece.Type`.
const PIECE_UNKNOWN: u64 = 2;
const PIECE_CONTROL: u64 = 3;
/// `TrainerSpec.ModelType`.
const MODEL_UNIGRAM: u64 = 1;

/// What ptm reads of a `ModelProto`.
#[derive(Debug, Default)]
struct SpModel {
    /// (piece, score, type)
    pieces: Vec<(String, f32, u64)>,
    model_type: Option<u64>,
    unk_id: Option<u64>,
    byte_fallback: bool,
    precompiled_charsmap: Vec<u8>,
    add_dummy_prefix: Option<bool>,
}

/// A protobuf wire-format cursor.
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Wire { bytes, at: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// The next (field number, value); `Ok(None)` at the end, `Err` on a malformed message.
    fn next(&mut self) -> std::result::Result<Option<(u64, Field<'a>)>, String> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let bad = |at: usize| format!("malformed protobuf at byte {at}");
        let at = self.at;
        let key = self.varint().ok_or_else(|| bad(at))?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint().ok_or_else(|| bad(at))?),
            1 => {
                self.take(8).ok_or_else(|| bad(at))?;
                Field::Other
            }
            2 => {
                let n = self.varint().ok_or_else(|| bad(at))? as usize;
                Field::Bytes(self.take(n).ok_or_else(|| bad(at))?)
            }
            5 => {
                let b = self.take(4).ok_or_else(|| bad(at))?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => return Err(format!("unsupported protobuf wire type {t} at byte {at}")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn parse(bytes: &[u8]) -> std::result::Result<SpModel, String> {
    let mut m = SpModel::default();
    let mut top = Wire::new(bytes);
    while let Some((num, field)) = top.next()? {
        match (num, field) {
            (1, Field::Bytes(b)) => {
                let (mut piece, mut score, mut kind) = (None, 0f32, 1u64);
                let mut w = Wire::new(b);
                while let Some(f) = w.next()? {
                    match f {
                        (1, Field::Bytes(s)) => {
                            piece = Some(
                                String::from_utf8(s.to_vec())
                                    .map_err(|_| "a piece is not UTF-8")?,
                            )
                        }
                        (2, Field::Fixed32(s)) => score = f32::from_bits(s),
                        (3, Field::Varint(t)) => kind = t,
                        _ => {}
                    }
                }
                m.pieces
                    .push((piece.ok_or("a piece without text")?, score, kind));
            }
            (2, Field::Bytes(b)) => {
                let mut w = Wire::new(b);
                while let Some(f) = w.next()? {
                    match f {
                        (3, Field::Varint(t)) => m.model_type = Some(t),
                        (35, Field::Varint(v)) => m.byte_fallback = v != 0,
                        (40, Field::Varint(v)) => m.unk_id = Some(v),
                        _ => {}
                    }
                }
            }
            (3, Field::Bytes(b)) => {
                let mut w = Wire::new(b);
                while let Some(f) = w.next()? {
                    match f {
                        (2, Field::Bytes(c)) => m.precompiled_charsmap = c.to_vec(),
                        (3, Field::Varint(v)) => m.add_dummy_prefix = Some(v != 0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err("no pieces (is this a SentencePiece model?)".into());
    }
    Ok(m)
}

/// Checks a `precompiled_charsmap` (a double-array trie of u32 units, then NUL-separated
/// replacement strings) before `spm_precompiled` reads it: that crate allocates the trie size
/// it is given, and indexes the trie and the strings unchecked while normalising, so a
/// malformed map would take memory or panic at the first encode. Every node a walk over any
/// input bytes can reach must be in the trie, and every replacement must start on a character
/// of the strings.
pub(crate) fn check_charsmap(map: &[u8]) -> std::result::Result<(), String> {
    let (head, rest) = map
        .split_first_chunk::<4>()
        .ok_or("shorter than its 4-byte trie size")?;
    let trie_bytes = u32::from_le_bytes(*head) as usize;
    if trie_bytes > rest.len() || !trie_bytes.is_multiple_of(4) {
        return Err(format!(
            "a trie of {trie_bytes} bytes does not fit the {} bytes after its size",
            rest.len()
        ));
    }
    let (trie, strings) = rest.split_at(trie_bytes);
    let units: Vec<usize> = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let strings = std::str::from_utf8(strings).map_err(|_| "the replacements are not UTF-8")?;
    // spm_precompiled's (darts-clone's) unit layout.
    let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
    let label = |u: usize| u & ((1 << 31) | 0xff);
    let has_leaf = |u: usize| (u >> 8) & 1 == 1;
    let value = |u: usize| u & ((1 << 31) - 1);
    let root = *units.first().ok_or("an empty trie")?;
    // A walk at state `s` reads unit `s ^ c` for any input byte c in 1..=255, so a reachable
    // state must have all 255 of those in the trie: it is below units.len() + 256.
    let mut seen = vec![false; units.len() + 256];
    let mut todo = vec![offset(root)];
    while let Some(s) = todo.pop() {
        match seen.get_mut(s) {
            Some(true) => continue,
            Some(v) => *v = true,
            None => return Err(format!("trie state {s} is outside the trie")),
        }
        for c in 1..=255usize {
            let at = s ^ c;
            let unit = *units
                .get(at)
                .ok_or_else(|| format!("trie node {at} is outside the trie"))?;
            if label(unit) != c {
                continue;
            }
            let next = at ^ offset(unit);
            if has_leaf(unit) {
                let leaf = *units
                    .get(next)
                    .ok_or_else(|| format!("trie leaf {next} is outside the trie"))?;
                let v = value(leaf);
                if !strings.is_char_boundary(v) {
                    return Err(format!(
                        "replacement offset {v} is not a character of the {} bytes of replacements",
                        strings.len()
                    ));
                }
            }
            todo.push(next);
        }
    }
    Ok(())
}

/// XLNet's post-processor: `A <sep> <cls>` and `A <sep> B <sep> <cls>`, segment ids 0, 1 and 2
/// for `<cls>`. Fails naming the token when `<sep>` or `<cls>` has no id.
pub fn xlnet_template(
    tok: &tokenizers::Tokenizer,
    special: &SpecialTokens,
    path: &Path,
) -> Result<tokenizers::processors::template::TemplateProcessing> {
    let id = |role: &str, t: &Option<String>| -> Result<(String, u32)> {
        let t = t.clone().ok_or_else(|| {
            Error::tokenizer(
                path,
                format!("no {role} token configured; XLNet ends every input with <sep> <cls>"),
            )
        })?;
        let i = tok.token_to_id(&t).ok_or_else(|| Error::tokenizer(path, format!("{role} token {t:?} is not in the vocabulary; XLNet ends every input with <sep> <cls>")))?;
        Ok((t, i))
    };
    let (sep, cls) = (id("sep", &special.sep)?, id("cls", &special.cls)?);
    let err = |e: String| Error::tokenizer(path, e);
    let mut b = tokenizers::processors::template::TemplateProcessing::builder();
    b.try_single(format!("$A:0 {}:0 {}:2", sep.0, cls.0))
        .map_err(err)?;
    b.try_pair(format!("$A:0 {}:0 $B:1 {}:1 {}:2", sep.0, sep.0, cls.0))
        .map_err(err)?;
    b.special_tokens(vec![sep, cls]);
    b.build().map_err(|e| Error::tokenizer(path, e))
}

/// The tokenizer of an XLNet-style `spiece.model` with `tokenizer_config.json`'s flags
/// (`do_lower_case`, `keep_accents`), as transformers builds it. Special tokens that are not
/// pieces are appended as added tokens, in transformers' order (ids after the pieces').
pub fn from_spiece(
    path: &Path,
    config: &Map<String, Value>,
    special: &SpecialTokens,
) -> Result<tokenizers::Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let m = parse(&bytes).map_err(|e| Error::tokenizer(path, e))?;
    if m.model_type.unwrap_or(MODEL_UNIGRAM) != MODEL_UNIGRAM {
        return Err(Error::tokenizer(
            path,
            "a BPE SentencePiece model; ptm reads Unigram spiece.model files (XLNet, ALBERT) — give a tokenizer.json for this one",
        ));
    }
    let vocab: Vec<(String, f64)> = m
        .pieces
        .iter()
        .map(|(p, s, _)| (p.clone(), f64::from(*s)))
        .collect();
    let unk_id = m
        .unk_id
        .map(|u| u as usize)
        .or_else(|| m.pieces.iter().position(|p| p.2 == PIECE_UNKNOWN));
    let model =
        Unigram::from(vocab, unk_id, m.byte_fallback).map_err(|e| Error::tokenizer(path, e))?;

    let flag = |k: &str, default: bool| config.get(k).and_then(Value::as_bool).unwrap_or(default);
    let replace = |from: &str, to: &str| -> Result<NormalizerWrapper> {
        Ok(Replace::new(from, to)
            .map_err(|e| Error::tokenizer(path, e))?
            .into())
    };
    let mut normalizers = vec![replace("``", "\"")?, replace("''", "\"")?];
    // transformers 5 strips accents even with keep_accents; ptm honours the flag as 4.x did.
    if !flag("keep_accents", false) {
        normalizers.push(NFKD.into());
        normalizers.push(StripAccents.into());
    }
    if flag("do_lower_case", false) {
        normalizers.push(Lowercase.into());
    }
    if !m.precompiled_charsmap.is_empty() {
        check_charsmap(&m.precompiled_charsmap)
            .map_err(|e| Error::tokenizer(path, format!("precompiled_charsmap: {e}")))?;
        let p = Precompiled::from(&m.precompiled_charsmap)
            .map_err(|e| Error::tokenizer(path, format!("precompiled_charsmap: {e}")))?;
        normalizers.push(p.into());
    }

    let scheme = if m.add_dummy_prefix.unwrap_or(true) {
        PrependScheme::Always
    } else {
        PrependScheme::Never
    };
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_normalizer(Some(Sequence::new(normalizers)))
        .map_err(|e| Error::tokenizer(path, e))?;
    let split: PreTokenizerWrapper = WhitespaceSplit.into();
    tok.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split,
        Metaspace::new('▁', scheme, true).into(),
    ])));
    tok.with_decoder(Some(MetaspaceDecoder::new('▁', scheme, true)));

    // Control pieces (<s>, </s>, <cls>, ...) and every configured special token are special;
    // <mask> takes the space before it, as XLNetTokenizer's AddedToken(lstrip=True).
    let mut specials: Vec<AddedToken> = m
        .pieces
        .iter()
        .filter(|p| p.2 == PIECE_CONTROL || p.2 == PIECE_UNKNOWN)
        .map(|p| AddedToken::from(p.0.clone(), true))
        .collect();
    for (role, t) in special.roles() {
        if let Some(t) = t
            .as_ref()
            .filter(|t| !specials.iter().any(|s| &s.content == *t))
        {
            specials.push(AddedToken::from(t.clone(), true).lstrip(role == "mask_token"));
        }
    }
    tok.add_special_tokens(specials)
        .map_err(|e| Error::tokenizer(path, e))?;
    let template = xlnet_template(&tok, special, path)?;
    tok.with_post_processor(Some(template));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_reader_refuses_truncated_messages() {
        // Field 1, length 5, but only 2 bytes follow.
        assert!(
            parse(&[0x0a, 0x05, b'a', b'b'])
                .unwrap_err()
                .contains("malformed")
        );
        assert!(parse(&[]).unwrap_err().contains("no pieces"));
    }

    #[test]
    fn charsmap_check_refuses_what_spm_precompiled_would_trip_on() {
        // A trie size of 2^31 bytes, which spm_precompiled would allocate.
        let err = check_charsmap(&[0, 0, 0, 0x80, 1, 2]).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(check_charsmap(&[0, 0, 0, 0]).unwrap_err().contains("empty"));
        // One root unit whose children (1..=255) lie outside the trie.
        let err = check_charsmap(&[4, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(err.contains("outside the trie"), "{err}");
    }
}
