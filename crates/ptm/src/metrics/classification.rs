//! Accuracy, precision, recall and F1 per class and averaged (macro, micro, weighted) with a
//! confusion matrix, as scikit-learn's `classification_report` and `confusion_matrix` give them
//! (a ratio with a zero denominator is 0, sklearn's `zero_division` default).

use serde::Serialize;

/// Precision, recall, F1 and how many gold examples a class (or an average) covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    pub accuracy: f64,
    /// (label name, scores) in label order; serialised as an object keyed by label.
    #[serde(serialize_with = "as_map")]
    pub per_class: Vec<(String, ClassScores)>,
    pub macro_avg: ClassScores,
    pub micro_avg: ClassScores,
    pub weighted_avg: ClassScores,
    /// `confusion[gold][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

fn as_map<S: serde::Serializer>(
    per_class: &[(String, ClassScores)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(per_class.iter().map(|(k, v)| (k, v)))
}

pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

pub(crate) fn f1(precision: f64, recall: f64) -> f64 {
    ratio(2.0 * precision * recall, precision + recall)
}

/// Scores from true-positive, predicted and gold counts.
pub(crate) fn scores(tp: usize, predicted: usize, gold: usize) -> ClassScores {
    let precision = ratio(tp as f64, predicted as f64);
    let recall = ratio(tp as f64, gold as f64);
    ClassScores {
        precision,
        recall,
        f1: f1(precision, recall),
        support: gold,
    }
}

/// Averages of per-class scores: unweighted (macro) and weighted by support.
pub(crate) fn averages(per_class: &[ClassScores]) -> (ClassScores, ClassScores) {
    let n = per_class.len().max(1) as f64;
    let support: usize = per_class.iter().map(|s| s.support).sum();
    let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / n;
    let weighted = |f: fn(&ClassScores) -> f64| {
        ratio(
            per_class.iter().map(|s| f(s) * s.support as f64).sum(),
            support as f64,
        )
    };
    (
        ClassScores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support,
        },
        ClassScores {
            precision: weighted(|s| s.precision),
            recall: weighted(|s| s.recall),
            f1: weighted(|s| s.f1),
            support,
        },
    )
}

/// The report over classes `0..labels.len()` for gold and predicted class ids (equal lengths).
pub fn classification_report(
    labels: &[String],
    gold: &[usize],
    predicted: &[usize],
) -> ClassificationReport {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&g, &p) in gold.iter().zip(predicted) {
        confusion[g][p] += 1;
    }
    let per_class: Vec<ClassScores> = (0..k)
        .map(|c| {
            scores(
                confusion[c][c],
                (0..k).map(|g| confusion[g][c]).sum(),
                confusion[c].iter().sum(),
            )
        })
        .collect();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let (macro_avg, weighted_avg) = averages(&per_class);
    ClassificationReport {
        accuracy: ratio(correct as f64, gold.len() as f64),
        micro_avg: scores(correct, predicted.len(), gold.len()),
        per_class: labels.iter().cloned().zip(per_class).collect(),
        macro_avg,
        weighted_avg,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_hand() {
        let labels = ["a", "b", "c"].map(String::from);
        let r = classification_report(&labels, &[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 0, 0]);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![2, 0, 0]]
        );
        assert!((r.accuracy - 0.5).abs() < 1e-12);
        let (_, a) = &r.per_class[0];
        assert!((a.precision - 1.0 / 3.0).abs() < 1e-12 && (a.recall - 0.5).abs() < 1e-12);
        let (_, c) = &r.per_class[2];
        assert_eq!(
            (c.precision, c.recall, c.f1),
            (0.0, 0.0, 0.0),
            "no prediction of c: 0, not NaN"
        );
    }
}
