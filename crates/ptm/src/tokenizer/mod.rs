//! Tokenizers: a thin layer over the `tokenizers` crate that loads a model directory's files
//! as transformers does (`tokenizer.json`, or WordPiece built from `vocab.txt` and
//! `tokenizer_config.json`), encodes batches of texts or pairs with truncation and padding,
//! decodes, and saves what `transformers` loads back.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{Map, Value, json};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, EncodeInput, Encoding, PaddingDirection, PaddingParams, PaddingStrategy,
    PostProcessor, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};
use crate::models::EncoderInput;

mod sentencepiece;
mod train;

pub use sentencepiece::SPIECE_MODEL;
pub use train::{TokenizerKind, train_tokenizer};

pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
pub const VOCAB_TXT: &str = "vocab.txt";
pub const VOCAB_JSON: &str = "vocab.json";
pub const MERGES_TXT: &str = "merges.txt";

/// The special tokens transformers' tokenizer classes know by role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecialTokens {
    pub unk: Option<String>,
    pub sep: Option<String>,
    pub pad: Option<String>,
    pub cls: Option<String>,
    pub mask: Option<String>,
    pub bos: Option<String>,
    pub eos: Option<String>,
}

impl SpecialTokens {
    fn roles(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("unk_token", &self.unk),
            ("sep_token", &self.sep),
            ("pad_token", &self.pad),
            ("cls_token", &self.cls),
            ("mask_token", &self.mask),
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
        ]
    }

    /// Overrides roles named in a `tokenizer_config.json` / `special_tokens_map.json` object;
    /// a token may be a string or an `AddedToken` object with `content`.
    fn update_from(&mut self, map: &Map<String, Value>) {
        let get = |k: &str| match map.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        for (key, slot) in [
            ("unk_token", &mut self.unk),
            ("sep_token", &mut self.sep),
            ("pad_token", &mut self.pad),
            ("cls_token", &mut self.cls),
            ("mask_token", &mut self.mask),
            ("bos_token", &mut self.bos),
            ("eos_token", &mut self.eos),
        ] {
            if let Some(v) = get(key) {
                *slot = Some(v);
            }
        }
    }
}

/// A family's tokenizer as transformers' tokenizer class defines it: what applies where the
/// files leave a special token or the padding side unsaid. Families give theirs
/// (`crate::models::auto`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerConventions {
    /// transformers' class (`tokenizer_class`, without `Fast`).
    pub class: &'static str,
    pub special: SpecialTokens,
    pub padding_left: bool,
    /// The algorithm `ptm tokenizer train` builds this family's tokenizer with, for the one
    /// family each kind is trained for.
    pub trains: Option<TokenizerKind>,
}

/// How a batch is padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// To the longest sequence of the batch.
    Longest,
    /// To exactly this length.
    Fixed(usize),
    None,
}

/// How a batch is padded to one length: the padding id and the side (segment 0, as
/// transformers pads both BERT and XLNet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadSpec {
    pub id: u32,
    /// Padding goes before the tokens (XLNet, whose sequence summary reads the last position).
    pub left: bool,
}

impl PadSpec {
    /// The same id padded on the right: for heads that read every position (token
    /// classification, answer spans), where an encoder's output does not depend on the side.
    pub fn on_right(self) -> Self {
        PadSpec {
            left: false,
            ..self
        }
    }
}

/// A loaded tokenizer with its truncation and padding settings.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    special: SpecialTokens,
    /// `padding_side` of tokenizer_config.json, else the class's (left for XLNet).
    pad_left: bool,
    /// `model_max_length` from tokenizer_config.json, when it names a real limit.
    model_max_length: Option<usize>,
    /// tokenizer_config.json as read, written back on save.
    config: Map<String, Value>,
}

/// The encodings of a batch, all of one length when padded.
pub struct BatchEncoding {
    pub encodings: Vec<Encoding>,
}

