//! The task pipelines: token classification against transformers' pipeline for every
//! aggregation strategy (tools/reference/make_pipeline_fixtures.py), and text classification,
//! question answering and generation against the fine-tuning code and transformers'
//! generate() on the tiny fixtures.

mod common;

use common::fixtures;
use ptm::ErrorKind;
use ptm::finetune::{LabelSet, qa, seq_cls};
use ptm::models::{Pretrained, auto};
use ptm::nn::StoreOptions;
use ptm::pipelines::{
    AggregationStrategy, ClassificationFunction, ClassifyOptions, Entity, QaInput, QaOptions,
    QuestionAnswering, ScoredTokens, TextClassification, TextGeneration, TextInput,
    TokenClassification, WordRules, aggregate,
};
use serde_json::Value;

fn spec(path: &str) -> String {
    fixtures().join(path).to_str().unwrap().to_string()
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn pipelines_are_send_and_sync() {
    assert_send_sync::<TextClassification>();
    assert_send_sync::<TokenClassification>();
    assert_send_sync::<QuestionAnswering>();
    assert_send_sync::<TextGeneration>();
}

/// Entities equal transformers' field by field: labels, words, indices and spans exactly,
/// scores within 1e-4.
fn assert_same_entities(what: &str, got: &[Entity], want: &Value) {
    let got = serde_json::to_value(got).unwrap();
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "{what}: {got:?}\nwant {want:?}");
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
        let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(g), keys(w), "{what}: field names");
        for (k, v) in w {
            if k == "score" {
                let (a, b) = (g[k].as_f64().unwrap(), v.as_f64().unwrap());
                assert!((a - b).abs() < 1e-4, "{what}: score {a} vs {b} in {g:?}");
            } else {
                assert_eq!(&g[k], v, "{what}: {k} of {g:?}");
            }
        }
    }
}

