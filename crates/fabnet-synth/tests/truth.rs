//! Ground truth matches the pixels: landmarks sit on their features, pose signs follow the
//! documented convention, action units act locally, and hidden landmarks are flagged.

use fabnet_synth::{
    Expression, FrameParams, FrameTruth, Head, IdentityParams, Pose, Renderer, AU_NUMBERS,
};
use image::RgbImage;

const SIZE: u32 = 64;

fn render(head: &Head, fp: &FrameParams) -> (RgbImage, FrameTruth, Vec<f32>) {
    let mut r = Renderer::new(SIZE, 2);
    let (img, t) = r.render(head, fp);
    (img, t, r.inverse_depth().to_vec())
}

fn posed(pose: Pose, expression: Expression) -> FrameParams {
    FrameParams {
        pose,
        expression,
        ..FrameParams::frontal()
    }
}

fn px(img: &RgbImage, p: [f32; 2]) -> [f32; 3] {
    let c = img.get_pixel(p[0].floor() as u32, p[1].floor() as u32).0;
    c.map(f32::from)
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

#[test]
fn pupil_landmarks_sit_on_the_iris() {
    for i in 0..4 {
        let mut id = IdentityParams::from_seed(11, i);
        id.iris = [1.0, 0.0, 0.0];
        let (red, t, _) = render(&Head::new(&id), &FrameParams::frontal());
        id.iris = [0.0, 0.0, 1.0];
        let (blue, _, _) = render(&Head::new(&id), &FrameParams::frontal());
        let face = t.face_box;
        let mut skin = 0.0;
        let mut n = 0.0;
        for y in face[1] as u32..(face[1] + face[3]) as u32 {
            for x in face[0] as u32..(face[0] + face[2]) as u32 {
                skin += luma(red.get_pixel(x, y).0.map(f32::from));
                n += 1.0;
            }
        }
        let face_luma = skin / n;
        for eye in 0..2 {
            let p = t.mafl[eye];
            let (a, b) = (px(&red, p), px(&blue, p));
            // The pixel under the eye centre is pupil (much darker than the face on average)
            // or iris (its colour follows the iris colour).
            let iris = a[0] - b[0] > 8.0 && b[2] - a[2] > 8.0;
            let pupil = luma(a) < 0.6 * face_luma && luma(b) < 0.6 * face_luma;
            assert!(
                iris || pupil,
                "identity {i} eye {eye}: {a:?} / {b:?}, face {face_luma}"
            );
            // And the iris surrounds it: one of its 8 neighbours takes the iris colour.
            let ring = (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
                .any(|(dx, dy)| {
                    let q = [p[0] + dx as f32, p[1] + dy as f32];
                    let (a, b) = (px(&red, q), px(&blue, q));
                    a[0] - b[0] > 8.0 && b[2] - a[2] > 8.0
                });
            assert!(
                ring,
                "identity {i} eye {eye}: no iris colour around the eye centre"
            );
            // Three pixels below the eye centre there is no iris any more.
            let below = [p[0], p[1] + 3.5];
            let (a, b) = (px(&red, below), px(&blue, below));
            assert!(
                (a[0] - b[0]).abs() < 6.0,
                "identity {i} eye {eye}: iris reaches 3.5 px below the centre"
            );
        }
    }
}

#[test]
fn nose_tip_is_the_nearest_visible_point_in_a_frontal_view() {
    for i in 0..4 {
        let head = Head::new(&IdentityParams::from_seed(12, i));
        let (_, t, inv_depth) = render(&head, &FrameParams::frontal());
        let side = (SIZE * 2) as usize;
        let (k, _) =
            inv_depth.iter().enumerate().fold(
                (0, 0.0f32),
                |best, (k, &z)| if z > best.1 { (k, z) } else { best },
            );
        let nearest = [
            ((k % side) as f32 + 0.5) / 2.0,
            ((k / side) as f32 + 0.5) / 2.0,
        ];
        let tip = t.landmarks[30];
        let d = ((nearest[0] - tip[0]).powi(2) + (nearest[1] - tip[1]).powi(2)).sqrt();
        assert!(
            d < 1.0,
            "identity {i}: nearest pixel {nearest:?}, nose tip {tip:?}"
        );
        assert!(t.visible[30]);
    }
}

#[test]
fn pose_signs_follow_the_documented_convention() {
    let head = Head::new(&IdentityParams::from_seed(13, 0));
    let (_, base, _) = render(&head, &FrameParams::frontal());
    let tip = |t: &FrameTruth| t.landmarks[30];
    let eye_tilt = |t: &FrameTruth| t.landmarks[45][1] - t.landmarks[36][1];
    assert!(eye_tilt(&base).abs() < 0.3);
    for s in [1.0f32, -1.0] {
        let (_, yaw, _) = render(
            &head,
            &posed(
                Pose {
                    yaw: 20.0 * s,
                    ..Pose::default()
                },
                Expression::neutral(),
            ),
        );
        assert!(
            s * (tip(&yaw)[0] - tip(&base)[0]) > 2.0,
            "yaw {s}: nose tip x {} -> {}",
            tip(&base)[0],
            tip(&yaw)[0]
        );
        let (_, pitch, _) = render(
            &head,
            &posed(
                Pose {
                    pitch: 15.0 * s,
                    ..Pose::default()
                },
                Expression::neutral(),
            ),
        );
        assert!(
            s * (tip(&base)[1] - tip(&pitch)[1]) > 1.0,
            "pitch {s}: nose tip y {} -> {}",
            tip(&base)[1],
            tip(&pitch)[1]
        );
        let (_, roll, _) = render(
            &head,
            &posed(
                Pose {
                    roll: 15.0 * s,
                    ..Pose::default()
                },
                Expression::neutral(),
            ),
        );
        assert!(
            s * eye_tilt(&roll) < -2.0,
            "roll {s}: image-right eye must move up, tilt {}",
            eye_tilt(&roll)
        );
        assert!(
            s * (tip(&roll)[0] - tip(&base)[0]) < -0.5,
            "roll {s}: nose tip must move left"
        );
        assert_eq!(roll.pose.roll, 15.0 * s);
    }
}

/// Landmark index ranges (0-based, end exclusive) by region.
const JAW: std::ops::Range<usize> = 0..17;
const BROWS: std::ops::Range<usize> = 17..27;
const NOSE: std::ops::Range<usize> = 27..36;
const EYES: std::ops::Range<usize> = 36..48;
const MOUTH: std::ops::Range<usize> = 48..68;

fn moved(a: &FrameTruth, b: &FrameTruth, r: std::ops::Range<usize>) -> f32 {
    r.map(|i| {
        let (p, q) = (a.landmarks[i], b.landmarks[i]);
        ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
    })
    .fold(0.0, f32::max)
}

/// Where an action unit may change pixels: a predicate on pixel centres `(x, y)`.
type Region = Box<dyn Fn(f32, f32) -> bool>;

#[test]
fn action_units_act_locally() {
    let head = Head::new(&IdentityParams::from_seed(14, 1));
    let (n_img, n_t, _) = render(&head, &FrameParams::frontal());
    let ys = |r: std::ops::Range<usize>| r.map(|i| n_t.landmarks[i][1]).collect::<Vec<f32>>();
    let max = |v: Vec<f32>| v.into_iter().fold(f32::MIN, f32::max);
    let min = |v: Vec<f32>| v.into_iter().fold(f32::MAX, f32::min);
    let nose_tip_y = n_t.landmarks[30][1];
    let eyes_bottom = max(ys(EYES));
    let brows_top = min(ys(BROWS));
    let lip_bottom = n_t.landmarks[57][1];
    for (k, &au) in AU_NUMBERS.iter().enumerate() {
        let (img, t, _) = render(&head, &posed(Pose::default(), Expression::single(k, 1.0)));
        let mut changed = Vec::new();
        for (x, y, p) in img.enumerate_pixels() {
            let q = n_img.get_pixel(x, y);
            if p.0.iter().zip(q.0).any(|(a, b)| a.abs_diff(b) > 10) {
                changed.push((x as f32 + 0.5, y as f32 + 0.5));
            }
        }
        assert!(
            changed.len() >= 4,
            "AU{au} changes only {} pixels",
            changed.len()
        );
        let (allowed, still): (Region, Vec<std::ops::Range<usize>>) = match au {
            1 | 2 | 4 => (Box::new(move |_, y| y < nose_tip_y), vec![JAW, NOSE, MOUTH]),
            6 => (
                Box::new(move |_, y| y > brows_top && y < lip_bottom),
                vec![JAW, BROWS, MOUTH],
            ),
            12 | 15 | 25 | 26 => (
                Box::new(move |_, y| y > eyes_bottom),
                vec![BROWS, EYES, 27..31],
            ),
            45 => {
                let boxes: Vec<[f32; 4]> = [36..42, 42..48]
                    .into_iter()
                    .map(|r| {
                        let xs: Vec<f32> = r.clone().map(|i| n_t.landmarks[i][0]).collect();
                        let ys: Vec<f32> = r.map(|i| n_t.landmarks[i][1]).collect();
                        [
                            min(xs.clone()) - 2.0,
                            min(ys.clone()) - 2.0,
                            max(xs) + 2.0,
                            max(ys) + 2.0,
                        ]
                    })
                    .collect();
                (
                    Box::new(move |x, y| {
                        boxes
                            .iter()
                            .any(|b| x > b[0] && x < b[2] && y > b[1] && y < b[3])
                    }),
                    vec![JAW, BROWS, NOSE, MOUTH],
                )
            }
            _ => unreachable!("unknown AU{au}"),
        };
        let outside: Vec<_> = changed.iter().filter(|(x, y)| !allowed(*x, *y)).collect();
        assert!(
            outside.is_empty(),
            "AU{au} changes pixels outside its region: {outside:?}"
        );
        for r in still {
            let m = moved(&n_t, &t, r.clone());
            assert!(m < 0.05, "AU{au} moves landmarks {r:?} by {m} px");
        }
        let own = match au {
            1 | 2 | 4 => moved(&n_t, &t, BROWS),
            6 | 45 => moved(&n_t, &t, EYES),
            _ => moved(&n_t, &t, MOUTH),
        };
        assert!(own > 0.3, "AU{au} moves its own landmarks by only {own} px");
    }
}

#[test]
fn far_side_landmarks_are_hidden_at_large_yaw() {
    for i in 0..3 {
        let head = Head::new(&IdentityParams::from_seed(15, i));
        let (_, front, _) = render(&head, &FrameParams::frontal());
        assert!(
            front.visible.iter().all(|&v| v),
            "identity {i}: hidden landmarks in a frontal view: {:?}",
            front.visible
        );
        for s in [1.0f32, -1.0] {
            let (_, t, _) = render(
                &head,
                &posed(
                    Pose {
                        yaw: 60.0 * s,
                        ..Pose::default()
                    },
                    Expression::neutral(),
                ),
            );
            // Positive yaw turns the face to the image right: the image-right jaw (points
            // 11-17) turns away, the image-left jaw (1-5) stays in view.
            let (far, near) = if s > 0.0 {
                (10..17, 0..5)
            } else {
                (0..7, 12..17)
            };
            let hidden = far.clone().filter(|&k| !t.visible[k]).count();
            assert!(
                hidden >= 4,
                "identity {i} yaw {s}: only {hidden} of the far jaw points hidden"
            );
            assert!(
                near.clone().all(|k| t.visible[k]),
                "identity {i} yaw {s}: near jaw hidden"
            );
        }
    }
}