impl Tokenizer {
    /// Loads the tokenizer of a directory; its `tokenizer_class` (or else its algorithm) says
    /// which conventions fill what the files leave unsaid.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_dir_with(dir, None)
    }

    /// Loads the tokenizer of a model directory with `family`'s conventions where the files
    /// name no tokenizer class.
    pub fn from_dir_with(dir: &Path, family: Option<&TokenizerConventions>) -> Result<Self> {
        let config_path = dir.join(TOKENIZER_CONFIG);
        let config: Map<String, Value> = if config_path.is_file() {
            crate::io::read_json(&config_path)?
        } else {
            Map::new()
        };
        // Special tokens named in special_tokens_map.json, overridden by tokenizer_config.json.
        let map_path = dir.join(SPECIAL_TOKENS_MAP);
        let mut named: Map<String, Value> = if map_path.is_file() {
            crate::io::read_json(&map_path)?
        } else {
            Map::new()
        };
        named.extend(config.clone());

        // The class the files name, else the model's family, else the family whose tokenizer
        // is of this algorithm.
        let known = class_conventions(&config).or_else(|| family.cloned());
        let conventions = |kind: Option<TokenizerKind>| {
            known
                .clone()
                .or_else(|| kind.and_then(crate::models::auto::trained_tokenizer_conventions))
        };
        let json_path = dir.join(TOKENIZER_JSON);
        let spiece_path = dir.join(SPIECE_MODEL);
        let vocab_path = dir.join(VOCAB_TXT);
        let (bpe_vocab, merges) = (dir.join(VOCAB_JSON), dir.join(MERGES_TXT));
        let (inner, source, special) = if json_path.is_file() {
            let text = crate::io::read_to_string(&json_path)?;
            // JSON errors are reported here: tokenizers 0.23 panics on a syntax error inside
            // its "decoder" object instead of returning it.
            let value: Value = serde_json::from_str(&text).map_err(|cause| Error::Json {
                path: json_path.clone(),
                cause,
            })?;
            check_tokenizer_json(&value, &json_path)?;
            let t: tokenizers::Tokenizer =
                text.parse().map_err(|e| Error::tokenizer(&json_path, e))?;
            let kind = match t.get_model() {
                tokenizers::ModelWrapper::WordPiece(_) => Some(TokenizerKind::WordPiece),
                tokenizers::ModelWrapper::BPE(_) => Some(TokenizerKind::Bpe),
                tokenizers::ModelWrapper::Unigram(_) => Some(TokenizerKind::Unigram),
                _ => None,
            };
            let mut special = conventions(kind).map(|c| c.special).unwrap_or_default();
            special.update_from(&named);
            (t, json_path, special)
        } else if spiece_path.is_file() {
            let mut special = conventions(Some(TokenizerKind::Unigram))
                .map(|c| c.special)
                .unwrap_or_default();
            special.update_from(&named);
            (
                sentencepiece::from_spiece(&spiece_path, &config, &special)?,
                spiece_path,
                special,
            )
        } else if vocab_path.is_file() {
            let mut special = conventions(Some(TokenizerKind::WordPiece))
                .map(|c| c.special)
                .unwrap_or_default();
            special.update_from(&named);
            (
                wordpiece_from_vocab(&vocab_path, &config, &special)?,
                vocab_path,
                special,
            )
        } else if bpe_vocab.is_file() && merges.is_file() {
            let mut special = conventions(Some(TokenizerKind::Bpe))
                .map(|c| c.special)
                .unwrap_or_default();
            special.update_from(&named);
            (
                byte_level_bpe(&bpe_vocab, &merges, &config, &special)?,
                bpe_vocab,
                special,
            )
        } else {
            return Err(Error::tokenizer(
                dir,
                format!(
                    "no tokenizer found (looked for {TOKENIZER_JSON}, {SPIECE_MODEL}, {VOCAB_TXT}, {VOCAB_JSON} + {MERGES_TXT})"
                ),
            ));
        };
        check_ids(&inner, &source)?;
        // transformers writes 1e30 for "no limit".
        let model_max_length = config
            .get("model_max_length")
            .and_then(Value::as_f64)
            .filter(|v| *v > 0.0 && *v < 1e9)
            .map(|v| v as usize);
        let default_left = default_padding_left(known.as_ref(), &inner);
        let pad_left = match config.get("padding_side").and_then(Value::as_str) {
            Some("left") => true,
            Some("right") => false,
            Some(other) => {
                return Err(Error::config(
                    config_path,
                    "padding_side",
                    format!("{other:?} is neither \"left\" nor \"right\""),
                ));
            }
            None => default_left,
        };
        let mut tok = Tokenizer {
            inner,
            source,
            special,
            pad_left,
            model_max_length,
            config,
        };
        tok.set_truncation(None)?;
        tok.set_padding(Padding::Longest)?;
        Ok(tok)
    }

    /// A tokenizer built in code (e.g. just trained), with its special tokens and the
    /// tokenizer_config.json fields to save.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        special: SpecialTokens,
        config: Map<String, Value>,
    ) -> Self {
        let pad_left = config
            .get("padding_side")
            .and_then(Value::as_str)
            .map_or_else(
                || default_padding_left(class_conventions(&config).as_ref(), &inner),
                |s| s == "left",
            );
        Tokenizer {
            inner,
            source: PathBuf::from("(trained)"),
            special,
            pad_left,
            model_max_length: None,
            config,
        }
    }

    /// The `tokenizers` pipeline underneath (its model, decoder and post-processor), for
    /// what this wrapper does not expose.
    pub fn backend(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of each text without special tokens, unpadded and untruncated.
    pub fn encode_plain(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<EncodeInput> = texts
            .iter()
            .map(|t| EncodeInput::Single((*t).into()))
            .collect();
        let enc = self
            .plain()?
            .encode_batch(inputs, false)
            .map_err(|e| Error::tokenizer(&self.source, e))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The tokenizer without padding or truncation.
    fn plain(&self) -> Result<tokenizers::Tokenizer> {
        let mut plain = self.inner.clone();
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(&self.source, e))?;
        Ok(plain)
    }

    /// tokenizer.json's content (without padding or truncation).
    pub fn to_json(&self, pretty: bool) -> Result<String> {
        self.plain()?
            .to_string(pretty)
            .map_err(|e| Error::tokenizer(&self.source, e))
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// The number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a special token role, e.g. `tok.special_id(|s| &s.mask)`.
    pub fn special_id(&self, role: impl Fn(&SpecialTokens) -> &Option<String>) -> Option<u32> {
        role(&self.special)
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// The padding id (0 when the tokenizer has no pad token, as BERT's `[PAD]` is).
    pub fn pad_id(&self) -> u32 {
        self.special_id(|s| &s.pad).unwrap_or(0)
    }

    /// How batches of this tokenizer's encodings are padded.
    pub fn pad_spec(&self) -> PadSpec {
        PadSpec {
            id: self.pad_id(),
            left: self.pad_left,
        }
    }

    /// Checks every id this tokenizer can produce has a row in an embedding of `vocab_size`.
    pub fn check_fits(&self, vocab_size: usize) -> Result<()> {
        let max_id = self.inner.get_vocab(true).into_values().max().unwrap_or(0) as usize;
        if max_id >= vocab_size {
            return Err(Error::VocabMismatch {
                tokenizer: max_id + 1,
                model: vocab_size,
            });
        }
        Ok(())
    }

    /// Truncates encodings (longest-first for pairs) to `max_length` tokens, special tokens
    /// included; `None` turns truncation off.
    pub fn set_truncation(&mut self, max_length: Option<usize>) -> Result<()> {
        let params = match max_length {
            None => None,
            Some(n) => {
                let added = self
                    .inner
                    .get_post_processor()
                    .map(|p| p.added_tokens(true))
                    .unwrap_or(0);
                if n <= added {
                    return Err(Error::invalid(format!(
                        "max length {n} leaves no room for text after the {added} special tokens"
                    )));
                }
                Some(TruncationParams {
                    max_length: n,
                    strategy: TruncationStrategy::LongestFirst,
                    ..Default::default()
                })
            }
        };
        self.inner
            .with_truncation(params)
            .map_err(|e| Error::tokenizer(&self.source, e))?;
        Ok(())
    }

    /// Padding on the tokenizer's own side.
    pub fn set_padding(&mut self, padding: Padding) -> Result<()> {
        let side = if self.pad_left {
            PaddingDirection::Left
        } else {
            PaddingDirection::Right
        };
        self.set_padding_side(padding, side)
    }

    /// Padding on the given side (decoders pad on the left for generation).
    pub fn set_padding_side(&mut self, padding: Padding, side: PaddingDirection) -> Result<()> {
        let strategy = match padding {
            Padding::None => {
                self.inner.with_padding(None);
                return Ok(());
            }
            Padding::Longest => PaddingStrategy::BatchLongest,
            Padding::Fixed(n) => PaddingStrategy::Fixed(n),
        };
        let pad_token = self.special.pad.clone().unwrap_or_else(|| "[PAD]".into());
        let pad_id = self.pad_id();
        self.inner.with_padding(Some(PaddingParams {
            strategy,
            direction: side,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(())
    }

    /// Encodes texts, adding special tokens (`[CLS]` ... `[SEP]`).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<BatchEncoding> {
        self.encode_inputs(
            texts
                .iter()
                .map(|t| EncodeInput::Single((*t).into()))
                .collect(),
        )
    }

    /// Encodes text pairs (`[CLS]` a `[SEP]` b `[SEP]`, token type 1 on b).
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<BatchEncoding> {
        self.encode_inputs(
            pairs
                .iter()
                .map(|(a, b)| EncodeInput::Dual((*a).into(), (*b).into()))
                .collect(),
        )
    }

    /// Encodes texts already split into words (as transformers' `is_split_into_words=True`):
    /// each encoding's word ids point into its word list.
    pub fn encode_words(&self, sentences: &[Vec<String>]) -> Result<BatchEncoding> {
        self.encode_inputs(
            sentences
                .iter()
                .map(|words| EncodeInput::Single(words.clone().into()))
                .collect(),
        )
    }

    /// Question-answering windows: `question` paired with `context`, only the context cut to
    /// fit `max_length`, consecutive windows overlapping by `stride` tokens (transformers'
    /// `truncation="only_second", return_overflowing_tokens=True`). Unpadded; offsets are byte
    /// offsets into each text.
    pub fn encode_windows(
        &self,
        question: &str,
        context: &str,
        max_length: usize,
        stride: usize,
    ) -> Result<Vec<Encoding>> {
        // The windows are cut here rather than by the tokenizer's truncation: tokenizers 0.23.2
        // cuts the second sequence to max_length before striding, which loses every window
        // past the second.
        let t = self.plain()?;
        let err = |e| Error::tokenizer(&self.source, e);
        let q = t.encode(question.trim_start(), false).map_err(err)?;
        let mut c = t.encode(context, false).map_err(err)?;
        c.set_type_ids(vec![1; c.len()]);
        let added = t.get_post_processor().map_or(0, |p| p.added_tokens(true));
        let room = max_length.saturating_sub(q.len() + added);
        if room <= stride {
            return Err(Error::invalid(format!(
                "a question of {} tokens leaves {room} context tokens per window of {max_length}, not more than the stride {stride}",
                q.len()
            )));
        }
        c.truncate(room, stride, TruncationDirection::Right);
        let merged = t.post_process(q, Some(c), true).map_err(err)?;
        // Windows may nest their successors as their own overflow; flatten in order.
        fn flatten(mut e: Encoding, out: &mut Vec<Encoding>) {
            let rest = e.take_overflowing();
            out.push(e);
            rest.into_iter().for_each(|o| flatten(o, out));
        }
        let mut out = Vec::new();
        flatten(merged, &mut out);
        Ok(out)
    }

    fn encode_inputs(&self, inputs: Vec<EncodeInput>) -> Result<BatchEncoding> {
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::tokenizer(&self.source, e))?;
        Ok(BatchEncoding { encodings })
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::tokenizer(&self.source, e))
    }

    /// Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json (and vocab.txt for
    /// WordPiece) into `dir`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = self.to_json(true)?;
        crate::io::write_atomic(&dir.join(TOKENIZER_JSON), json.as_bytes())?;

        let mut special_map = Map::new();
        for (role, token) in self.special.roles() {
            if let Some(t) = token {
                special_map.insert(role.to_string(), json!(t));
            }
        }
        let mut config = self.config.clone();
        config.extend(special_map.clone());
        if let Some(n) = self.model_max_length {
            config.insert("model_max_length".into(), json!(n));
        }
        config
            .entry("tokenizer_class")
            .or_insert_with(|| json!("PreTrainedTokenizerFast"));
        crate::config::save_json(&Value::Object(config), &dir.join(TOKENIZER_CONFIG))?;
        crate::config::save_json(&Value::Object(special_map), &dir.join(SPECIAL_TOKENS_MAP))?;

        if let tokenizers::ModelWrapper::WordPiece(wp) = self.inner.get_model() {
            let mut vocab: Vec<(String, u32)> =
                tokenizers::Model::get_vocab(wp).into_iter().collect();
            vocab.sort_by_key(|(_, id)| *id);
            let mut text = String::new();
            for (token, _) in vocab {
                text.push_str(&token);
                text.push('\n');
            }
            crate::io::write_atomic(&dir.join(VOCAB_TXT), text.as_bytes())?;
        }
        Ok(())
    }
}

/// Decodes a growing list of ids piece by piece for streaming: each call returns the text
/// added since the last one, holding back a byte-level token that ends in the middle of a
/// UTF-8 character until the character is complete.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// The new complete text after appending `id` (empty while a character is incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        // An incomplete character decodes to U+FFFD at the end; wait for its other bytes.
        if text.ends_with('\u{FFFD}') || !text.is_char_boundary(self.emitted.min(text.len())) {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        Ok(new)
    }
}

