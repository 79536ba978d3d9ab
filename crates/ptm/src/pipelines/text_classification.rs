//! Text classification of texts and text pairs, as transformers' text-classification pipeline:
//! each input's labels with scores, after its `function_to_apply` (softmax, sigmoid or none),
//! the best `top_k` first.

use candle_core::Tensor;

use super::Inputs;
use crate::config::ProblemType;
use crate::error::{Error, Result};
use crate::finetune::seq_cls;
use crate::models::traits::SequenceClassifier;
use crate::models::{Pretrained, auto, report_load, require_trained};
use crate::nn::StoreOptions;

/// One input: a text, or a pair the model reads together (premise and hypothesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextInput<'a> {
    Text(&'a str),
    Pair(&'a str, &'a str),
}

impl<'a> From<&'a str> for TextInput<'a> {
    fn from(text: &'a str) -> Self {
        TextInput::Text(text)
    }
}

impl<'a> From<(&'a str, &'a str)> for TextInput<'a> {
    fn from((text, pair): (&'a str, &'a str)) -> Self {
        TextInput::Pair(text, pair)
    }
}

/// transformers' `function_to_apply`: what turns the logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassificationFunction {
    /// Probabilities over the labels (single-label classification).
    Softmax,
    /// An independent probability per label (multi-label classification, one label).
    Sigmoid,
    /// The logits as they are (regression).
    None,
}

impl ClassificationFunction {
    fn apply(self, logits: &Tensor) -> Result<Tensor> {
        match self {
            ClassificationFunction::Softmax => crate::nn::ops::softmax_last_dim(logits),
            ClassificationFunction::Sigmoid => crate::nn::ops::sigmoid(logits),
            ClassificationFunction::None => Ok(logits.clone()),
        }
    }
}

/// What `classify` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// `None`: the model's own, as transformers picks it from `problem_type` and the number of
    /// labels.
    pub function_to_apply: Option<ClassificationFunction>,
    /// The best this many labels of each input; `None`: every label (transformers'
    /// `top_k=None`). transformers returns a bare dict for its default `top_k=1`; here it is
    /// always a list.
    pub top_k: Option<usize>,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            function_to_apply: None,
            top_k: Some(1),
        }
    }
}

/// A label and its score, with transformers' field names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

pub struct TextClassification {
    inputs: Inputs,
    model: Box<dyn SequenceClassifier>,
    labels: Vec<String>,
    problem_type: Option<ProblemType>,
}

impl TextClassification {
    /// Loads a sequence classifier (`…ForSequenceClassification`) with its label names.
    pub fn load(spec: &str, store: &StoreOptions) -> Result<Self> {
        let pretrained = Pretrained::open(spec)?;
        let inputs = Inputs::new(&pretrained)?;
        let params = pretrained.store(store)?;
        let model = auto::sequence_classifier(&pretrained.config, &params.root())
            .map_err(|e| e.for_task("text classification", &pretrained.dir))?;
        require_trained(
            &params,
            &pretrained.dir,
            &format!(
                "sequence-classification head (e.g. saved as {})",
                model.architecture()
            ),
        )?;
        report_load(&params, model.architecture());
        let common = pretrained.config.common();
        Ok(TextClassification {
            inputs,
            model,
            labels: common.id2label.clone(),
            problem_type: common.problem_type,
        })
    }

    /// Cuts inputs longer than `max_length` tokens (default: the model's positions).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.inputs.set_max_length(max_length)?;
        Ok(self)
    }

    /// Runs the model on this many inputs at a time (default 32).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        self.inputs.set_batch_size(batch_size)?;
        Ok(self)
    }

    /// The most tokens an input may have.
    pub fn max_positions(&self) -> usize {
        self.inputs.positions
    }

    /// The label names, in the model's order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// transformers' default `function_to_apply`: none for regression, sigmoid for multi-label
    /// classification or a single label, else softmax.
    pub fn default_function(&self) -> ClassificationFunction {
        match self.problem_type {
            Some(ProblemType::Regression) => ClassificationFunction::None,
            Some(ProblemType::MultiLabelClassification) => ClassificationFunction::Sigmoid,
            _ if self.labels.len() == 1 => ClassificationFunction::Sigmoid,
            _ => ClassificationFunction::Softmax,
        }
    }

    /// Each input's score of every label, in label order, as `function` makes them. Not
    /// checked: an overflowing model's NaN comes back as it is, for callers that name the
    /// failing input their own way ([`crate::pipelines::check_finite`]); `classify` checks.
    pub fn scores(
        &self,
        inputs: &[TextInput],
        function: ClassificationFunction,
    ) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<(&str, Option<&str>)> = inputs
            .iter()
            .map(|i| match *i {
                TextInput::Text(t) => (t, None),
                TextInput::Pair(a, b) => (a, Some(b)),
            })
            .collect();
        let encodings = seq_cls::encode(&self.inputs.tokenizer, &inputs)?;
        seq_cls::scores(
            self.model.as_ref(),
            &encodings,
            self.inputs.pad,
            self.inputs.batch_size,
            None,
            |logits| function.apply(logits),
        )
    }

    /// Each input's labels with their scores, best first (ties in label order).
    pub fn classify(
        &self,
        inputs: &[TextInput],
        options: &ClassifyOptions,
    ) -> Result<Vec<Vec<LabelScore>>> {
        if options.top_k == Some(0) {
            return Err(Error::invalid("top_k must be at least 1"));
        }
        let function = options
            .function_to_apply
            .unwrap_or_else(|| self.default_function());
        let scores = self.scores(inputs, function)?;
        scores
            .into_iter()
            .enumerate()
            .map(|(n, row)| {
                super::check_finite(|| format!("input {}: label scores", n + 1), &row)?;
                let mut ranked: Vec<LabelScore> = self
                    .labels
                    .iter()
                    .zip(row)
                    .map(|(label, score)| LabelScore {
                        label: label.clone(),
                        score,
                    })
                    .collect();
                // Stable, as Python's sort: equal scores keep label order.
                ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
                ranked.truncate(options.top_k.unwrap_or(usize::MAX));
                Ok(ranked)
            })
            .collect()
    }
}
