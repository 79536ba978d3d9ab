//! Load a fine-tuned model and its tokenizer from a directory, run a forward pass with labels,
//! and read the loss and the logits — transformers' `model(**inputs, labels=labels)`.
//!
//! cargo run --example forward_with_labels -- [MODEL_DIR]
//! (default: the tiny BERT sequence classifier under tests/fixtures)

use candle_core::Tensor;
use ptm::models::{Pretrained, auto};
use ptm::nn::{Mode, StoreOptions};

fn main() -> ptm::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/bert/tiny-seq-cls"
        )
        .into()
    });
    let pretrained = Pretrained::open(&dir)?;
    let tokenizer = pretrained.checked_tokenizer()?;
    let (model, _) = pretrained.load(auto::sequence_classifier, &StoreOptions::default())?;
    println!("{} from {dir}", model.architecture());

    let texts = ["the cat sat on the mat.", "paris is the capital of france."];
    let batch = tokenizer.encode_batch(&texts)?;
    let input = batch.to_input(tokenizer.pad_spec(), &model.device())?;
    let labels = Tensor::new(&[0i64, 1], &model.device())?; // (batch)
    let out = model.forward(&input, Some(&labels), Mode::Eval)?;

    let loss = out.loss.expect("labels were given").to_scalar::<f32>()?;
    println!("loss {loss:.4}");
    let names = &pretrained.config.common().id2label;
    for (text, row) in texts.iter().zip(out.logits.to_vec2::<f32>()?) {
        let best = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0);
        println!("{text:?}: logits {row:?} -> {}", names[best]);
    }
    Ok(())
}