/// Refuses token ids far beyond the vocabulary's size: the tokenizers crate walks every id up
/// to the largest when it writes tokenizer.json, so one corrupt id of 2^31 would take minutes
/// and gigabytes. (Ids are normally 0..n; a few holes are allowed.)
fn check_ids(tok: &tokenizers::Tokenizer, path: &Path) -> Result<()> {
    let vocab = tok.get_vocab(true);
    let limit = vocab.len().saturating_mul(2).saturating_add(1024);
    match vocab.iter().max_by_key(|(_, id)| **id) {
        Some((token, id)) if *id as usize >= limit => Err(Error::tokenizer(
            path,
            format!(
                "token {token:?} has id {id}, far beyond the {} tokens of the vocabulary",
                vocab.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks what tokenizers 0.23 reads from tokenizer.json without checking, and would panic or
/// over-allocate on later: every `Precompiled` normaliser (checked as a spiece.model's is) and
/// every `TemplateProcessing` (its special tokens defined, with as many ids as tokens; only
/// `$A` in the single template).
fn check_tokenizer_json(root: &Value, path: &Path) -> Result<()> {
    let mut todo = vec![root];
    while let Some(v) = todo.pop() {
        match v {
            Value::Object(m) => {
                match m.get("type").and_then(Value::as_str) {
                    Some("Precompiled") => {
                        let map = m.get("precompiled_charsmap").and_then(Value::as_str);
                        if let Some(bytes) = map.and_then(base64_decode) {
                            sentencepiece::check_charsmap(&bytes).map_err(|e| {
                                Error::tokenizer(path, format!("precompiled_charsmap: {e}"))
                            })?;
                        }
                    }
                    Some("TemplateProcessing") => check_template(m)
                        .map_err(|e| Error::tokenizer(path, format!("post_processor: {e}")))?,
                    _ => {}
                }
                todo.extend(m.values());
            }
            Value::Array(a) => todo.extend(a),
            _ => {}
        }
    }
    Ok(())
}

/// A `TemplateProcessing` object as tokenizer.json holds it; malformed shapes are left for
/// the tokenizers crate to refuse.
fn check_template(m: &Map<String, Value>) -> std::result::Result<(), String> {
    let specials = m.get("special_tokens").and_then(Value::as_object);
    for (name, t) in specials.into_iter().flatten() {
        let len = |k: &str| t.get(k).and_then(Value::as_array).map(Vec::len);
        if len("ids") != len("tokens") {
            return Err(format!(
                "special token {name:?} has {:?} ids and {:?} tokens",
                len("ids"),
                len("tokens")
            ));
        }
    }
    for (template, sequences) in [("single", &["A"][..]), ("pair", &["A", "B"][..])] {
        let pieces = m.get(template).and_then(Value::as_array);
        for piece in pieces.into_iter().flatten() {
            let special = piece.pointer("/SpecialToken/id").and_then(Value::as_str);
            if let Some(id) = special.filter(|id| !specials.is_some_and(|s| s.contains_key(*id))) {
                return Err(format!(
                    "the {template} template uses {id:?}, which is not in special_tokens"
                ));
            }
            let sequence = piece.pointer("/Sequence/id").and_then(Value::as_str);
            if let Some(id) = sequence.filter(|id| !sequences.contains(id)) {
                return Err(format!("the {template} template uses sequence {id:?}"));
            }
        }
    }
    Ok(())
}

/// Standard base64 up to its padding; `None` on a character outside the alphabet (which the
/// tokenizers crate refuses too).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The conventions of the `tokenizer_class` a tokenizer_config.json names, if ptm knows it.
fn class_conventions(config: &Map<String, Value>) -> Option<TokenizerConventions> {
    config
        .get("tokenizer_class")
        .and_then(Value::as_str)
        .and_then(crate::models::auto::tokenizer_conventions)
}

/// The padding side when tokenizer_config.json names none: the known class's or family's,
/// else left when the template ends with a summary token of its own.
fn default_padding_left(known: Option<&TokenizerConventions>, tok: &tokenizers::Tokenizer) -> bool {
    known.map_or_else(|| summary_token_last(tok), |c| c.padding_left)
}

/// A template that puts its summary token last in a segment of its own (2), as XLNet's
/// `X <sep> <cls>` does: such a model reads the last position, so it is padded on the left.
fn summary_token_last(tok: &tokenizers::Tokenizer) -> bool {
    let one = tok
        .get_post_processor()
        .and_then(|p| p.process(Encoding::default(), None, true).ok());
    one.is_some_and(|e| e.get_type_ids().last() == Some(&2))
}

/// WordPiece as transformers' `BertTokenizerFast` converts a `vocab.txt`: BERT normaliser
/// (clean text, Chinese characters split, accents, lower case), BERT pre-tokeniser,
/// [CLS]/[SEP] template, `##` decoder.
fn wordpiece_from_vocab(
    path: &Path,
    config: &Map<String, Value>,
    special: &SpecialTokens,
) -> Result<tokenizers::Tokenizer> {
    let flag = |k: &str| config.get(k).and_then(Value::as_bool);
    let lowercase = flag("do_lower_case").unwrap_or(true);
    let strip_accents = flag("strip_accents");
    let chinese = flag("tokenize_chinese_chars").unwrap_or(true);
    let unk = special.unk.clone().unwrap_or_else(|| "[UNK]".into());

    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let vocab = WordPiece::read_bytes(&bytes).map_err(|e| Error::tokenizer(path, e))?;
    if vocab.is_empty() {
        return Err(Error::tokenizer(path, "the vocabulary is empty"));
    }
    let id = |role: &str, t: &Option<String>| -> Result<(String, u32)> {
        let t = t
            .clone()
            .ok_or_else(|| Error::tokenizer(path, format!("no {role} token configured")))?;
        let i = *vocab.get(&t).ok_or_else(|| {
            Error::tokenizer(path, format!("{role} token {t:?} is not in the vocabulary"))
        })?;
        Ok((t, i))
    };
    let (sep, cls) = (id("sep", &special.sep)?, id("cls", &special.cls)?);
    id("unk", &Some(unk.clone()))?;

    let model = WordPiece::builder()
        .vocab(vocab.clone())
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| Error::tokenizer(path, e))?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(
        true,
        chinese,
        strip_accents,
        lowercase,
    )))
    .map_err(|e| Error::tokenizer(path, e))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(sep, cls)));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = special
        .roles()
        .iter()
        .filter_map(|(_, t)| t.as_ref())
        .filter(|t| vocab.contains_key(*t))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| Error::tokenizer(path, e))?;
    Ok(tok)
}

