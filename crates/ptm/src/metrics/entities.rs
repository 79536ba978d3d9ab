//! Entity-level precision, recall and F1 as seqeval computes them by default: spans are read
//! from IOB/IOBES tags with seqeval's lenient rules (an I- after O or after another type starts
//! an entity), sentences are joined with O, and a predicted entity counts only if its type,
//! start and end all equal a gold one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::classification::{ClassScores, averages, scores};

/// An entity: its type and the first and last tag positions it covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Entity {
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

fn split(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let kind = tag.get(prefix.len_utf8()..).unwrap_or("");
    // seqeval: the type is what follows the first '-' (or the rest), '_' when empty.
    let kind = kind.split_once('-').map_or(kind, |(_, k)| k);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

fn end_of_chunk(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_kind != kind)
}

fn start_of_chunk(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_kind != kind)
}

/// The entities of one tag sequence, positions counted within it.
pub fn entities(tags: &[impl AsRef<str>]) -> Vec<Entity> {
    let mut out = Vec::new();
    let (mut prev, mut prev_kind, mut begin) = ('O', "".to_string(), 0);
    for (i, tag) in tags
        .iter()
        .map(AsRef::as_ref)
        .chain(std::iter::once("O"))
        .enumerate()
    {
        let (t, kind) = split(tag);
        if end_of_chunk(prev, t, &prev_kind, kind) {
            out.push(Entity {
                kind: prev_kind.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if start_of_chunk(prev, t, &prev_kind, kind) {
            begin = i;
        }
        prev = t;
        prev_kind = kind.to_string();
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityReport {
    /// Per entity type, in name order.
    pub per_type: BTreeMap<String, ClassScores>,
    pub micro_avg: ClassScores,
    pub macro_avg: ClassScores,
    pub weighted_avg: ClassScores,
}

/// Scores over whole corpora of sentences (gold and predicted tags of equal shapes).
pub fn entity_report(gold: &[Vec<String>], predicted: &[Vec<String>]) -> EntityReport {
    // Sentences joined by an O, as seqeval flattens them, so positions are global.
    let flatten = |seqs: &[Vec<String>]| -> BTreeSet<Entity> {
        let joined: Vec<&str> = seqs
            .iter()
            .flat_map(|s| s.iter().map(String::as_str).chain(std::iter::once("O")))
            .collect();
        entities(&joined).into_iter().collect()
    };
    let (g, p) = (flatten(gold), flatten(predicted));
    let kinds: BTreeSet<&str> = g.iter().chain(&p).map(|e| e.kind.as_str()).collect();
    let per_type: BTreeMap<String, ClassScores> = kinds
        .iter()
        .map(|&k| {
            let count = |s: &BTreeSet<Entity>| s.iter().filter(|e| e.kind == k).count();
            let tp = g.intersection(&p).filter(|e| e.kind == k).count();
            (k.to_string(), scores(tp, count(&p), count(&g)))
        })
        .collect();
    // Averages over every type seen, predicted-only ones included, as seqeval's report.
    let all: Vec<ClassScores> = per_type.values().copied().collect();
    let (macro_avg, weighted_avg) = averages(&all);
    EntityReport {
        micro_avg: scores(g.intersection(&p).count(), p.len(), g.len()),
        per_type,
        macro_avg,
        weighted_avg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, start: usize, end: usize) -> Entity {
        Entity {
            kind: kind.into(),
            start,
            end,
        }
    }

    #[test]
    fn lenient_chunks_as_seqeval() {
        assert_eq!(
            entities(&["B-PER", "I-PER", "O", "B-LOC"]),
            vec![e("PER", 0, 1), e("LOC", 3, 3)]
        );
        // I- without B- starts an entity; a type change ends one.
        assert_eq!(
            entities(&["I-PER", "I-PER", "I-LOC", "O"]),
            vec![e("PER", 0, 1), e("LOC", 2, 2)]
        );
        assert_eq!(
            entities(&["B-PER", "B-PER"]),
            vec![e("PER", 0, 0), e("PER", 1, 1)]
        );
    }
}
