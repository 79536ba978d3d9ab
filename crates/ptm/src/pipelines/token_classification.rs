//! Token classification (named entities), as transformers' token-classification pipeline: the
//! label of every token, or entities grouped by an aggregation strategy, with character spans
//! in the text. The aggregation is [`aggregate`], a function of the tokens and their scores.

use std::str::FromStr;

use tokenizers::{DecoderWrapper, ModelWrapper};

use super::Inputs;
use crate::error::{Error, Result};
use crate::finetune::{length_batches, token_cls};
use crate::models::traits::TokenClassifier;
use crate::models::{Pretrained, auto, report_load, require_trained};
use crate::nn::StoreOptions;
use crate::tokenizer::Tokenizer;

/// transformers' `aggregation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregationStrategy {
    /// Every token with its label (labels `O` left out).
    None,
    /// Adjacent tokens of one entity grouped (B- starts a new one); a word may be split.
    Simple,
    /// As simple, on words: a word takes its first token's label.
    First,
    /// As simple, on words: a word takes the label of its tokens' mean scores.
    Average,
    /// As simple, on words: a word takes the label of its most confident token.
    Max,
}

impl FromStr for AggregationStrategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(AggregationStrategy::None),
            "simple" => Ok(AggregationStrategy::Simple),
            "first" => Ok(AggregationStrategy::First),
            "average" => Ok(AggregationStrategy::Average),
            "max" => Ok(AggregationStrategy::Max),
            other => Err(Error::invalid(format!(
                "unknown aggregation strategy {other:?}; supported: none, simple, first, average, max"
            ))),
        }
    }
}

/// A token and its label (strategy none), with transformers' field names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenEntity {
    pub entity: String,
    pub score: f32,
    /// The token's position in the encoding, special tokens counted.
    pub index: usize,
    pub word: String,
    /// Character offsets in the text.
    pub start: usize,
    pub end: usize,
}

/// Adjacent tokens or words of one entity, with transformers' field names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntityGroup {
    /// The label without its B-/I- prefix.
    pub entity_group: String,
    /// The mean of its members' scores.
    pub score: f32,
    pub word: String,
    /// Character offsets in the text.
    pub start: usize,
    pub end: usize,
}

/// What the pipeline answers: tokens for strategy none, groups for the others.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Entity {
    Token(TokenEntity),
    Group(EntityGroup),
}

/// One text as the model saw it: per token, the vocabulary's spelling (`##ing`), its
/// character offsets in `text`, whether the tokenizer added it, and the label probabilities.
pub struct ScoredTokens<'a> {
    pub text: &'a str,
    pub tokens: &'a [String],
    pub offsets: &'a [(usize, usize)],
    pub special: &'a [bool],
    pub probs: &'a [Vec<f32>],
}

/// What a tokenizer says about words: how its tokens join into text, which continue a word.
pub struct WordRules {
    /// The unknown token: its word is the text it covers.
    pub unk_token: Option<String>,
    /// The prefix that marks a word's continuation (WordPiece's `##`); with one a token
    /// continues a word when its spelling is not the text it covers; without, when no space
    /// is next to its start (transformers' fallback).
    pub subword_prefix: Option<String>,
    /// Joins tokens into text (transformers' `convert_tokens_to_string`); spaces without one.
    pub decoder: Option<DecoderWrapper>,
}

impl WordRules {
    /// The rules of a loaded tokenizer (its decoder and model).
    pub fn of(tokenizer: &Tokenizer) -> Result<Self> {
        let backend = tokenizer.backend();
        let subword_prefix = match backend.get_model() {
            ModelWrapper::WordPiece(wp) => Some(wp.continuing_subword_prefix.clone()),
            ModelWrapper::BPE(bpe) => bpe.get_continuing_subword_prefix().clone(),
            _ => None,
        };
        Ok(WordRules {
            unk_token: tokenizer.special_tokens().unk.clone(),
            subword_prefix: subword_prefix.filter(|p| !p.is_empty()),
            decoder: backend.get_decoder().cloned(),
        })
    }

    fn join(&self, tokens: Vec<String>) -> Result<String> {
        match &self.decoder {
            Some(d) => tokenizers::Decoder::decode(d, tokens)
                .map_err(|e| Error::internal(format!("decoding tokens: {e}"))),
            None => Ok(tokens.join(" ")),
        }
    }
}

/// A token ready for aggregation (transformers' pre-entity).
struct PreEntity<'a> {
    word: String,
    probs: &'a [f32],
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// A token or word with its label, before grouping.
struct Labeled {
    label: usize,
    score: f32,
    index: usize,
    word: String,
    start: usize,
    end: usize,
}