/// Byte-level BPE as transformers' `GPT2Tokenizer` builds it from `vocab.json` and
/// `merges.txt`: byte-level pre-tokeniser and decoder, no post-processor.
fn byte_level_bpe(
    vocab: &Path,
    merges: &Path,
    config: &Map<String, Value>,
    special: &SpecialTokens,
) -> Result<tokenizers::Tokenizer> {
    let path = |p: &Path| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| Error::tokenizer(p, "path is not UTF-8"))
    };
    let model = tokenizers::models::bpe::BPE::from_file(&path(vocab)?, &path(merges)?)
        .build()
        .map_err(|e| Error::tokenizer(vocab, e))?;
    let prefix_space = config
        .get("add_prefix_space")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::byte_level::ByteLevel::new(prefix_space, true, true),
    ));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    let specials: Vec<AddedToken> = special
        .roles()
        .iter()
        .filter_map(|(_, t)| t.as_ref())
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| Error::tokenizer(vocab, e))?;
    Ok(tok)
}

impl BatchEncoding {
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// The model input: ids, attention mask and token types as (batch, seq) u32 tensors,
    /// padded to the longest encoding as `pad` says.
    pub fn to_input(&self, pad: PadSpec, device: &Device) -> Result<EncoderInput> {
        let refs: Vec<&Encoding> = self.encodings.iter().collect();
        EncoderInput::from_encodings(&refs, pad, device)
    }
}
