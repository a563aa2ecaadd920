//! Text formats of real datasets, written for synthetic data so the same readers serve both.
//!
//! - VoxCeleb2 face-track files (`IDENTITY/VIDEO/TRACK.txt`): five header lines
//!   (`Identity  : \tid00012`, `Reference : \t…`, `Offset    : \t…`, `FV Conf   : \t… \t(1)`,
//!   `ASD Conf  : \t…`), a blank line, the line `FRAME \tX \tY \tW \tH `, then one line per
//!   frame: a six-digit frame number and X Y W H as fractions of the frame width and height,
//!   three decimals, each field followed by ` \t` except the last, followed by ` `.
//!   Here frame numbers index the frames of the clip's mp4, zero-based.
//! - 300-W / iBUG `.pts`: `version: 1`, `n_points:  68`, `{`, one `x y` line per point,
//!   `}`; coordinates are 1-based pixels (the centre of the top-left pixel is (1, 1)).
//! - CelebA / MAFL `list_landmarks_align_celeba.txt`: the image count, the header
//!   `lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y
//!   rightmouth_x rightmouth_y`, then `image x1 y1 … x5 y5` per image; coordinates are
//!   0-based pixels (the centre of the top-left pixel is (0, 0)) with two decimals.
//!   "Left" means the image left (the subject's right), as in CelebA.
//! - Pose CSV (AFLW-like): `image,x,y,w,h,roll,pitch,yaw`; the face box `x,y,w,h` in pixels
//!   (columns `x..x+w`, rows `y..y+h`, two decimals), angles in degrees with the sign
//!   convention of [`crate::Pose`].
//! - AU CSV (EmotioNet-like): `image,AU01,…,AU45` with 0/1 per AU (1 = intensity ≥ 0.5);
//!   no unknowns (EmotioNet's 999) occur. The intensities themselves, in [0, 1], are in a
//!   second CSV with the same header and rows.
//! - Image fields are paths relative to the folder of the CSV or list.

use std::fmt::Write;

use crate::render::FrameTruth;
use crate::scene::AU_NUMBERS;

/// One VoxCeleb2-style track file for a clip whose frames all hold the tracked face.
/// `boxes` are `[x, y, w, h]` in pixels of a `width × height` video, one per frame.
pub fn track_file(
    identity: &str,
    reference: &str,
    boxes: &[[f32; 4]],
    width: u32,
    height: u32,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Identity  : \t{identity}");
    let _ = writeln!(s, "Reference : \t{reference}");
    let _ = writeln!(s, "Offset    : \t0");
    let _ = writeln!(s, "FV Conf   : \t20.000\t(1)");
    let _ = writeln!(s, "ASD Conf  : \t5.000");
    let _ = writeln!(s);
    let _ = writeln!(s, "FRAME \tX \tY \tW \tH ");
    let (w, h) = (width as f32, height as f32);
    for (i, b) in boxes.iter().enumerate() {
        let _ = writeln!(
            s,
            "{i:06} \t{:.3} \t{:.3} \t{:.3} \t{:.3} ",
            b[0] / w,
            b[1] / h,
            b[2] / w,
            b[3] / h
        );
    }
    s
}

/// A 300-W `.pts` file for 68 landmarks given in continuous pixel coordinates.
pub fn pts_file(landmarks: &[[f32; 2]]) -> String {
    let mut s = format!("version: 1\nn_points:  {}\n{{\n", landmarks.len());
    for l in landmarks {
        let _ = writeln!(s, "{:.3} {:.3}", l[0] + 0.5, l[1] + 0.5);
    }
    s.push_str("}\n");
    s
}

/// CelebA's landmark list for `(image name, truth)` rows, in the given order.
pub fn celeba_landmarks(rows: &[(String, &FrameTruth)]) -> String {
    let mut s = format!(
        "{}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n",
        rows.len()
    );
    for (name, t) in rows {
        s.push_str(name);
        for p in &t.mafl {
            let _ = write!(s, " {:.2} {:.2}", p[0] - 0.5, p[1] - 0.5);
        }
        s.push('\n');
    }
    s
}

