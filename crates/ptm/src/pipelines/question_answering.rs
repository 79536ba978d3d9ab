//! Extractive question answering: the span of a context that answers a question, with its
//! character offsets. A long context is read in windows that overlap by a doc stride, and the
//! answer is the best span over all of them (fine-tuning's evaluation, [`crate::finetune::qa`]).

use super::Inputs;
use crate::error::{Error, Result};
use crate::finetune::qa;
pub use crate::finetune::qa::Answer;
use crate::models::traits::SpanExtractor;
use crate::models::{Pretrained, auto, report_load, require_trained};
use crate::nn::StoreOptions;

/// A question about a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QaInput<'a> {
    pub question: &'a str,
    pub context: &'a str,
}

/// How answers are searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QaOptions {
    /// Context tokens shared by consecutive windows; `None`: a third of the maximum length
    /// (transformers' 128 of 384).
    pub doc_stride: Option<usize>,
    /// The longest answer, in tokens (run_qa's `max_answer_length`).
    pub max_answer_tokens: usize,
}

impl Default for QaOptions {
    fn default() -> Self {
        QaOptions {
            doc_stride: None,
            max_answer_tokens: 30,
        }
    }
}

pub struct QuestionAnswering {
    inputs: Inputs,
    model: Box<dyn SpanExtractor>,
}

impl QuestionAnswering {
    /// Loads an extractive question-answering model (`…ForQuestionAnswering`).
    pub fn load(spec: &str, store: &StoreOptions) -> Result<Self> {
        let pretrained = Pretrained::open(spec)?;
        let inputs = Inputs::new(&pretrained)?;
        let params = pretrained.store(store)?;
        let model = auto::span_extractor(&pretrained.config, &params.root())
            .map_err(|e| e.for_task("question answering", &pretrained.dir))?;
        require_trained(
            &params,
            &pretrained.dir,
            &format!(
                "question-answering head (e.g. saved as {})",
                model.architecture()
            ),
        )?;
        report_load(&params, model.architecture());
        Ok(QuestionAnswering { inputs, model })
    }

    /// Windows of at most `max_length` tokens, question included (default: the model's
    /// positions).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.inputs.set_max_length(max_length)?;
        Ok(self)
    }

    /// Runs the model on this many windows at a time (default 32).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        self.inputs.set_batch_size(batch_size)?;
        Ok(self)
    }

    /// The most tokens a window may have.
    pub fn max_positions(&self) -> usize {
        self.inputs.positions
    }

    /// The best answer of each question: its text, character span in the context and
    /// probability among the candidate spans (empty with score 0 when no span fits).
    pub fn answer(&self, inputs: &[QaInput], options: &QaOptions) -> Result<Vec<Answer>> {
        let max_length = self.inputs.max_length;
        let doc_stride = options.doc_stride.unwrap_or(max_length / 3);
        qa::check_stride(max_length, doc_stride)?;
        if options.max_answer_tokens == 0 {
            return Err(Error::invalid("max_answer_tokens must be at least 1"));
        }
        let mut windows = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            if input.question.trim().is_empty() || input.context.trim().is_empty() {
                return Err(Error::invalid(format!(
                    "question {}: an empty question or context",
                    n + 1
                )));
            }
            windows.extend(qa::windows(
                &self.inputs.tokenizer,
                n,
                (input.question, input.context),
                max_length,
                doc_stride,
                None,
            )?);
        }
        let contexts: Vec<&str> = inputs.iter().map(|i| i.context).collect();
        let answers = qa::answers(
            self.model.as_ref(),
            &contexts,
            &windows,
            self.inputs.pad,
            self.inputs.batch_size,
            options.max_answer_tokens,
            None,
        )?;
        for (n, a) in answers.iter().enumerate() {
            super::check_finite(|| format!("question {}: answer score", n + 1), &[a.score])?;
        }
        Ok(answers)
    }
}
