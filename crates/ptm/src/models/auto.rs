//! The registry of model families, as transformers' `AutoModel` / `AutoModelFor…`: the only
//! code that maps a `model_type`, an architecture name or a tokenizer class to Rust types.
//! Each family file implements [`Family`] (defined with the capabilities in
//! [`super::traits`]); everything above asks here for a capability and never names a family.
//!
//! ```
//! use ptm::config::ModelConfig;
//! use ptm::models::auto::{self, Head};
//!
//! let config = ModelConfig::from_value(
//!     serde_json::json!({"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2}),
//!     std::path::Path::new("(in code)"),
//! )?;
//! assert_eq!(auto::architecture_for(&config, Head::CausalLm)?, "GPT2LMHeadModel");
//! // GPT-2 has no token-classification head: an unsupported request, not bad input.
//! let err = auto::architecture_for(&config, Head::TokenClassification).unwrap_err();
//! assert_eq!(err.kind(), ptm::ErrorKind::Unsupported);
//! // The task of a saved model comes from its architecture.
//! let (family, head) = auto::class("XLNetForSequenceClassification").unwrap();
//! assert_eq!((family.model_type(), head), ("xlnet", Head::SequenceClassification));
//! # Ok::<(), ptm::Error>(())
//! ```

use std::path::Path;

use super::traits::{
    Backbone, CausalLm, MaskedLm, MaskedLmWithNextSentence, PermutationLm, SequenceClassifier,
    SpanExtractor, TokenClassifier,
};
pub use super::traits::{Class, Family, Head, PretrainingObjective};
use super::{bert, gpt2, roberta, xlnet};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::ParamBuilder;
use crate::tokenizer::{TokenizerConventions, TokenizerKind};

/// Every family ptm builds.
static FAMILIES: &[&dyn Family] = &[
    &bert::BertFamily,
    &gpt2::Gpt2Family,
    &roberta::RobertaFamily,
    &xlnet::XlnetFamily,
];

/// The family of a config.
pub fn family(config: &ModelConfig) -> Result<&'static dyn Family> {
    let model_type = config.model_type();
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.model_type() == model_type)
        .ok_or_else(|| Error::internal(format!("model_type {model_type} has no family")))
}

/// The family whose classes include `architecture`, and what that class is for.
pub fn class(architecture: &str) -> Option<(&'static dyn Family, Head)> {
    FAMILIES.iter().copied().find_map(|f| {
        f.classes()
            .iter()
            .find(|c| c.architecture == architecture)
            .map(|c| (f, c.head))
    })
}

/// The class of `config`'s family for `head`.
pub fn architecture_for(config: &ModelConfig, head: Head) -> Result<&'static str> {
    let f = family(config)?;
    f.classes()
        .iter()
        .find(|c| c.head == head)
        .map(|c| c.architecture)
        .ok_or_else(|| unsupported(f, what(head)))
}

/// The tokenizer conventions of a `tokenizer_class` (with or without `Fast`).
pub fn tokenizer_conventions(class: &str) -> Option<TokenizerConventions> {
    let class = class.strip_suffix("Fast").unwrap_or(class);
    FAMILIES
        .iter()
        .map(|f| f.tokenizer())
        .find(|t| t.class == class)
}

/// The conventions of the family `ptm tokenizer train` trains `kind` for.
pub fn trained_tokenizer_conventions(kind: TokenizerKind) -> Option<TokenizerConventions> {
    FAMILIES
        .iter()
        .map(|f| f.tokenizer())
        .find(|t| t.trains == Some(kind))
}

fn what(head: Head) -> &'static str {
    match head {
        Head::Base => "bare model",
        Head::MaskedLm => "masked-LM head",
        Head::PreTraining => "pretraining (masked LM + next sentence) head",
        Head::NextSentencePrediction => "next-sentence head",
        Head::CausalLm => "causal-LM head",
        Head::SequenceClassification => "sequence-classification head",
        Head::TokenClassification => "token-classification head",
        Head::QuestionAnswering => "question-answering head",
    }
}

/// "a gpt2 model has no X; families with one: …"
fn unsupported(f: &dyn Family, what: &str) -> Error {
    let with: Vec<&str> = FAMILIES
        .iter()
        .filter(|g| {
            g.classes()
                .iter()
                .any(|c| self::what(c.head) == what && c.head != Head::Base)
        })
        .map(|g| g.model_type())
        .collect();
    Error::unsupported(format!(
        "a {} model has no {what}; families with one: {}",
        f.model_type(),
        if with.is_empty() {
            "none".to_string()
        } else {
            with.join(", ")
        }
    ))
}

