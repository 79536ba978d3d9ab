//! generate() against transformers' generate() on the tiny GPT-2: greedy search with and
//! without repetition penalty / no-repeat n-grams, one prompt at a time and as a left-padded
//! batch (tools/reference/make_gpt2_fixtures.py).

mod common;

use common::fixtures;
use ptm::config::ModelConfig;
use ptm::generate::{GenerationConfig, generate};
use ptm::models::Pretrained;
use ptm::models::gpt2::Gpt2LMHeadModel;
use ptm::nn::StoreOptions;

fn model() -> (Gpt2LMHeadModel, GenerationConfig) {
    let dir = fixtures().join("gpt2/tiny-lm");
    let p = Pretrained::from_dir(&dir).unwrap();
    let ModelConfig::Gpt2(cfg) = &p.config else {
        panic!("not GPT-2")
    };
    let store = p.store(&StoreOptions::default()).unwrap();
    let generation = GenerationConfig::from_dir(
        &dir,
        cfg.eos_token_ids(),
        cfg.bos_token_id,
        cfg.pad_token_id,
    )
    .unwrap();
    (
        Gpt2LMHeadModel::new(cfg, &store.root()).unwrap(),
        generation,
    )
}

#[test]
fn greedy_and_beam_search_equal_transformers_single_and_batched() {
    let (m, base) = model();
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gpt2/tiny-lm.generate.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for case in &cases {
        let s = &case["settings"];
        let mut cfg = base.clone();
        let num = |k: &str, d: u64| s.get(k).and_then(|v| v.as_u64()).unwrap_or(d) as usize;
        cfg.num_beams = num("num_beams", 1);
        cfg.num_return_sequences = num("num_return_sequences", 1);
        cfg.min_new_tokens = num("min_new_tokens", 0);
        cfg.length_penalty = s
            .get("length_penalty")
            .and_then(|v| v.as_f64())
            .unwrap_or(1.0);
        if let Some(e) = s.get("early_stopping") {
            cfg.early_stopping = serde_json::from_value(e.clone()).unwrap();
        }
        if let Some(e) = s.get("eos_token_id") {
            cfg.eos_token_id = Some(serde_json::from_value(e.clone()).unwrap());
            cfg.pad_token_id = Some(0); // the fixture passes pad_token_id = 0 (<|endoftext|>)
        }
        cfg.max_new_tokens = s["max_new_tokens"].as_u64().map(|v| v as usize);
        cfg.repetition_penalty = s
            .get("repetition_penalty")
            .and_then(|v| v.as_f64())
            .unwrap_or(1.0);
        cfg.no_repeat_ngram_size = s
            .get("no_repeat_ngram_size")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize;
        let ids: Vec<Vec<u32>> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let mask: Vec<Vec<u32>> = serde_json::from_value(case["attention_mask"].clone()).unwrap();
        let prompts: Vec<Vec<u32>> = ids
            .iter()
            .zip(&mask)
            .map(|(row, m)| {
                row.iter()
                    .zip(m)
                    .filter(|(_, k)| **k == 1)
                    .map(|(t, _)| *t)
                    .collect()
            })
            .collect();
        let want: Vec<Vec<u32>> = serde_json::from_value(case["new_tokens"].clone()).unwrap();
        let got = generate(&m, &prompts, &cfg, None, &mut |_, _| {}).unwrap();
        assert_eq!(got.len(), want.len());
        // transformers pads shorter outputs to the longest returned one: with the pad id, except
        // that beam search reads a pad id of 0 as absent (`pad or eos[0]`) and pads with EOS.
        let pad = match (cfg.num_beams > 1, cfg.pad_id()) {
            (true, 0) => cfg.eos_ids()[0],
            (_, p) => p,
        };
        for (g, w) in got.iter().zip(&want) {
            let (head, tail) = w.split_at(g.token_ids.len().min(w.len()));
            assert_eq!(
                g.token_ids, head,
                "settings {s}, prompts {}",
                case["prompts"]
            );
            assert!(
                tail.iter().all(|t| *t == pad),
                "settings {s}: ptm stopped early"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}

#[test]
fn streaming_sees_every_token_and_sampling_is_seeded() {
    let (m, base) = model();
    let cfg = GenerationConfig {
        do_sample: true,
        top_k: 20,
        top_p: 0.9,
        temperature: 0.8,
        max_new_tokens: Some(15),
        seed: 7,
        ..base
    };
    let prompts = vec![vec![52, 258, 221], vec![7]];
    let mut streamed = vec![Vec::new(); 2];
    let a = generate(&m, &prompts, &cfg, None, &mut |row, t| {
        streamed[row].push(t)
    })
    .unwrap();
    let b = generate(&m, &prompts, &cfg, None, &mut |_, _| {}).unwrap();
    let c = generate(
        &m,
        &prompts,
        &GenerationConfig {
            seed: 8,
            ..cfg.clone()
        },
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(streamed[0], a[0].token_ids);
    assert_eq!(a[0].token_ids.len(), 15);
}

#[test]
fn bad_settings_are_errors() {
    let (m, base) = model();
    let run = |cfg: GenerationConfig, prompts: Vec<Vec<u32>>| {
        generate(&m, &prompts, &cfg, None, &mut |_, _| {})
            .unwrap_err()
            .to_string()
    };
    assert!(
        run(
            GenerationConfig {
                top_p: 1.5,
                do_sample: true,
                ..base.clone()
            },
            vec![vec![1]]
        )
        .contains("top_p")
    );
    assert!(
        run(
            GenerationConfig {
                num_beams: 0,
                ..base.clone()
            },
            vec![vec![1]]
        )
        .contains("num_beams")
    );
    assert!(run(base.clone(), vec![vec![]]).contains("empty prompt"));
    let long = vec![vec![5u32; 60]];
    assert!(
        run(
            GenerationConfig {
                max_new_tokens: Some(10),
                ..base
            },
            long
        )
        .contains("64 positions")
    );
}

#[test]
fn sliding_window_perplexity_equals_the_documented_loop() {
    let (m, _) = model();
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gpt2/tiny-lm.perplexity.json")).unwrap(),
    )
    .unwrap();
    let tok = ptm::tokenizer::Tokenizer::from_dir(&fixtures().join("gpt2/tiny-lm")).unwrap();
    let ids = tok
        .encode_batch(&[v["text"].as_str().unwrap()])
        .unwrap()
        .encodings[0]
        .get_ids()
        .to_vec();
    let (ppl, tokens) = ptm::generate::perplexity(
        &m,
        &ids,
        v["max_length"].as_u64().unwrap() as usize,
        v["stride"].as_u64().unwrap() as usize,
    )
    .unwrap();
    assert_eq!(tokens as u64, v["tokens"].as_u64().unwrap());
    let want = v["perplexity"].as_f64().unwrap();
    assert!((ppl - want).abs() / want < 1e-4, "{ppl} vs {want}");
}

/// Each logits processor gives transformers' filtered scores on random inputs.
#[test]
fn logits_processors_equal_transformers() {
    let r = common::Reference::load(fixtures().join("gpt2/processors.safetensors"));
    let scores = r.get("in.scores").to_vec2::<f32>().unwrap();
    let ids = r.u32("in.input_ids").to_vec2::<u32>().unwrap();
    // Only the processor under test: sampling on (for the warpers) with the others neutral.
    let only = GenerationConfig {
        do_sample: true,
        top_k: 0,
        top_p: 1.0,
        temperature: 1.0,
        ..Default::default()
    };
    let cases = [
        (
            "top_k_7",
            GenerationConfig {
                top_k: 7,
                ..only.clone()
            },
        ),
        (
            "top_p_0.8",
            GenerationConfig {
                top_p: 0.8,
                ..only.clone()
            },
        ),
        (
            "top_p_0.05",
            GenerationConfig {
                top_p: 0.05,
                ..only.clone()
            },
        ),
        (
            "temperature_0.7",
            GenerationConfig {
                temperature: 0.7,
                ..only.clone()
            },
        ),
        (
            "repetition_1.5",
            GenerationConfig {
                repetition_penalty: 1.5,
                ..only.clone()
            },
        ),
        (
            "no_repeat_2",
            GenerationConfig {
                no_repeat_ngram_size: 2,
                ..only.clone()
            },
        ),
        (
            "min_new_tokens_5",
            GenerationConfig {
                min_new_tokens: 5,
                eos_token_id: Some(ptm::config::TokenIds::One(0)),
                ..only.clone()
            },
        ),
    ];
    for (name, cfg) in cases {
        let want = r.get(&format!("out.{name}")).to_vec2::<f32>().unwrap();
        for (row, (s, w)) in scores.iter().zip(&want).enumerate() {
            let mut got = s.clone();
            // The fixture's prompt is 10 tokens of the 12: two new tokens so far.
            ptm::generate::process_logits(&cfg, &ids[row], 2, &mut got);
            for (i, (g, w)) in got.iter().zip(w).enumerate() {
                let same = (g.is_infinite() && g == w) || (g - w).abs() <= 1e-5 * w.abs().max(1.0);
                assert!(same, "{name} row {row} token {i}: {g} vs {w}");
            }
            assert!(
                got.iter().zip(s).any(|(g, s)| g != s),
                "{name} changed nothing in row {row}"
            );
        }
    }
}

/// A stop string ends a generation once the decoded new tokens contain it.
#[test]
fn stop_strings_end_generation() {
    let (m, base) = model();
    let tok = ptm::tokenizer::Tokenizer::from_dir(&fixtures().join("gpt2/tiny-lm")).unwrap();
    let prompt = tok.encode_batch(&["The quick brown"]).unwrap().encodings[0]
        .get_ids()
        .to_vec();
    let cfg = GenerationConfig {
        max_new_tokens: Some(12),
        ..base
    };
    let free = generate(
        &m,
        std::slice::from_ref(&prompt),
        &cfg,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let text = tok.decode(&free[0].token_ids, true).unwrap();
    assert!(text.contains(" the"), "the fixture's greedy text: {text:?}");
    let stops = vec![" the".to_string()];
    let check = ptm::generate::stop_string_checker(&stops, |ids| tok.decode(ids, true).ok());
    let stopped = generate(&m, &[prompt], &cfg, Some(&check), &mut |_, _| {}).unwrap();
    assert_eq!(stopped[0].finish_reason, "stop_string");
    let stopped_text = tok.decode(&stopped[0].token_ids, true).unwrap();
    assert!(
        stopped_text.ends_with(" the") && text.starts_with(&stopped_text),
        "{stopped_text:?} vs {text:?}"
    );
}

/// XLNet generates as transformers does: the memory of earlier steps, the last two tokens fed
/// again with a dummy token that the query stream predicts; greedy scores at every step and
/// beam search (tools/reference/make_xlnet_fixtures.py generate).
#[test]
fn xlnet_greedy_and_beam_search_equal_transformers() {
    use ptm::models::traits::CausalLm;
    use ptm::models::xlnet::XlnetLMHeadModel;
    let dir = fixtures().join("xlnet/bi");
    let p = Pretrained::from_dir(&dir).unwrap();
    let ModelConfig::Xlnet(cfg) = &p.config else {
        panic!("not XLNet")
    };
    let store = p.store(&StoreOptions::default()).unwrap();
    let m = XlnetLMHeadModel::new(cfg, &store.root()).unwrap();
    let base = GenerationConfig::from_dir(
        &dir,
        cfg.eos_token_ids(),
        cfg.bos_token_id,
        cfg.pad_token_id,
    )
    .unwrap();
    let base = GenerationConfig {
        eos_token_id: None,
        ..base
    };
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("xlnet/generate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cases.len(), 2);
    for case in &cases {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt"].clone()).unwrap();
        let field = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(case[k].clone()).unwrap() };
        let greedy = generate(
            &m,
            std::slice::from_ref(&prompt),
            &GenerationConfig {
                max_new_tokens: Some(8),
                ..base.clone()
            },
            None,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(
            vec![greedy[0].token_ids.clone()],
            vec![serde_json::from_value::<Vec<u32>>(case["greedy"].clone()).unwrap()],
            "greedy from {prompt:?}"
        );
        // Each step's scores, fed the reference's own tokens.
        let scores: Vec<Vec<f32>> = serde_json::from_value(case["scores"].clone()).unwrap();
        let mut cache = m.new_state();
        let mut fed = prompt.clone();
        for (step, want) in scores.iter().enumerate() {
            let ids = candle_core::Tensor::from_vec(
                fed.clone(),
                (1, fed.len()),
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let input = ptm::models::gpt2::DecoderInput::new(&ids);
            let logits = m
                .step(input, cache.as_mut())
                .unwrap()
                .squeeze(0)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let worst = logits
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-4,
                "step {step} from {prompt:?}: scores differ by {worst}"
            );
            fed = vec![greedy[0].token_ids[step]];
        }
        let beams = GenerationConfig {
            max_new_tokens: Some(6),
            num_beams: 3,
            num_return_sequences: 2,
            ..base.clone()
        };
        let got: Vec<Vec<u32>> = generate(
            &m,
            std::slice::from_ref(&prompt),
            &beams,
            None,
            &mut |_, _| {},
        )
        .unwrap()
        .into_iter()
        .map(|g| g.token_ids)
        .collect();
        assert_eq!(got, field("beams"), "beams from {prompt:?}");
    }
}
