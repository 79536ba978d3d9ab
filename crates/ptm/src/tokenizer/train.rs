//! Training a new tokenizer on a corpus with the `tokenizers` crate's trainers, assembled the
//! way transformers' tokenizer classes are: WordPiece as BERT's, byte-level BPE as GPT-2's,
//! Unigram with Metaspace and XLNet's `<sep> <cls>` ending, padded on the left, as XLNet's.

use serde_json::{Map, Value, json};
use tokenizers::AddedToken;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::bert::BertProcessing;

use super::Tokenizer;
use crate::error::{Error, Result};

/// Which kind of tokenizer to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    WordPiece,
    Bpe,
    Unigram,
}

impl TokenizerKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "wordpiece" => Ok(TokenizerKind::WordPiece),
            "bpe" => Ok(TokenizerKind::Bpe),
            "unigram" => Ok(TokenizerKind::Unigram),
            other => Err(Error::invalid(format!(
                "unknown tokenizer kind {other:?}; supported: wordpiece, bpe, unigram"
            ))),
        }
    }
}

/// Trains a tokenizer of about `vocab_size` tokens on `texts`.
pub fn train_tokenizer(
    kind: TokenizerKind,
    vocab_size: usize,
    lowercase: bool,
    texts: impl Iterator<Item = String> + Send,
) -> Result<Tokenizer> {
    crate::limits::check_vocab_size(vocab_size)?;
    let err = |e: tokenizers::Error| Error::invalid(format!("tokenizer training: {e}"));
    // Each kind is trained as the tokenizer of the family the registry names for it.
    let conventions = crate::models::auto::trained_tokenizer_conventions(kind)
        .ok_or_else(|| Error::internal(format!("no family trains a {kind:?} tokenizer")))?;
    let (special, class) = (conventions.special, conventions.class);
    let mut seen = std::collections::HashSet::new();
    let specials: Vec<AddedToken> = special
        .roles()
        .iter()
        .filter_map(|(_, t)| (*t).clone())
        .filter(|t| seen.insert(t.clone()))
        .map(|t| AddedToken::from(t, true))
        .collect();
    let (model, mut trainer): (ModelWrapper, TrainerWrapper) = match kind {
        TokenizerKind::WordPiece => (
            WordPiece::default().into(),
            WordPieceTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(2)
                .special_tokens(specials.clone())
                .show_progress(false)
                .build()
                .into(),
        ),
        TokenizerKind::Bpe => (
            BPE::default().into(),
            BpeTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(2)
                .special_tokens(specials.clone())
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .show_progress(false)
                .build()
                .into(),
        ),
        TokenizerKind::Unigram => (
            Unigram::default().into(),
            UnigramTrainer::builder()
                .vocab_size(vocab_size as u32)
                .special_tokens(specials.clone())
                .unk_token(special.unk.clone())
                .show_progress(false)
                .build()
                .map_err(|e| Error::invalid(format!("tokenizer training: {e}")))?
                .into(),
        ),
    };
    let mut tok = tokenizers::Tokenizer::new(model);
    match kind {
        TokenizerKind::WordPiece => {
            tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
                .map_err(err)?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            tok.with_decoder(Some(WordPieceDecoder::default()));
        }
        TokenizerKind::Bpe => {
            tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            tok.with_decoder(Some(ByteLevelDecoder::default()));
        }
        TokenizerKind::Unigram => {
            tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
            tok.with_decoder(Some(MetaspaceDecoder::new(
                '▁',
                PrependScheme::Always,
                true,
            )));
        }
    }
    tok.train(&mut trainer, texts).map_err(err)?;
    tok.add_special_tokens(specials).map_err(err)?;
    if kind == TokenizerKind::WordPiece {
        let id = |t: &Option<String>| -> Result<(String, u32)> {
            let t = t.clone().unwrap_or_default();
            let i = tok
                .token_to_id(&t)
                .ok_or_else(|| Error::internal(format!("trained vocabulary lacks {t}")))?;
            Ok((t, i))
        };
        let processor = BertProcessing::new(id(&special.sep)?, id(&special.cls)?);
        tok.with_post_processor(Some(processor));
    }
    if kind == TokenizerKind::Unigram {
        let template = super::sentencepiece::xlnet_template(
            &tok,
            &special,
            std::path::Path::new("(trained)"),
        )?;
        tok.with_post_processor(Some(template));
    }
    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!(class));
    if kind == TokenizerKind::WordPiece {
        config.insert("do_lower_case".into(), Value::Bool(lowercase));
    }
    Ok(Tokenizer::from_parts(tok, special, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let base = [
            "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
            "However little known the feelings or views of such a man may be on his first entering a neighbourhood.",
            "我爱北京天安门，天安门上太阳升。",
        ];
        base.iter()
            .cycle()
            .take(300)
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn every_kind_trains_saves_and_reloads() {
        for kind in [
            TokenizerKind::WordPiece,
            TokenizerKind::Bpe,
            TokenizerKind::Unigram,
        ] {
            // Byte-level BPE starts from the 256 bytes, so the target must be above that.
            let tok = train_tokenizer(kind, 300, true, corpus().into_iter()).unwrap();
            assert!(
                tok.vocab_size() <= 310 && tok.vocab_size() > 20,
                "{kind:?}: {}",
                tok.vocab_size()
            );
            let dir = tempfile::tempdir().unwrap();
            tok.save(dir.path()).unwrap();
            let back = Tokenizer::from_dir(dir.path()).unwrap();
            let text = "a single man in possession";
            let a = tok.encode_batch(&[text]).unwrap();
            let b = back.encode_batch(&[text]).unwrap();
            assert_eq!(
                a.encodings[0].get_ids(),
                b.encodings[0].get_ids(),
                "{kind:?}"
            );
            let decoded = back.decode(b.encodings[0].get_ids(), true).unwrap();
            assert_eq!(decoded.trim(), text, "{kind:?}");
            if kind == TokenizerKind::WordPiece {
                assert_eq!(
                    back.special_id(|s| &s.cls),
                    Some(b.encodings[0].get_ids()[0])
                );
            }
        }
        assert!(TokenizerKind::parse("sentencepiece").is_err());
    }
}
