//! The library's one error type. Every variant names what the user can fix: the file, the
//! field, the weight or the line.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is in the message, not chained as a source, so `{:#}` does not repeat it.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{path}: invalid JSON: {cause}")]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },

    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },

    #[error("{path}: unknown model_type {model_type:?}; supported: {}", supported.join(", "))]
    UnknownModelType {
        path: PathBuf,
        model_type: String,
        supported: Vec<&'static str>,
    },

    #[error("model not found: {spec}: {message}")]
    ModelNotFound { spec: String, message: String },

    #[error("{dir}: no weights found (looked for {})", looked_for.join(", "))]
    NoWeights {
        dir: PathBuf,
        looked_for: Vec<&'static str>,
    },

    #[error("{path}: cannot read weights: {message}")]
    BadWeights { path: PathBuf, message: String },

    #[error("weight `{name}` is missing from {}", source_desc(.files))]
    MissingWeight { name: String, files: Vec<PathBuf> },

    #[error("weight `{name}` in {}: expected shape {expected:?}, found {found:?}", file.display())]
    ShapeMismatch {
        name: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error(
        "the tokenizer has {tokenizer} tokens but the model's embeddings have {model} rows \
         (vocab_size in config.json); token ids up to {} would be out of range",
        tokenizer - 1
    )]
    VocabMismatch { tokenizer: usize, model: usize },

    /// The caller's input is wrong (a flag, a text, a data line).
    #[error("{0}")]
    InvalidInput(String),

    /// A well-formed request ptm does not do (a task a family has no class for, say).
    #[error("{0}")]
    Unsupported(String),

    /// ptm broke its own invariant: a bug to report, not something the caller can fix.
    #[error("internal error (please report): {0}")]
    Internal(String),

    /// A line past the per-line byte limit (a file without line breaks, say).
    #[error("{source_name}:{line}: a line longer than {limit} bytes (the limit per line)")]
    LineTooLong {
        source_name: String,
        line: usize,
        limit: usize,
    },

    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

fn source_desc(files: &[PathBuf]) -> String {
    match files {
        [] => "the checkpoint".to_string(),
        [one] => one.display().to_string(),
        many => format!(
            "the checkpoint ({})",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub fn config(path: impl Into<PathBuf>, field: &str, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn tokenizer(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Tokenizer {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// An `Unsupported` error said as what `task` needs of the model in `dir` (other kinds
    /// pass unchanged): "fill-mask: DIR: a gpt2 model has no masked-LM head; …".
    pub fn for_task(self, task: &str, dir: &std::path::Path) -> Self {
        match self {
            Error::Unsupported(m) => Error::Unsupported(format!("{task}: {}: {m}", dir.display())),
            other => other,
        }
    }

    /// Whose the error is: a server answers 4xx for the first two kinds and 5xx for the last.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unsupported(_) | Error::UnknownModelType { .. } => ErrorKind::Unsupported,
            Error::Internal(_) | Error::Tensor(_) => ErrorKind::Internal,
            // An I/O failure on the caller's path is about their input; one we cannot
            // attribute (out of disk, say) is still reported with the path it hit.
            Error::Io { .. }
            | Error::Json { .. }
            | Error::Config { .. }
            | Error::ModelNotFound { .. }
            | Error::NoWeights { .. }
            | Error::BadWeights { .. }
            | Error::MissingWeight { .. }
            | Error::ShapeMismatch { .. }
            | Error::Tokenizer { .. }
            | Error::VocabMismatch { .. }
            | Error::InvalidInput(_)
            | Error::LineTooLong { .. } => ErrorKind::BadInput,
        }
    }
}

/// The three kinds of [`Error`], for callers that answer differently (a server's 400 / 501 /
/// 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input or files are wrong; the message says what to fix.
    BadInput,
    /// Well-formed, but not something ptm does.
    Unsupported,
    /// A failure inside ptm or the tensor engine.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_tell_the_callers_input_from_unsupported_requests_and_bugs() {
        assert_eq!(Error::invalid("x").kind(), ErrorKind::BadInput);
        assert_eq!(
            Error::config("config.json", "hidden_size", "must be at least 1").kind(),
            ErrorKind::BadInput
        );
        assert_eq!(Error::unsupported("x").kind(), ErrorKind::Unsupported);
        assert_eq!(
            Error::UnknownModelType {
                path: "config.json".into(),
                model_type: "gpt7".into(),
                supported: vec!["bert"],
            }
            .kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(Error::internal("x").kind(), ErrorKind::Internal);
        assert!(Error::internal("x").to_string().contains("please report"));
    }
}
