"""Reference values for ptm's metrics (crates/ptm/tests/metrics.rs): scikit-learn's
classification report and confusion matrix, seqeval's entity scores, the official SQuAD v1.1
normalisation, EM and F1, and SciPy's Spearman and Pearson correlations, on seeded random
predictions with the awkward cases each one has (absent classes, ties, I- without B-,
articles and punctuation).

Run: $(tools/reference/setup-venv.sh) tools/reference/make_metrics_fixtures.py
"""

import collections
import json
import random
import re
import string
from pathlib import Path

import scipy.stats
import seqeval.metrics
import sklearn.metrics

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "metrics"


def classification(rng):
    labels = ["neg", "neu", "pos", "never"]  # "never" is neither gold nor predicted
    gold = [rng.choice([0, 0, 1, 2, 2, 2]) for _ in range(200)]
    pred = [g if rng.random() < 0.6 else rng.choice([0, 1, 2]) for g in gold]
    report = sklearn.metrics.classification_report(gold, pred, labels=list(range(4)), target_names=labels,
                                                   output_dict=True, zero_division=0)
    micro = sklearn.metrics.precision_recall_fscore_support(gold, pred, labels=list(range(4)), average="micro", zero_division=0)
    return {
        "labels": labels, "gold": gold, "predicted": pred,
        "accuracy": sklearn.metrics.accuracy_score(gold, pred),
        "per_class": {n: report[n] for n in labels},
        "macro_avg": report["macro avg"], "weighted_avg": report["weighted avg"],
        "micro_avg": {"precision": micro[0], "recall": micro[1], "f1-score": micro[2]},
        "confusion": sklearn.metrics.confusion_matrix(gold, pred, labels=list(range(4))).tolist(),
    }


def entities(rng):
    types = ["PER", "LOC", "ORG"]

    def sentence():
        tags = []
        while len(tags) < rng.randint(3, 12):
            r = rng.random()
            if r < 0.55:
                tags.append("O")
            else:
                t = rng.choice(types)
                tags.append(("B-" if r < 0.85 else "I-") + t)
                tags += ["I-" + t] * rng.choice([0, 0, 1, 2])
        return tags

    gold = [sentence() for _ in range(60)]
    pred = []
    for s in gold:
        p = list(s)
        for i in range(len(p)):
            if rng.random() < 0.15:
                p[i] = rng.choice(["O", "B-PER", "I-PER", "B-LOC", "I-ORG", "B-MISC"])
        pred.append(p)
    report = seqeval.metrics.classification_report(gold, pred, output_dict=True, zero_division=0)
    return {
        "gold": gold, "predicted": pred,
        "entities_of_first": [[t, s, e] for t, s, e in seqeval.metrics.sequence_labeling.get_entities(gold[0])],
        "per_type": {k: v for k, v in report.items() if not k.endswith(" avg")},
        "micro_avg": report["micro avg"], "macro_avg": report["macro avg"], "weighted_avg": report["weighted avg"],
        "f1": seqeval.metrics.f1_score(gold, pred),
    }


# The official SQuAD v1.1 evaluation script's functions.
def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def f1_score(prediction, ground_truth):
    p, g = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = collections.Counter(p) & collections.Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision, recall = num_same / len(p), num_same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad():
    items = [
        ("Mr. Darcy", ["Mr Darcy", "Darcy"]),
        ("the ball at Netherfield", ["a ball", "Netherfield ball"]),
        ("An officer's wife", ["the officer’s wife"]),
        ("theatre", ["the atre"]),
        ("Pemberley, in Derbyshire", ["Derbyshire"]),
        ("", ["Lizzy"]),
        ("ten thousand a year", ["10,000 a year", "ten thousand a year"]),
        ("Élise  Bennet", ["élise bennet"]),
        ("Captain_Wentworth", ["captain wentworth"]),
        ("the the the", ["the"]),
    ]
    out = []
    for pred, golds in items:
        out.append({
            "prediction": pred, "answers": golds,
            "normalized": normalize_answer(pred),
            "exact_match": max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds),
            "f1": max(f1_score(pred, g) for g in golds),
        })
    return out


def correlation(rng):
    x = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(50)]
    y = [v + rng.gauss(0, 0.3) for v in x]
    y[3] = y[7]  # a tie in both
    return {"x": x, "y": y, "spearman": scipy.stats.spearmanr(x, y).statistic, "pearson": scipy.stats.pearsonr(x, y).statistic}


def plain(x):
    """numpy scalars as Python numbers."""
    return x.item()


def main():
    rng = random.Random(7)
    OUT.mkdir(parents=True, exist_ok=True)
    data = {"classification": classification(rng), "entities": entities(rng), "squad": squad(), "correlation": correlation(rng)}
    (OUT / "metrics.json").write_text(json.dumps(data, indent=1, ensure_ascii=False, default=plain) + "\n")
    print("wrote", OUT / "metrics.json")


if __name__ == "__main__":
    main()
