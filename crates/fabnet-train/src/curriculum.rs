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
    /// Validations that must pass between two shifts (or stall events).
    pub min_epochs_between_shifts: u32,
    /// Stall events without improvement (after the last shift) before the lr
    /// is cut: PyTorch's `ReduceLROnPlateau` patience, stepped once per event.
    pub lr_patience: u32,
    /// The factor the lr is multiplied by on a plateau.
    pub lr_factor: f64,
}

impl CurriculumConfig {
    /// The authors' schedule: [0, 0.5) moving by 0.1 to [0.4, 0.9), patience
    /// 16 and 16 epochs between shifts; then lr × 0.1 once more than 10 stall
    /// events in a row brought no improvement (each at least 16 epochs apart,
    /// so in practice the lr stays constant).
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

/// PyTorch's `ReduceLROnPlateau` default: an improvement must beat the best
/// value by this fraction of it.
const PLATEAU_THRESHOLD: f64 = 1e-4;

/// The schedule's state; saved in checkpoints so a resumed run continues the
/// same schedule.
///
/// It follows the authors' code (`TrackLoss` and `ReduceLROnPlateau`): a
/// *stall event* fires when validation has not improved for `patience`
/// validations and `min_epochs_between_shifts` validations have passed since
/// the last event or shift. Before the last window an event shifts the
/// window and restarts the tracking, so the new window is judged against
/// itself. After it, each event is one step of a plateau rule that cuts the
/// learning rate when `lr_patience` events in a row brought no improvement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curriculum {
    /// The settings.
    pub config: CurriculumConfig,
    /// The current window [lo, hi), as fractions of the batch.
    pub window: (f64, f64),
    /// How many shifts have happened.
    pub shifts: u32,
    /// The best validation loss since the last shift (or the start).
    pub best: Option<f64>,
    /// Validations since that best one.
    pub stalled: u32,
    /// Validations since the last shift or stall event (or the start).
    #[serde(alias = "since_shift")]
    pub since_event: u32,
    /// Stall events since the plateau rule's last improvement or lr cut.
    pub plateau: u32,
    /// The plateau rule's best validation loss (at stall events after the last shift).
    #[serde(default)]
    pub plateau_best: Option<f64>,
    /// The best validation loss of the whole run.
    #[serde(default)]
    pub best_ever: Option<f64>,
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
            since_event: 0,
            plateau: 0,
            plateau_best: None,
            best_ever: None,
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
        if self.best_ever.is_none_or(|b| loss < b) {
            self.best_ever = Some(loss);
        }
        if self.best.is_none_or(|b| loss < b) {
            self.best = Some(loss);
            self.stalled = 0;
        } else {
            self.stalled += 1;
        }
        self.since_event += 1;
        let stall_event = self.stalled >= self.config.patience
            && self.since_event >= self.config.min_epochs_between_shifts;
        if !self.config.enabled || !stall_event {
            return ScheduleEvent::None;
        }
        self.since_event = 0;
        if self.shifts < self.max_shifts() {
            self.shifts += 1;
            let k = f64::from(self.shifts) * self.config.shift;
            self.window = (self.config.start.0 + k, self.config.start.1 + k);
            self.best = None;
            self.stalled = 0;
            return ScheduleEvent::Shifted;
        }
        if self
            .plateau_best
            .is_none_or(|b| loss < b * (1.0 - PLATEAU_THRESHOLD))
        {
            self.plateau_best = Some(loss);
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