macro_rules! capability {
    ($(#[$doc:meta])* $name:ident, $trait:ident, $head:expr) => {
        $(#[$doc])*
        pub fn $name(config: &ModelConfig, vb: &ParamBuilder) -> Result<Box<dyn $trait>> {
            let f = family(config)?;
            f.$name(config, vb).unwrap_or_else(|| Err(unsupported(f, what($head))))
        }
    };
}

/// The bare model of `config`'s family (`AutoModel`).
pub fn backbone(
    config: &ModelConfig,
    vb: &ParamBuilder,
    add_pooling_layer: bool,
) -> Result<Box<dyn Backbone>> {
    family(config)?.backbone(config, vb, add_pooling_layer)
}

capability!(
    /// `AutoModelForMaskedLM`.
    masked_lm, MaskedLm, Head::MaskedLm
);
capability!(
    /// `AutoModelForPreTraining` with a next-sentence head.
    pretraining, MaskedLmWithNextSentence, Head::PreTraining
);
capability!(
    /// `AutoModelForCausalLM`.
    causal_lm, CausalLm, Head::CausalLm
);
capability!(
    /// A permutation LM (XLNet's LM head).
    permutation_lm, PermutationLm, Head::CausalLm
);
capability!(
    /// `AutoModelForSequenceClassification`.
    sequence_classifier, SequenceClassifier, Head::SequenceClassification
);
capability!(
    /// `AutoModelForTokenClassification`.
    token_classifier, TokenClassifier, Head::TokenClassification
);
capability!(
    /// `AutoModelForQuestionAnswering`.
    span_extractor, SpanExtractor, Head::QuestionAnswering
);

/// Builds the class config.json's `architectures` names (the bare model when none), to check
/// every weight it needs. Returns the class name and what it is for.
pub fn build_named_class(
    config: &ModelConfig,
    vb: &ParamBuilder,
    config_path: &Path,
) -> Result<(String, Head)> {
    let f = family(config)?;
    let arch = match config.common().architectures.first() {
        Some(a) => a.clone(),
        None => architecture_for(config, Head::Base)?.to_string(),
    };
    let unsupported = || {
        let names: Vec<&str> = f.classes().iter().map(|c| c.architecture).collect();
        Error::config(
            config_path,
            "architectures",
            format!("{arch} is not supported; supported: {}", names.join(", ")),
        )
    };
    let head = f
        .classes()
        .iter()
        .find(|c| c.architecture == arch)
        .map(|c| c.head)
        .ok_or_else(unsupported)?;
    match head {
        Head::Base => drop(backbone(config, vb, true)?),
        Head::MaskedLm => drop(masked_lm(config, vb)?),
        Head::PreTraining => drop(pretraining(config, vb)?),
        Head::CausalLm => drop(causal_lm(config, vb)?),
        Head::SequenceClassification => drop(sequence_classifier(config, vb)?),
        Head::TokenClassification => drop(token_classifier(config, vb)?),
        Head::QuestionAnswering => drop(span_extractor(config, vb)?),
        Head::NextSentencePrediction => {
            f.build_other(&arch, config, vb).ok_or_else(unsupported)??
        }
    }
    Ok((arch, head))
}

/// Fails unless `config`'s family pretrains with `objective`, naming the families that do.
pub fn check_objective(config: &ModelConfig, objective: PretrainingObjective) -> Result<()> {
    let f = family(config)?;
    if f.pretraining_objectives().contains(&objective) {
        return Ok(());
    }
    let fits: Vec<String> = PretrainingObjective::ALL
        .iter()
        .map(|o| {
            let families: Vec<&str> = FAMILIES
                .iter()
                .filter(|g| g.pretraining_objectives().contains(o))
                .map(|g| g.model_type())
                .collect();
            format!("{}: {}", o.name(), families.join(", "))
        })
        .collect();
    Err(Error::unsupported(format!(
        "--objective {} does not fit a {} model ({})",
        objective.name(),
        f.model_type(),
        fits.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn config(model_type: &str) -> ModelConfig {
        ModelConfig::from_value(
            serde_json::json!({"model_type": model_type}),
            Path::new("config.json"),
        )
        .unwrap()
    }

    #[test]
    fn every_family_is_found_by_its_model_type_and_names_its_classes_once() {
        let mut seen = std::collections::BTreeSet::new();
        for f in FAMILIES {
            assert_eq!(
                family(&config(f.model_type())).unwrap().model_type(),
                f.model_type()
            );
            let heads: Vec<Head> = f.classes().iter().map(|c| c.head).collect();
            assert_eq!(heads.first(), Some(&Head::Base), "{}", f.model_type());
            for c in f.classes() {
                assert!(seen.insert(c.architecture), "{} twice", c.architecture);
                let (g, head) = class(c.architecture).unwrap();
                assert_eq!((g.model_type(), head), (f.model_type(), c.head));
            }
        }
        assert!(class("T5ForConditionalGeneration").is_none());
    }

    #[test]
    fn a_missing_capability_is_unsupported_and_names_the_families_that_have_it() {
        let err = architecture_for(&config("gpt2"), Head::TokenClassification).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let msg = err.to_string();
        assert!(
            msg.contains("gpt2") && msg.contains("bert, roberta, xlnet"),
            "{msg}"
        );
        let err = check_objective(&config("roberta"), PretrainingObjective::MlmNsp).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not fit a roberta model (mlm: bert, roberta; mlm+nsp: bert;"),
            "{err}"
        );
        check_objective(&config("xlnet"), PretrainingObjective::Plm).unwrap();
    }

    #[test]
    fn tokenizer_conventions_come_by_class_and_each_kind_trains_for_one_family() {
        let roberta = tokenizer_conventions("RobertaTokenizerFast").unwrap();
        assert_eq!(roberta.special.cls.as_deref(), Some("<s>"));
        assert!(
            tokenizer_conventions("XLNetTokenizer")
                .unwrap()
                .padding_left
        );
        assert!(tokenizer_conventions("LlamaTokenizer").is_none());
        for kind in [
            TokenizerKind::WordPiece,
            TokenizerKind::Bpe,
            TokenizerKind::Unigram,
        ] {
            let trainers = FAMILIES
                .iter()
                .filter(|f| f.tokenizer().trains == Some(kind))
                .count();
            assert_eq!(trainers, 1, "{kind:?}");
        }
    }
}
