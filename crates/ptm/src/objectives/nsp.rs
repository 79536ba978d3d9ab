//! BERT's pretraining data: sentence pairs for next-sentence prediction, masked for MLM, as
//! Google's `create_pretraining_data.py` (and transformers' `TextDatasetForNextSentencePrediction`)
//! builds them. Sentences of a document are gathered until a target length (10% of the time a
//! shorter random one); a random cut makes segment A; half the time B is the rest of the
//! gathered text (label 0), otherwise text from a random other document (label 1), the unused
//! sentences being put back. The pair is trimmed to fit, one token at a time from a random end
//! of the longer segment. Pairs are drawn once from the seed; masks change every epoch.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mlm::MlmCollator;
use crate::data::{Span, TokenizedCorpus};
use crate::error::{Error, Result};
use crate::heads::cross_entropy_loss;
use crate::models::traits::MaskedLmWithNextSentence;

/// Share of pairs built to a random shorter length, so short inputs are seen too.
const SHORT_SEQ_PROB: f64 = 0.1;

/// One pretraining pair; each segment is a contiguous run of ids in the corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NspPair {
    pub a: Span,
    pub b: Span,
    /// B comes from another document (next-sentence label 1).
    pub is_random_next: bool,
}

/// Pairs whose `[CLS] A [SEP] B [SEP]` fits `seq_len` tokens.
pub fn nsp_pairs(corpus: &TokenizedCorpus, seq_len: usize, seed: u64) -> Result<Vec<NspPair>> {
    let docs = corpus.num_documents();
    if docs < 2 {
        return Err(Error::invalid(format!(
            "next-sentence prediction needs at least 2 documents (blank-line separated); {} has {docs}",
            corpus.dir().display()
        )));
    }
    if seq_len < 5 {
        return Err(Error::invalid(
            "next-sentence prediction needs --seq-len of 5 or more",
        ));
    }
    let max_tokens = seq_len - 3;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pairs = Vec::new();
    for d in 0..docs {
        let sentences = corpus.document(d);
        let target = if rng.random::<f64>() < SHORT_SEQ_PROB {
            rng.random_range(2..=max_tokens)
        } else {
            max_tokens
        };
        let (mut chunk_start, mut chunk_len, mut tokens) = (0, 0, 0);
        let mut i = 0;
        while i < sentences.len() {
            chunk_len += 1;
            tokens += sentences[i].len();
            if i + 1 == sentences.len() || tokens >= target {
                let chunk = &sentences[chunk_start..chunk_start + chunk_len];
                let a_end = if chunk.len() >= 2 {
                    rng.random_range(1..chunk.len())
                } else {
                    1
                };
                let mut a = join(&chunk[..a_end]);
                let random_next = chunk.len() == 1 || rng.random::<f64>() < 0.5;
                let mut b = if random_next {
                    let target_b = target.saturating_sub(a.len()).max(1);
                    let mut other = rng.random_range(0..docs - 1);
                    if other >= d {
                        other += 1; // any document but this one
                    }
                    let other = corpus.document(other);
                    let from = rng.random_range(0..other.len());
                    let mut end = from;
                    let mut b_tokens = 0;
                    while end < other.len() && b_tokens < target_b {
                        b_tokens += other[end].len();
                        end += 1;
                    }
                    // The sentences of this chunk that B did not use start the next chunk.
                    i -= chunk.len() - a_end;
                    join(&other[from..end])
                } else {
                    join(&chunk[a_end..])
                };
                truncate_pair(&mut a, &mut b, max_tokens, &mut rng);
                if !a.is_empty() && !b.is_empty() {
                    pairs.push(NspPair {
                        a,
                        b,
                        is_random_next: random_next,
                    });
                }
                chunk_start = i + 1;
                chunk_len = 0;
                tokens = 0;
            }
            i += 1;
        }
    }
    Ok(pairs)
}

/// Consecutive sentences as one span.
fn join(sentences: &[Span]) -> Span {
    match (sentences.first(), sentences.last()) {
        (Some(f), Some(l)) => Span {
            shard: f.shard,
            start: f.start,
            end: l.end,
        },
        _ => Span {
            shard: 0,
            start: 0,
            end: 0,
        },
    }
}

