//! Learning-rate schedules as transformers defines them (`get_*_schedule_with_warmup`): the
//! factor of the base rate at each optimizer step, counted from 0.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based): with warmup, step 0 has rate 0,
    /// as transformers' LambdaLR gives it.
    pub fn lr(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warm = |f: f64| {
            if step < self.warmup_steps {
                s / w.max(1.0)
            } else {
                f
            }
        };
        let factor = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::ConstantWithWarmup => warm(1.0),
            ScheduleKind::Linear => warm(((t - s) / (t - w).max(1.0)).max(0.0)),
            ScheduleKind::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                warm((0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0))
            }
        };
        self.base_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_the_schedules() {
        let s = |kind| Schedule {
            kind,
            base_lr: 1.0,
            warmup_steps: 2,
            total_steps: 10,
        };
        assert_eq!(s(ScheduleKind::Linear).lr(0), 0.0);
        assert_eq!(s(ScheduleKind::Linear).lr(1), 0.5);
        assert_eq!(s(ScheduleKind::Linear).lr(2), 1.0);
        assert_eq!(s(ScheduleKind::Linear).lr(6), 0.5);
        assert_eq!(s(ScheduleKind::Linear).lr(12), 0.0);
        assert_eq!(s(ScheduleKind::ConstantWithWarmup).lr(5), 1.0);
        assert!((s(ScheduleKind::Cosine).lr(6) - 0.5).abs() < 1e-12);
        assert_eq!(s(ScheduleKind::Constant).lr(0), 1.0);
    }
}
