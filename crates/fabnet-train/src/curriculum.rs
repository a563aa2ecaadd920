//! The curriculum of FAb-Net (reference §4): each batch is ranked by loss and
//! only a sliding percentile window is back-propagated. The window starts at
//! [0, 0.5) and moves up by 0.1 whenever validation has stalled, until
//! [0.4, 0.9); after the last shift a ReduceLROnPlateau rule takes over.

use serde::{Deserialize, Serialize};

/// The schedule's settings. [`CurriculumConfig::paper`] gives the authors'.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurriculumConfig {
    /// Whether the curriculum is on; off means the window is always [0, 1).
    pub enabled: bool,
    /// The starting window, as fractions of the batch.
    pub start: (f64, f64),
    /// How far both ends move at each shift.
    pub shift: f64,
    /// The last window; no shift goes beyond it.
    pub last: (f64, f64),
    /// Validations without improvement before a shift.
    pub patience: u32,
    /// Validations that must pass between two shifts.
    pub min_epochs_between_shifts: u32,
    /// Stalled validations (after the last shift) before the lr is cut.
    pub lr_patience: u32,
    /// The factor the lr is multiplied by on a plateau.
    pub lr_factor: f64,
}

impl CurriculumConfig {
    /// The authors' schedule: [0, 0.5) moving by 0.1 to [0.4, 0.9), patience
    /// 16 and 16 epochs between shifts; then lr × 0.1 after 10 stalled epochs.
    pub fn paper() -> Self {
        Self {
            enabled: true,
            start: (0.0, 0.5),
            shift: 0.1,
            last: (0.4, 0.9),
            patience: 16,
            min_epochs_between_shifts: 16,
            lr_patience: 10,
            lr_factor: 0.1,
        }
    }

    /// No curriculum: every sample is back-propagated.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::paper()
        }
    }
}

/// What a validation result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleEvent {
    /// Nothing changed.
    None,
    /// The window moved up by one shift.
    Shifted,
    /// The learning rate should be multiplied by the plateau factor.
    ReduceLr,
}

/// The schedule's state; saved in checkpoints so a resumed run continues the
/// same schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curriculum {
    /// The settings.
    pub config: CurriculumConfig,
    /// The current window [lo, hi), as fractions of the batch.
    pub window: (f64, f64),
    /// How many shifts have happened.
    pub shifts: u32,
    /// The best validation loss seen so far.
    pub best: Option<f64>,
    /// Validations since the best one.
    pub stalled: u32,
    /// Validations since the last shift (or the start).
    pub since_shift: u32,
    /// Stalled validations since the last lr cut (after the last shift).
    pub plateau: u32,
}

impl Curriculum {
    /// A fresh schedule at its starting window.
    pub fn new(config: CurriculumConfig) -> Self {
        let window = if config.enabled {
            config.start
        } else {
            (0.0, 1.0)
        };
        Self {
            config,
            window,
            shifts: 0,
            best: None,
            stalled: 0,
            since_shift: 0,
            plateau: 0,
        }
    }

    /// Number of shifts until the last window.
    fn max_shifts(&self) -> u32 {
        let span = self.config.last.0 - self.config.start.0;
        if self.config.shift <= 0.0 {
            return 0;
        }
        (span / self.config.shift).round().max(0.0) as u32
    }

    /// Feeds one validation loss (the mean over all samples, window [0, 1)).
    pub fn observe_validation(&mut self, loss: f64) -> ScheduleEvent {
        let improved = self.best.is_none_or(|b| loss < b);
        if improved {
            self.best = Some(loss);
            self.stalled = 0;
        } else {
            self.stalled += 1;
        }
        self.since_shift += 1;
        if !self.config.enabled {
            return ScheduleEvent::None;
        }
        if self.shifts < self.max_shifts() {
            if self.stalled >= self.config.patience
                && self.since_shift >= self.config.min_epochs_between_shifts
            {
                self.shifts += 1;
                let k = f64::from(self.shifts) * self.config.shift;
                self.window = (self.config.start.0 + k, self.config.start.1 + k);
                self.since_shift = 0;
                return ScheduleEvent::Shifted;
            }
            return ScheduleEvent::None;
        }
        if improved {
            self.plateau = 0;
            return ScheduleEvent::None;
        }
        self.plateau += 1;
        if self.plateau > self.config.lr_patience {
            self.plateau = 0;
            return ScheduleEvent::ReduceLr;
        }
        ScheduleEvent::None
    }
}
