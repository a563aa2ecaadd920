//! The raster plots draw what they are given where they should.

use fabnet_train::plot::{bar_chart, draw_text, image_grid, line_plot, Series, PALETTE};
use image::{Rgb, RgbImage};

fn count(img: &RgbImage, colour: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0 == colour).count()
}

#[test]
fn line_plot_draws_each_series_in_its_colour() {
    let rising: Vec<(f64, f64)> = (0..50)
        .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
        .collect();
    let flat: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 0.5)).collect();
    let img = line_plot(
        "loss",
        "step",
        "L1",
        &[
            Series {
                label: "train",
                points: &rising,
            },
            Series {
                label: "val",
                points: &flat,
            },
        ],
        false,
    );
    assert!(count(&img, PALETTE[0]) > 200, "first series not drawn");
    assert!(count(&img, PALETTE[1]) > 200, "second series not drawn");
    // The falling series starts high on the left and ends low on the right.
    let column_rows = |x: u32| -> Vec<u32> {
        (0..img.height())
            .filter(|&y| img.get_pixel(x, y).0 == PALETTE[0])
            .collect()
    };
    let left = column_rows(92);
    let right = column_rows(img.width() - 32);
    assert!(!left.is_empty() && !right.is_empty());
    assert!(
        left[0] < right[0],
        "a falling curve must end lower in the image"
    );
}

#[test]
fn non_finite_points_are_skipped() {
    let pts = [(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5)];
    let img = line_plot(
        "x",
        "a",
        "b",
        &[Series {
            label: "s",
            points: &pts,
        }],
        true,
    );
    assert!(count(&img, PALETTE[0]) > 0);
}

#[test]
fn text_is_drawn_and_bars_scale_with_values() {
    let mut img = RgbImage::from_pixel(40, 10, Rgb([255, 255, 255]));
    draw_text(&mut img, 0, 0, "A1", 1, Rgb([0, 0, 0]));
    assert!(count(&img, [0, 0, 0]) > 10);
    let chart = bar_chart("nme", "%", &["mafl"], &["a", "b"], &[vec![2.0], vec![4.0]]);
    let a = count(&chart, PALETTE[0]);
    let b = count(&chart, PALETTE[1]);
    // Bar areas are proportional to their values (legend swatches aside).
    let ratio = (b as f64) / (a as f64);
    assert!((ratio - 2.0).abs() < 0.15, "bar area ratio {ratio}");
}

#[test]
fn grid_places_tiles_in_rows_and_columns() {
    let red = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
    let blue = RgbImage::from_pixel(4, 4, Rgb([0, 0, 255]));
    let grid = image_grid(&[vec![red.clone(), blue.clone()], vec![blue, red]], &[], 1);
    assert_eq!((grid.width(), grid.height()), (11, 11));
    assert_eq!(grid.get_pixel(1, 1).0, [255, 0, 0]);
    assert_eq!(grid.get_pixel(6, 1).0, [0, 0, 255]);
    assert_eq!(grid.get_pixel(1, 6).0, [0, 0, 255]);
    assert_eq!(grid.get_pixel(6, 6).0, [255, 0, 0]);
}
