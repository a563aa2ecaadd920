//! The curriculum window and its schedule (reference §4).

use fabnet_train::{Curriculum, CurriculumConfig, ScheduleEvent};

fn quick() -> CurriculumConfig {
    CurriculumConfig {
        patience: 2,
        min_epochs_between_shifts: 3,
        lr_patience: 1,
        ..CurriculumConfig::paper()
    }
}

#[test]
fn window_shifts_only_after_patience_and_spacing() {
    let mut c = Curriculum::new(quick());
    assert_eq!(c.window, (0.0, 0.5));
    // Improves, then stalls twice: patience met at validation 3, and 3
    // validations have passed since the start, so it shifts there.
    assert_eq!(c.observe_validation(1.0), ScheduleEvent::None);
    assert_eq!(c.observe_validation(1.1), ScheduleEvent::None);
    assert_eq!(c.observe_validation(1.2), ScheduleEvent::Shifted);
    assert!((c.window.0 - 0.1).abs() < 1e-12 && (c.window.1 - 0.6).abs() < 1e-12);
    // The new window is judged against itself: its first validation is its
    // best, although worse than the old window's 1.0; two stalls later, and
    // three validations after the shift, it moves again.
    assert_eq!(c.observe_validation(1.3), ScheduleEvent::None);
    assert_eq!(c.best, Some(1.3));
    assert_eq!(c.observe_validation(1.3), ScheduleEvent::None);
    assert_eq!(c.observe_validation(1.3), ScheduleEvent::Shifted);
    // An improvement resets the patience.
    assert_eq!(c.observe_validation(0.5), ScheduleEvent::None);
    assert_eq!(c.observe_validation(0.4), ScheduleEvent::None);
    assert_eq!(c.observe_validation(0.6), ScheduleEvent::None);
    assert_eq!(c.observe_validation(0.7), ScheduleEvent::Shifted);
    assert_eq!(c.shifts, 3);
    assert_eq!(c.best_ever, Some(0.4));
}

#[test]
fn window_stops_at_the_last_and_then_cuts_the_lr_after_stall_events() {
    let mut c = Curriculum::new(quick());
    let mut events = Vec::new();
    // A validation loss that never improves after its first value.
    for i in 0..40 {
        events.push(c.observe_validation(1.0 + i as f64));
    }
    let at = |e: ScheduleEvent| -> Vec<usize> {
        events
            .iter()
            .enumerate()
            .filter(|(_, x)| **x == e)
            .map(|(i, _)| i)
            .collect()
    };
    // Each window: one validation sets its best, two stall, and the third
    // validation since the last shift moves it.
    assert_eq!(at(ScheduleEvent::Shifted), [2, 5, 8, 11]);
    assert!((c.window.0 - 0.4).abs() < 1e-9 && (c.window.1 - 0.9).abs() < 1e-9);
    // After the last shift a stall event fires every third validation (14, 17,
    // …); the first sets the plateau rule's best, and every second bad event
    // in a row (more than lr_patience = 1) cuts the lr, which restarts the
    // count as PyTorch's rule does.
    assert_eq!(at(ScheduleEvent::ReduceLr), [20, 26, 32, 38]);
}

#[test]
fn the_plateau_rule_counts_stall_events_not_validations() {
    let mut c = Curriculum::new(CurriculumConfig::paper());
    // Straight to the last window: each window's first validation sets its
    // best and 16 stalled ones move it.
    let mut v = 0;
    while c.shifts < 4 {
        c.observe_validation(1.0 + f64::from(v));
        v += 1;
    }
    assert_eq!(v, 4 * 17);
    // Ten more stalled validations are not ten events: nothing is cut.
    let mut cut_after = None;
    for i in 0..400 {
        if c.observe_validation(1e3 + f64::from(i)) == ScheduleEvent::ReduceLr {
            cut_after = Some(i + 1);
            break;
        }
    }
    // The last window's first validation sets its best; then an event comes
    // every 16 stalled validations. The first event sets the plateau best and
    // the eleventh bad one after it (more than patience 10) cuts the lr.
    assert_eq!(cut_after, Some(1 + 16 * 12));
}

#[test]
fn disabled_curriculum_uses_every_sample() {
    let mut c = Curriculum::new(CurriculumConfig::off());
    assert_eq!(c.window, (0.0, 1.0));
    for i in 0..100 {
        assert_eq!(c.observe_validation(i as f64), ScheduleEvent::None);
    }
    assert_eq!(c.window, (0.0, 1.0));
}

#[test]
fn state_survives_json() {
    let mut c = Curriculum::new(quick());
    for v in [1.0, 1.1, 1.2, 0.9] {
        c.observe_validation(v);
    }
    let text = serde_json::to_string(&c).unwrap();
    let back: Curriculum = serde_json::from_str(&text).unwrap();
    assert_eq!(back, c);
}
