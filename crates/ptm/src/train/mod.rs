//! Training: the optimizer, learning-rate schedules and gradient clipping (the loop,
//! checkpoints and logging build on these).

pub mod checkpoint;
pub mod distributed;
mod optim;
pub mod output_dir;
mod schedule;
mod trainer;

pub use optim::{AdamW, AdamWConfig, clip_grad_norm, no_weight_decay};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{
    BEST_MODEL, BestModel, EvalRecord, Evaluator, LogRecord, LossEvaluator, LossTerms, ModelSpec,
    Objective, TRAIN_LOG, TrainArgs, TrainOutcome, epoch_order, train,
};
