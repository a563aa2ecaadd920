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
    // Still stalled, but fewer than 3 validations since the shift.
    assert_eq!(c.observe_validation(1.3), ScheduleEvent::None);
    assert_eq!(c.observe_validation(1.3), ScheduleEvent::None);
    assert_eq!(c.observe_validation(1.3), ScheduleEvent::Shifted);
    // An improvement resets the patience.
    assert_eq!(c.observe_validation(0.5), ScheduleEvent::None);
    assert_eq!(c.observe_validation(0.6), ScheduleEvent::None);
    assert_eq!(c.observe_validation(0.7), ScheduleEvent::Shifted);
    assert_eq!(c.shifts, 3);
}

#[test]
fn window_stops_at_the_last_and_then_cuts_the_lr() {
    let mut c = Curriculum::new(quick());
    let mut shifted = 0;
    let mut cuts = 0;
    for i in 0..60 {
        match c.observe_validation(1.0 + i as f64) {
            ScheduleEvent::Shifted => shifted += 1,
            ScheduleEvent::ReduceLr => cuts += 1,
            ScheduleEvent::None => {}
        }
    }
    assert_eq!(shifted, 4, "four shifts take [0,0.5) to [0.4,0.9)");
    assert!((c.window.0 - 0.4).abs() < 1e-9 && (c.window.1 - 0.9).abs() < 1e-9);
    assert!(cuts > 0, "a plateau after the last shift must cut the lr");
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
