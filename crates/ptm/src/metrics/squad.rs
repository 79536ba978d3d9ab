//! Exact match and F1 of extractive QA as the official SQuAD v1.1 evaluation script computes
//! them: answers are lower-cased, stripped of ASCII punctuation and of the articles a/an/the,
//! and whitespace-normalised; F1 is over the bag of remaining words; each question takes its
//! best score over the gold answers; totals are percentages.

use std::collections::HashMap;

use serde::Serialize;

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)` with Python's Unicode word characters.
fn remove_articles(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let boundary_before = i == 0 || !is_word_char(chars[i - 1]);
        let matched = boundary_before
            .then(|| {
                ["a", "an", "the"].into_iter().find(|w| {
                    let n = w.chars().count();
                    chars.len() >= i + n
                        && chars[i..i + n].iter().copied().eq(w.chars())
                        && (i + n == chars.len() || !is_word_char(chars[i + n]))
                })
            })
            .flatten();
        match matched {
            Some(w) => {
                out.push(' ');
                i += w.len();
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

fn normalize(s: &str) -> Vec<String> {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    remove_articles(&no_punct)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// 1.0 when the normalised answers are equal.
pub fn squad_exact_match(prediction: &str, gold: &str) -> f64 {
    f64::from(normalize(prediction) == normalize(gold))
}

/// Word-overlap F1 of the normalised answers.
pub fn squad_f1(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize(prediction), normalize(gold));
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w.as_str()).filter(|c| **c > 0) {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SquadScores {
    pub exact_match: f64,
    pub f1: f64,
    pub count: usize,
}

/// Percent EM and F1 over questions: (prediction, gold answers).
pub fn squad_scores(items: &[(String, Vec<String>)]) -> SquadScores {
    let best = |f: fn(&str, &str) -> f64, p: &str, golds: &[String]| {
        golds.iter().map(|g| f(p, g)).fold(0.0, f64::max)
    };
    let n = items.len();
    let (mut em, mut f1) = (0.0, 0.0);
    for (p, golds) in items {
        em += best(squad_exact_match, p, golds);
        f1 += best(squad_f1, p, golds);
    }
    let pct = |x: f64| if n == 0 { 0.0 } else { 100.0 * x / n as f64 };
    SquadScores {
        exact_match: pct(em),
        f1: pct(f1),
        count: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_as_the_official_script() {
        assert_eq!(normalize("The  Cat, sat!"), vec!["cat", "sat"]);
        assert_eq!(normalize("theatre an apple"), vec!["theatre", "apple"]);
        assert_eq!(squad_exact_match("a Mr. Darcy", "Mr Darcy"), 1.0);
        assert!((squad_f1("Mr Darcy of Pemberley", "Darcy") - 0.4).abs() < 1e-12);
    }
}
