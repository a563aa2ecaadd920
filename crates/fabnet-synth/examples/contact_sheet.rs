//! Writes a contact sheet (identities × poses × expressions) to
//! `docs/synth-contact-sheet.png`: `cargo run -p fabnet-synth --example contact_sheet`.

use fabnet_synth::{render_frame, Expression, FrameParams, Head, IdentityParams, Pose};
use image::RgbImage;

fn main() {
    let size = 128u32;
    let ids = 6u64;
    let cells: Vec<(Pose, Expression)> = vec![
        (Pose::default(), Expression::neutral()),
        (
            Pose {
                yaw: 35.0,
                ..Pose::default()
            },
            Expression::single(4, 1.0),
        ),
        (
            Pose {
                yaw: -55.0,
                pitch: 10.0,
                ..Pose::default()
            },
            Expression::neutral(),
        ),
        (
            Pose {
                pitch: 25.0,
                ..Pose::default()
            },
            Expression {
                au: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            },
        ),
        (
            Pose {
                pitch: -25.0,
                roll: 20.0,
                ..Pose::default()
            },
            Expression::single(8, 1.0),
        ),
        (
            Pose {
                yaw: 20.0,
                roll: -15.0,
                ..Pose::default()
            },
            Expression {
                au: [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.3, 0.0],
            },
        ),
        (
            Pose {
                yaw: -15.0,
                ..Pose::default()
            },
            Expression {
                au: [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            },
        ),
        (
            Pose::default(),
            Expression {
                au: [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.0, 0.0],
            },
        ),
    ];
    let mut sheet = RgbImage::new(size * cells.len() as u32, size * ids as u32);
    for i in 0..ids {
        let head = Head::new(&IdentityParams::from_seed(2018, i));
        for (j, (pose, expr)) in cells.iter().enumerate() {
            let mut fp = FrameParams::frontal();
            fp.pose = *pose;
            fp.expression = *expr;
            let (img, _) = render_frame(&head, &fp, size);
            image::imageops::replace(
                &mut sheet,
                &img,
                (j as u32 * size) as i64,
                (i as u32 * size) as i64,
            );
        }
    }
    let out = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/synth-contact-sheet.png"
    );
    sheet.save(out).expect("write contact sheet");
    println!("wrote {out}");
}