/// The entities of one text, exactly as transformers' `TokenClassificationPipeline` post-
/// processes them: special tokens skipped, labels `O` left out, and for every strategy but
/// none, adjacent tokens (or words) of one entity grouped.
pub fn aggregate(
    input: &ScoredTokens,
    labels: &[String],
    strategy: AggregationStrategy,
    rules: &WordRules,
) -> Result<Vec<Entity>> {
    let n = input.tokens.len();
    if [input.offsets.len(), input.special.len(), input.probs.len()] != [n; 3] {
        return Err(Error::invalid(
            "token classification: tokens, offsets, special-token mask and scores differ in length",
        ));
    }
    if let Some(p) = input.probs.iter().find(|p| p.len() != labels.len()) {
        return Err(Error::invalid(format!(
            "token classification: {} scores for {} labels",
            p.len(),
            labels.len()
        )));
    }
    let chars: Vec<char> = input.text.chars().collect();
    let mut pre = Vec::new();
    for index in (0..n).filter(|&i| !input.special[i]) {
        let (start, end) = input.offsets[index];
        let covered = chars
            .get(start..end)
            .ok_or_else(|| Error::invalid(format!("token {index}: offsets past the text")))?;
        let mut word = input.tokens[index].clone();
        let mut is_subword = match &rules.subword_prefix {
            Some(_) => word.chars().count() != covered.len(),
            // Python's sentence[start - 1 : start + 1]: the character before and the first.
            None => start > 0 && !chars[start - 1..(start + 1).min(chars.len())].contains(&' '),
        };
        if rules.unk_token.as_deref() == Some(word.as_str()) {
            word = covered.iter().collect();
            is_subword = false;
        }
        pre.push(PreEntity {
            word,
            probs: &input.probs[index],
            start,
            end,
            index,
            is_subword,
        });
    }
    let labeled: Vec<Labeled> = match strategy {
        AggregationStrategy::None | AggregationStrategy::Simple => pre
            .into_iter()
            .map(|p| {
                let (label, score) = argmax(p.probs);
                Labeled {
                    label,
                    score,
                    index: p.index,
                    word: p.word,
                    start: p.start,
                    end: p.end,
                }
            })
            .collect(),
        _ => words(pre, strategy, rules)?,
    };
    let ignored = |label: &str| label == "O";
    if strategy == AggregationStrategy::None {
        return Ok(labeled
            .into_iter()
            .filter(|e| !ignored(&labels[e.label]))
            .map(|e| {
                Entity::Token(TokenEntity {
                    entity: labels[e.label].clone(),
                    score: e.score,
                    index: e.index,
                    word: e.word,
                    start: e.start,
                    end: e.end,
                })
            })
            .collect());
    }
    Ok(group(labeled, labels, rules)?
        .into_iter()
        .filter(|g| !ignored(&g.entity_group))
        .map(Entity::Group)
        .collect())
}

/// The index and value of the largest score, the first on ties (numpy's argmax).
fn argmax(scores: &[f32]) -> (usize, f32) {
    scores
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 { (i, s) } else { best }
        })
}

/// Tokens gathered into words (a word: a token and the subword tokens after it), each with
/// one label by the strategy (transformers' `aggregate_words`).
fn words(
    pre: Vec<PreEntity>,
    strategy: AggregationStrategy,
    rules: &WordRules,
) -> Result<Vec<Labeled>> {
    let mut groups: Vec<Vec<PreEntity>> = Vec::new();
    for p in pre {
        match groups.last_mut() {
            Some(g) if p.is_subword => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let (label, score) = match strategy {
                AggregationStrategy::First => argmax(g[0].probs),
                AggregationStrategy::Max => {
                    // The first token with the highest score of all, as Python's max().
                    let best = g.iter().fold(&g[0], |best, p| {
                        if argmax(p.probs).1 > argmax(best.probs).1 {
                            p
                        } else {
                            best
                        }
                    });
                    argmax(best.probs)
                }
                _ => {
                    let k = g[0].probs.len();
                    let mean: Vec<f32> = (0..k)
                        .map(|j| g.iter().map(|p| p.probs[j]).sum::<f32>() / g.len() as f32)
                        .collect();
                    argmax(&mean)
                }
            };
            let (start, end, index) = (g[0].start, g[g.len() - 1].end, g[0].index);
            let word = rules.join(g.into_iter().map(|p| p.word).collect())?;
            Ok(Labeled {
                label,
                score,
                index,
                word,
                start,
                end,
            })
        })
        .collect()
}

/// B- or I- and the entity type; a label without either prefix continues (transformers'
/// `get_tag`).
fn tag(label: &str) -> (bool, &str) {
    match (label.strip_prefix("B-"), label.strip_prefix("I-")) {
        (Some(t), _) => (true, t),
        (None, Some(t)) => (false, t),
        (None, None) => (false, label),
    }
}

