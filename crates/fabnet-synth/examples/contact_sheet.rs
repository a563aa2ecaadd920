//! Writes a contact sheet to `docs/synth-contact-sheet.png`: one identity per row, each
//! row with its own clip lighting and background, columns varying pose and expression.
//!
//! Run: `cargo run -p fabnet-synth --example contact_sheet [SIZE]` (default 128).

use fabnet_synth::{render_frame, ClipPlan, Expression, Head, IdentityParams, Pose};
use image::RgbImage;

fn pose(yaw: f32, pitch: f32, roll: f32) -> Pose {
    Pose { roll, pitch, yaw }
}

fn aus(pairs: &[(usize, f32)]) -> Expression {
    let mut e = Expression::neutral();
    for &(k, v) in pairs {
        e.au[k] = v;
    }
    e
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(128);
    let rows = 8u64;
    // AU indices: 0 AU1, 1 AU2, 2 AU4, 3 AU6, 4 AU12, 5 AU15, 6 AU25, 7 AU26, 8 AU45.
    let cells = [
        (pose(0.0, 0.0, 0.0), aus(&[])),
        (pose(30.0, 5.0, 0.0), aus(&[(3, 0.8), (4, 1.0)])),
        (pose(-55.0, 10.0, 0.0), aus(&[(6, 0.5)])),
        (pose(0.0, 25.0, 0.0), aus(&[(6, 1.0), (7, 1.0)])),
        (pose(10.0, -25.0, 18.0), aus(&[(8, 1.0)])),
        (
            pose(20.0, 0.0, -15.0),
            aus(&[(0, 1.0), (1, 1.0), (6, 0.6), (7, 0.4)]),
        ),
        (pose(-20.0, -5.0, 5.0), aus(&[(2, 1.0), (5, 1.0)])),
        (pose(45.0, 0.0, 0.0), aus(&[(6, 0.8), (7, 0.2)])),
    ];
    let mut sheet = RgbImage::new(size * cells.len() as u32, size * rows as u32);
    for i in 0..rows {
        let head = Head::new(&IdentityParams::from_seed(2018, i));
        let scene = ClipPlan::from_seed(2018, i, 4.0).at(0.0);
        for (j, (p, e)) in cells.iter().enumerate() {
            let mut fp = scene.clone();
            fp.pose = *p;
            fp.expression = *e;
            fp.shift = [0.0, 0.0];
            fp.zoom = 1.0;
            let (img, _) = render_frame(&head, &fp, size);
            image::imageops::replace(
                &mut sheet,
                &img,
                i64::from(j as u32 * size),
                i64::from(i as u32 * size),
            );
        }
    }
    let out = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/synth-contact-sheet.png"
    );
    sheet.save(out)?;
    println!("wrote {out}");
    Ok(())
}
