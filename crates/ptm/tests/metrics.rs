//! ptm's metrics equal scikit-learn's, seqeval's, the SQuAD script's and SciPy's on the same
//! predictions (tests/fixtures/metrics, from tools/reference/make_metrics_fixtures.py).

mod common;

use ptm::metrics::{
    ClassScores, classification_report, entities, entity_report, pearson, spearman,
    squad_exact_match, squad_f1,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = common::fixtures().join("metrics/metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(what: &str, got: f64, want: &Value) {
    let want = want.as_f64().unwrap_or_else(|| panic!("{what}: {want}"));
    assert!((got - want).abs() < 1e-12, "{what}: {got} vs {want}");
}

fn scores(what: &str, got: &ClassScores, want: &Value) {
    close(
        &format!("{what} precision"),
        got.precision,
        &want["precision"],
    );
    close(&format!("{what} recall"), got.recall, &want["recall"]);
    close(&format!("{what} f1"), got.f1, &want["f1-score"]);
    if let Some(s) = want.get("support").filter(|s| !s.is_null()) {
        assert_eq!(got.support as f64, s.as_f64().unwrap(), "{what} support");
    }
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn tags(v: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn classification_equals_scikit_learn() {
    let f = &fixture()["classification"];
    let labels: Vec<String> = serde_json::from_value(f["labels"].clone()).unwrap();
    let r = classification_report(&labels, &usizes(&f["gold"]), &usizes(&f["predicted"]));
    close("accuracy", r.accuracy, &f["accuracy"]);
    for (name, s) in &r.per_class {
        scores(name, s, &f["per_class"][name]);
    }
    scores("macro", &r.macro_avg, &f["macro_avg"]);
    scores("weighted", &r.weighted_avg, &f["weighted_avg"]);
    scores("micro", &r.micro_avg, &f["micro_avg"]);
    let confusion: Vec<Vec<usize>> = f["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(usizes)
        .collect();
    assert_eq!(r.confusion, confusion);
}

#[test]
fn entities_equal_seqeval() {
    let f = &fixture()["entities"];
    let (gold, predicted) = (tags(&f["gold"]), tags(&f["predicted"]));
    let first: Vec<(String, usize, usize)> = entities(&gold[0])
        .into_iter()
        .map(|e| (e.kind, e.start, e.end))
        .collect();
    let want: Vec<(String, usize, usize)> =
        serde_json::from_value(f["entities_of_first"].clone()).unwrap();
    assert_eq!(first, want);
    let r = entity_report(&gold, &predicted);
    let types: Vec<&String> = r.per_type.keys().collect();
    let want_types: Vec<&String> = f["per_type"].as_object().unwrap().keys().collect();
    assert_eq!(types, want_types);
    for (k, s) in &r.per_type {
        scores(k, s, &f["per_type"][k]);
    }
    scores("micro", &r.micro_avg, &f["micro_avg"]);
    scores("macro", &r.macro_avg, &f["macro_avg"]);
    scores("weighted", &r.weighted_avg, &f["weighted_avg"]);
    close("f1", r.micro_avg.f1, &f["f1"]);
}

#[test]
fn squad_equals_the_official_script() {
    for item in fixture()["squad"].as_array().unwrap() {
        let p = item["prediction"].as_str().unwrap();
        let golds: Vec<String> = serde_json::from_value(item["answers"].clone()).unwrap();
        let em = golds
            .iter()
            .map(|g| squad_exact_match(p, g))
            .fold(0.0, f64::max);
        let f1 = golds.iter().map(|g| squad_f1(p, g)).fold(0.0, f64::max);
        close(&format!("EM of {p:?}"), em, &item["exact_match"]);
        close(&format!("F1 of {p:?}"), f1, &item["f1"]);
    }
}

#[test]
fn correlation_equals_scipy() {
    let f = &fixture()["correlation"];
    let x: Vec<f64> = serde_json::from_value(f["x"].clone()).unwrap();
    let y: Vec<f64> = serde_json::from_value(f["y"].clone()).unwrap();
    let near = |a: f64, b: &Value| assert!((a - b.as_f64().unwrap()).abs() < 1e-12, "{a} vs {b}");
    near(spearman(&x, &y), &f["spearman"]);
    near(pearson(&x, &y), &f["pearson"]);
}