/// Adjacent entities of one type grouped; a B- label starts a new group (transformers'
/// `group_entities`).
fn group(entities: Vec<Labeled>, labels: &[String], rules: &WordRules) -> Result<Vec<EntityGroup>> {
    let mut runs: Vec<Vec<Labeled>> = Vec::new();
    for e in entities {
        match runs.last_mut() {
            Some(run) => {
                let (begins, kind) = tag(&labels[e.label]);
                let (_, last_kind) = tag(&labels[run[run.len() - 1].label]);
                if kind == last_kind && !begins {
                    run.push(e);
                } else {
                    runs.push(vec![e]);
                }
            }
            None => runs.push(vec![e]),
        }
    }
    runs.into_iter()
        .map(|run| {
            let first = &labels[run[0].label];
            // The first member's label after its first '-' (Python's split("-", 1)[-1]).
            let entity_group = first.split_once('-').map_or(first.as_str(), |(_, t)| t);
            let score = run.iter().map(|e| f64::from(e.score)).sum::<f64>() / run.len() as f64;
            Ok(EntityGroup {
                entity_group: entity_group.to_string(),
                score: score as f32,
                start: run[0].start,
                end: run[run.len() - 1].end,
                word: rules.join(run.into_iter().map(|e| e.word).collect())?,
            })
        })
        .collect()
}

pub struct TokenClassification {
    inputs: Inputs,
    model: Box<dyn TokenClassifier>,
    labels: Vec<String>,
    rules: WordRules,
}

impl TokenClassification {
    /// Loads a token classifier (`…ForTokenClassification`) with its label names.
    pub fn load(spec: &str, store: &StoreOptions) -> Result<Self> {
        let pretrained = Pretrained::open(spec)?;
        let inputs = Inputs::new(&pretrained)?;
        let params = pretrained.store(store)?;
        let model = auto::token_classifier(&pretrained.config, &params.root())
            .map_err(|e| e.for_task("token classification", &pretrained.dir))?;
        require_trained(
            &params,
            &pretrained.dir,
            &format!(
                "token-classification head (e.g. saved as {})",
                model.architecture()
            ),
        )?;
        report_load(&params, model.architecture());
        Ok(TokenClassification {
            rules: WordRules::of(&inputs.tokenizer)?,
            inputs,
            model,
            labels: pretrained.config.common().id2label.clone(),
        })
    }

    /// Cuts texts longer than `max_length` tokens (default: the model's positions).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.inputs.set_max_length(max_length)?;
        Ok(self)
    }

    /// Runs the model on this many texts at a time (default 32).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        self.inputs.set_batch_size(batch_size)?;
        Ok(self)
    }

    /// The most tokens a text may have.
    pub fn max_positions(&self) -> usize {
        self.inputs.positions
    }

    /// The label names, in the model's order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The entities of each text, by `strategy`.
    pub fn predict(
        &self,
        texts: &[&str],
        strategy: AggregationStrategy,
    ) -> Result<Vec<Vec<Entity>>> {
        let tok = &self.inputs.tokenizer;
        let encodings = tok.encode_batch(texts)?.encodings;
        let lengths: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
        let mut probs = vec![Vec::new(); texts.len()];
        for batch in length_batches(&lengths, self.inputs.batch_size) {
            let refs: Vec<_> = batch.iter().map(|&i| &encodings[i]).collect();
            let p = token_cls::probabilities(self.model.as_ref(), &refs, self.inputs.pad)?;
            for (&i, mut rows) in batch.iter().zip(p) {
                rows.truncate(lengths[i]);
                probs[i] = rows;
            }
        }
        texts
            .iter()
            .zip(&encodings)
            .zip(&probs)
            .enumerate()
            .map(|(n, ((text, e), p))| {
                super::check_finite(|| format!("text {}: token scores", n + 1), &p.concat())?;
                let tokens = e
                    .get_ids()
                    .iter()
                    .map(|&id| {
                        tok.id_to_token(id)
                            .ok_or_else(|| Error::internal(format!("token id {id} has no token")))
                    })
                    .collect::<Result<Vec<String>>>()?;
                let offsets = char_offsets(text, e.get_offsets());
                let special: Vec<bool> = e
                    .get_special_tokens_mask()
                    .iter()
                    .map(|&m| m == 1)
                    .collect();
                let input = ScoredTokens {
                    text,
                    tokens: &tokens,
                    offsets: &offsets,
                    special: &special,
                    probs: p,
                };
                aggregate(&input, &self.labels, strategy, &self.rules)
            })
            .collect()
    }
}

/// Byte offsets (the tokenizers crate's) as character offsets (transformers').
fn char_offsets(text: &str, bytes: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut char_at = vec![0; text.len() + 1];
    let mut n = 0;
    for (b, c) in text.char_indices() {
        char_at[b..b + c.len_utf8()].fill(n);
        n += 1;
    }
    char_at[text.len()] = n;
    let at = |b: usize| char_at[b.min(text.len())];
    bytes.iter().map(|&(s, e)| (at(s), at(e))).collect()
}