#[test]
fn token_classification_equals_transformers_for_every_strategy() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("pipelines/tiny-ner.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let ner = TokenClassification::load(&spec("pipelines/tiny-ner"), &StoreOptions::default())
        .unwrap()
        .with_batch_size(2)
        .unwrap();
    let mut grouped = 0;
    for name in ["none", "simple", "first", "average", "max"] {
        let strategy: AggregationStrategy = name.parse().unwrap();
        let got = ner.predict(&texts, strategy).unwrap();
        for (i, (g, w)) in got
            .iter()
            .zip(reference["answers"][name].as_array().unwrap())
            .enumerate()
        {
            assert_same_entities(&format!("{name}, text {i}"), g, w);
            grouped += usize::from(name != "none") * g.len();
        }
    }
    assert!(
        grouped > 20,
        "the fixture's predictions vary: {grouped} groups"
    );
    // Serialized, the fields come in transformers' order.
    for (strategy, fields) in [
        (
            "none",
            &["entity", "score", "index", "word", "start", "end"][..],
        ),
        (
            "max",
            &["entity_group", "score", "word", "start", "end"][..],
        ),
    ] {
        let got = ner.predict(&texts[..1], strategy.parse().unwrap()).unwrap();
        let text = serde_json::to_string(&got[0][0]).unwrap();
        let at: Vec<usize> = fields
            .iter()
            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
    let err = "mean".parse::<AggregationStrategy>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
}

/// The aggregation alone, on made-up tokens: a word's pieces agree under first / max /
/// average; simple may split it; "O" is left out.
#[test]
fn aggregation_is_a_function_of_tokens_and_scores() {
    let text = "Eliza went home";
    let tokens: Vec<String> = ["[CLS]", "eli", "##za", "went", "home", "[SEP]"]
        .map(String::from)
        .to_vec();
    let offsets = [(0, 0), (0, 3), (3, 5), (6, 10), (11, 15), (0, 0)];
    let special = [true, false, false, false, false, true];
    let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC"].map(String::from).to_vec();
    let probs = vec![
        vec![1.0, 0.0, 0.0, 0.0],
        vec![0.1, 0.7, 0.1, 0.1],
        vec![0.1, 0.0, 0.0, 0.9],
        vec![0.9, 0.0, 0.1, 0.0],
        vec![0.2, 0.0, 0.0, 0.8],
        vec![1.0, 0.0, 0.0, 0.0],
    ];
    let input = ScoredTokens {
        text,
        tokens: &tokens,
        offsets: &offsets,
        special: &special,
        probs: &probs,
    };
    let rules = WordRules {
        unk_token: Some("[UNK]".into()),
        subword_prefix: Some("##".into()),
        decoder: Some(tokenizers::DecoderWrapper::WordPiece(
            tokenizers::decoders::wordpiece::WordPiece::default(),
        )),
    };
    let run = |s: &str| {
        let entities = aggregate(&input, &labels, s.parse().unwrap(), &rules).unwrap();
        let v = serde_json::to_value(entities).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let label = e.get("entity_group").or(e.get("entity")).unwrap();
                format!(
                    "{}:{}",
                    label.as_str().unwrap(),
                    e["word"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run("none"), ["B-PER:eli", "B-LOC:##za", "B-LOC:home"]);
    assert_eq!(run("simple"), ["PER:eli", "LOC:##za", "LOC:home"]);
    assert_eq!(run("first"), ["PER:eliza", "LOC:home"]);
    assert_eq!(run("max"), ["LOC:eliza", "LOC:home"]);
    // Mean of the two pieces: B-PER 0.35, B-LOC 0.5.
    assert_eq!(run("average"), ["LOC:eliza", "LOC:home"]);
    let short = ScoredTokens {
        probs: &probs[..2],
        ..input
    };
    let err = aggregate(&short, &labels, AggregationStrategy::None, &rules).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
}

#[test]
fn text_classification_equals_the_fine_tuning_predictions() {
    let dir = fixtures().join("bert/tiny-seq-cls");
    let texts = [
        "the cat sat on the mat.",
        "paris is the capital of france",
        "a big dog",
    ];
    let pairs = [("the cat sat", "on the mat"), ("paris", "a city")];
    // The fine-tuning path: JSONL through seq_cls::load and seq_cls::predict.
    let p = Pretrained::from_dir(&dir).unwrap();
    let store = p.store(&StoreOptions::default()).unwrap();
    let model = auto::sequence_classifier(&p.config, &store.root()).unwrap();
    let tokenizer = p.tokenizer().unwrap();
    let labels = LabelSet {
        names: p.config.common().id2label.clone(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let predict = |lines: Vec<Value>| {
        let f = tmp.path().join("data.jsonl");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&f, text).unwrap();
        let data = seq_cls::load(&f, &tokenizer, 64, &labels, false).unwrap();
        seq_cls::predict(model.as_ref(), &data, tokenizer.pad_spec(), 2, None).unwrap()
    };
    let want = predict(
        texts
            .iter()
            .map(|t| serde_json::json!({"text": t}))
            .collect(),
    );
    let want_pairs = predict(
        pairs
            .iter()
            .map(|(a, b)| serde_json::json!({"text": a, "text_pair": b}))
            .collect(),
    );

    let classifier = TextClassification::load(dir.to_str().unwrap(), &StoreOptions::default())
        .unwrap()
        .with_batch_size(2)
        .unwrap();
    assert_eq!(classifier.labels(), ["LABEL_0", "LABEL_1", "LABEL_2"]);
    assert_eq!(
        classifier.default_function(),
        ClassificationFunction::Softmax
    );
    let inputs: Vec<TextInput> = texts.iter().map(|&t| t.into()).collect();
    let got = classifier
        .scores(&inputs, ClassificationFunction::Softmax)
        .unwrap();
    assert_eq!(got, want);
    let pair_inputs: Vec<TextInput> = pairs.iter().map(|&p| p.into()).collect();
    assert_eq!(
        classifier
            .scores(&pair_inputs, ClassificationFunction::Softmax)
            .unwrap(),
        want_pairs
    );

    // Sigmoid and none are functions of the same logits.
    let logits = classifier
        .scores(&inputs, ClassificationFunction::None)
        .unwrap();
    let sigmoid = classifier
        .scores(&inputs, ClassificationFunction::Sigmoid)
        .unwrap();
    for (l, s) in logits.iter().flatten().zip(sigmoid.iter().flatten()) {
        assert!((1.0 / (1.0 + (-l).exp()) - s).abs() < 1e-6, "{l} {s}");
    }
    for (l, p) in logits.iter().zip(&want) {
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        for (x, q) in l.iter().zip(p) {
            assert!((x.exp() / z - q).abs() < 1e-5);
        }
    }

    // classify ranks: the best first, as many as top_k.
    let best = classifier
        .classify(&inputs, &ClassifyOptions::default())
        .unwrap();
    let all = classifier
        .classify(
            &inputs,
            &ClassifyOptions {
                top_k: None,
                ..Default::default()
            },
        )
        .unwrap();
    for ((b, a), p) in best.iter().zip(&all).zip(&want) {
        assert_eq!(b.len(), 1);
        assert_eq!(a.len(), 3);
        assert_eq!(b[0], a[0]);
        let (i, score) = seq_cls::argmax(p);
        assert_eq!(
            (b[0].label.as_str(), b[0].score),
            (labels.names[i].as_str(), score)
        );
        assert!(a.windows(2).all(|w| w[0].score >= w[1].score));
    }
    assert_eq!(
        serde_json::to_value(&best[0][0]).unwrap(),
        serde_json::json!({"label": best[0][0].label, "score": best[0][0].score})
    );
    let err = classifier
        .classify(
            &inputs,
            &ClassifyOptions {
                top_k: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
    let err = classifier.with_max_length(65).err().unwrap();
    assert!(err.to_string().contains("64 positions"), "{err}");
}

#[test]
fn question_answering_equals_the_fine_tuning_predictions() {
    let dir = fixtures().join("bert/tiny-qa");
    let filler = "the dog sat on the mat and the cat was in the city . ".repeat(4);
    let contexts = [
        format!("{filler}paris is the capital of france . {filler}"),
        "the cat sat on the mat".to_string(),
    ];
    let questions = ["what is the capital of france ?", "where is the cat ?"];
    let p = Pretrained::from_dir(&dir).unwrap();
    let store = p.store(&StoreOptions::default()).unwrap();
    let model = auto::span_extractor(&p.config, &store.root()).unwrap();
    let tokenizer = p.tokenizer().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("qa.jsonl");
    let lines: String = questions
        .iter()
        .zip(&contexts)
        .map(|(q, c)| format!("{}\n", serde_json::json!({"question": q, "context": c})))
        .collect();
    std::fs::write(&f, lines).unwrap();
    let data = qa::load(&f, &tokenizer, 32, 8, false).unwrap();
    assert!(
        data.windows.len() > 3,
        "the long context has several windows"
    );
    let want = qa::predict(model.as_ref(), &data, tokenizer.pad_spec(), 4, 10, None).unwrap();

    let reader = QuestionAnswering::load(dir.to_str().unwrap(), &StoreOptions::default())
        .unwrap()
        .with_max_length(32)
        .unwrap()
        .with_batch_size(4)
        .unwrap();
    let inputs: Vec<QaInput> = questions
        .iter()
        .zip(&contexts)
        .map(|(q, c)| QaInput {
            question: q,
            context: c,
        })
        .collect();
    let options = QaOptions {
        doc_stride: Some(8),
        max_answer_tokens: 10,
    };
    let got = reader.answer(&inputs, &options).unwrap();
    assert_eq!(got, want);
    for (a, c) in got.iter().zip(&contexts) {
        let span: String = c.chars().skip(a.start).take(a.end - a.start).collect();
        assert_eq!(span, a.answer);
        assert!(a.score > 0.0 && a.score <= 1.0, "{a:?}");
    }
    let empty = [QaInput {
        question: " ",
        context: "the cat",
    }];
    let err = reader.answer(&empty, &options).unwrap_err();
    assert!(err.to_string().contains("question 1"), "{err}");
    let err = reader
        .answer(
            &inputs,
            &QaOptions {
                doc_stride: Some(32),
                ..options
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
}

#[test]
fn generation_equals_transformers_greedy_search() {
    let generator = TextGeneration::load(&spec("gpt2/tiny-lm"), &StoreOptions::default()).unwrap();
    let tok = ptm::tokenizer::Tokenizer::from_dir(&fixtures().join("gpt2/tiny-lm")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gpt2/tiny-lm.generate.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for case in &cases {
        let settings = case["settings"].as_object().unwrap();
        // Plain greedy search only: the other settings have their own tests (generate.rs).
        if settings
            .keys()
            .any(|k| k != "do_sample" && k != "max_new_tokens")
            || settings["do_sample"] != false
        {
            continue;
        }
        let prompts: Vec<&str> = case["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let mut cfg = generator.generation_config().clone();
        cfg.max_new_tokens = settings["max_new_tokens"].as_u64().map(|n| n as usize);
        let got = generator.generate(&prompts, &cfg).unwrap();
        let new: Vec<Vec<u32>> = serde_json::from_value(case["new_tokens"].clone()).unwrap();
        for ((prompt, g), ids) in prompts.iter().zip(&got).zip(&new) {
            // transformers keeps generating padding after EOS; it decodes to nothing.
            let want = format!("{prompt}{}", tok.decode(ids, true).unwrap());
            assert_eq!(g.len(), 1);
            assert_eq!(g[0].generated_text, want, "{prompts:?}");
        }
        checked += 1;
    }
    assert!(checked >= 2, "{checked} greedy cases");
    let mut cfg = generator.generation_config().clone();
    cfg.max_new_tokens = Some(3);
    cfg.num_beams = 2;
    cfg.num_return_sequences = 2;
    let got = generator.generate(&["The quick", "a"], &cfg).unwrap();
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    assert!(got[1][0].generated_text.starts_with('a'));
}

#[test]
fn a_model_without_the_head_is_refused() {
    let opts = StoreOptions::default();
    let err = QuestionAnswering::load(&spec("gpt2/tiny-lm"), &opts)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("question answering"), "{err}");
    let err = TokenClassification::load(&spec("bert/tiny-mlm"), &opts)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("no token-classification head"),
        "{err}"
    );
    let err = TextGeneration::load(&spec("bert/tiny-seq-cls"), &opts)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}