fn truncate_pair(a: &mut Span, b: &mut Span, max_tokens: usize, rng: &mut ChaCha8Rng) {
    while a.len() + b.len() > max_tokens {
        let longer = if a.len() > b.len() { &mut *a } else { &mut *b };
        if rng.random::<f64>() < 0.5 {
            longer.start += 1;
        } else {
            longer.end -= 1;
        }
    }
}

/// `BertForPreTraining`'s objective: masked LM on the pair plus next-sentence prediction.
pub struct PreTrainingObjective<'a> {
    pub model: &'a dyn MaskedLmWithNextSentence,
    pub corpus: &'a TokenizedCorpus,
    pub pairs: Vec<NspPair>,
    pub collator: MlmCollator,
    pub cls_id: u32,
    pub sep_id: u32,
}

impl crate::train::Objective for PreTrainingObjective<'_> {
    fn num_examples(&self) -> usize {
        self.pairs.len()
    }

    fn loss(
        &self,
        examples: &[usize],
        epoch: usize,
        mode: crate::nn::Mode,
    ) -> Result<crate::train::LossTerms> {
        let device = self.model.device();
        let mut items = Vec::with_capacity(examples.len());
        let mut next_labels = Vec::with_capacity(examples.len());
        for &i in examples {
            let pair = &self.pairs[i];
            let (a, b) = (self.corpus.ids(pair.a), self.corpus.ids(pair.b));
            let types: Vec<u32> = std::iter::repeat_n(0, a.len() + 2)
                .chain(std::iter::repeat_n(1, b.len() + 1))
                .collect();
            let ids: Vec<u32> = std::iter::once(self.cls_id)
                .chain(a)
                .chain(std::iter::once(self.sep_id))
                .chain(b)
                .chain(std::iter::once(self.sep_id))
                .collect();
            items.push((i, ids, Some(types)));
            next_labels.push(i64::from(pair.is_random_next));
        }
        let batch = self.collator.collate(&items, epoch, &device)?;
        let (mlm, nsp_logits) = self
            .model
            .pretraining_losses(&batch.input, &batch.labels, mode)?;
        let next_labels = Tensor::from_vec(next_labels, examples.len(), &device)?;
        let nsp = cross_entropy_loss(&nsp_logits, &next_labels)?;
        // With no masked token the MLM term is absent rather than NaN.
        let loss = match mlm {
            Some(mlm) => (mlm + nsp)?,
            None => nsp,
        };
        // MLM and NSP means added: each example weighs the same.
        Ok(crate::train::LossTerms {
            loss,
            count: examples.len(),
            tokens: batch.tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn pairs_fit_and_half_are_random() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("a.txt");
        let mut corpus = String::new();
        for d in 0..40 {
            for s in 0..12 {
                corpus.push_str(&format!("Document {d} has sentence number {s} in it. "));
            }
            corpus.push_str("\n\n");
        }
        std::fs::write(&text, corpus).unwrap();
        let tok = crate::tokenizer::Tokenizer::from_dir(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizer"),
        )
        .unwrap();
        let c = TokenizedCorpus::prepare(&[text], &tok, &dir.path().join("tok")).unwrap();
        let pairs = nsp_pairs(&c, 40, 3).unwrap();
        assert!(pairs.len() > 40, "{}", pairs.len());
        let random = pairs.iter().filter(|p| p.is_random_next).count() as f64 / pairs.len() as f64;
        assert!((0.35..0.65).contains(&random), "{random}");
        let doc_of = |s: &Span| {
            (0..c.num_documents())
                .find(|&d| {
                    c.document(d)
                        .iter()
                        .any(|x| x.start <= s.start && s.start < x.end)
                })
                .unwrap()
        };
        for p in &pairs {
            assert!(p.a.len() + p.b.len() <= 37 && !p.a.is_empty() && !p.b.is_empty());
            // A true next segment follows A in the same document.
            if !p.is_random_next {
                assert!(p.a.end <= p.b.start);
                assert_eq!(doc_of(&p.a), doc_of(&p.b));
            } else {
                assert_ne!(doc_of(&p.a), doc_of(&p.b));
            }
        }
        assert_eq!(pairs, nsp_pairs(&c, 40, 3).unwrap(), "seeded");
    }
}