/// The pose CSV for `(image name, truth)` rows.
pub fn pose_csv(rows: &[(String, &FrameTruth)]) -> String {
    let mut s = String::from("image,x,y,w,h,roll,pitch,yaw\n");
    for (name, t) in rows {
        let b = t.face_box;
        let p = t.pose;
        let _ = writeln!(
            s,
            "{name},{:.2},{:.2},{:.2},{:.2},{:.3},{:.3},{:.3}",
            b[0], b[1], b[2], b[3], p.roll, p.pitch, p.yaw
        );
    }
    s
}

/// The binary AU CSV for `(image name, truth)` rows: 1 where the intensity is at least 0.5.
pub fn au_csv(rows: &[(String, &FrameTruth)]) -> String {
    au_table(rows, |a| if a >= 0.5 { "1".into() } else { "0".into() })
}

/// The AU intensity CSV for `(image name, truth)` rows: intensities in [0, 1].
pub fn au_intensity_csv(rows: &[(String, &FrameTruth)]) -> String {
    au_table(rows, |a| format!("{a:.4}"))
}

fn au_table(rows: &[(String, &FrameTruth)], cell: impl Fn(f32) -> String) -> String {
    let mut s = String::from("image");
    for n in AU_NUMBERS {
        let _ = write!(s, ",AU{n:02}");
    }
    s.push('\n');
    for (name, t) in rows {
        s.push_str(name);
        for a in t.expression.au {
            s.push(',');
            s.push_str(&cell(a));
        }
        s.push('\n');
    }
    s
}

/// Landmark visibility CSV: `image,v1,…,v68` with 1 = visible.
pub fn visibility_csv(rows: &[(String, &FrameTruth)]) -> String {
    let mut s = String::from("image");
    for i in 1..=68 {
        let _ = write!(s, ",v{i}");
    }
    s.push('\n');
    for (name, t) in rows {
        s.push_str(name);
        for &v in &t.visible {
            s.push_str(if v { ",1" } else { ",0" });
        }
        s.push('\n');
    }
    s
}

/// Per-frame ground truth of one clip: `frame,roll,pitch,yaw,AU01…AU45 (intensities),
/// box_x,box_y,box_w,box_h,x1,y1,v1,…,x68,y68,v68` in continuous pixels.
pub fn clip_truth_csv(frames: &[FrameTruth]) -> String {
    let mut s = String::from("frame,roll,pitch,yaw");
    for n in AU_NUMBERS {
        let _ = write!(s, ",AU{n:02}");
    }
    s.push_str(",box_x,box_y,box_w,box_h");
    for i in 1..=68 {
        let _ = write!(s, ",x{i},y{i},v{i}");
    }
    s.push('\n');
    for (i, t) in frames.iter().enumerate() {
        let _ = write!(
            s,
            "{i},{:.3},{:.3},{:.3}",
            t.pose.roll, t.pose.pitch, t.pose.yaw
        );
        for a in t.expression.au {
            let _ = write!(s, ",{a:.4}");
        }
        for b in t.face_box {
            let _ = write!(s, ",{b:.2}");
        }
        for (l, v) in t.landmarks.iter().zip(&t.visible) {
            let _ = write!(s, ",{:.3},{:.3},{}", l[0], l[1], u8::from(*v));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_file_has_the_voxceleb2_layout() {
        let s = track_file("id00012", "clip000", &[[32.0, 16.0, 64.0, 64.0]], 128, 128);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "Identity  : \tid00012");
        assert_eq!(lines[3], "FV Conf   : \t20.000\t(1)");
        assert_eq!(lines[5], "");
        assert_eq!(lines[6], "FRAME \tX \tY \tW \tH ");
        assert_eq!(lines[7], "000000 \t0.250 \t0.125 \t0.500 \t0.500 ");
    }

    #[test]
    fn pts_is_one_based() {
        let s = pts_file(&[[0.5, 1.5]]);
        assert_eq!(s, "version: 1\nn_points:  1\n{\n1.000 2.000\n}\n");
    }
}
