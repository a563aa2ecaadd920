//! Tests of the warp ops: PyTorch goldens, finite differences in f64, the
//! fast ops against the candle-primitive references, thread-count
//! independence, non-finite grids and error reporting.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use fabnet_core::ops::{
    grid_sample, reference, upsample_bilinear2d, GridSampleOptions, PaddingMode, SampleMode,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Result<T> = candle_core::Result<T>;

const ALL_OPTIONS: [(PaddingMode, bool); 4] = [
    (PaddingMode::Zeros, true),
    (PaddingMode::Zeros, false),
    (PaddingMode::Border, true),
    (PaddingMode::Border, false),
];

fn goldens_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/goldens/warp")
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Largest |a − b| relative to max(1, max |b|), the scale of the expected tensor.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let (a, b) = (to_vec(a)?, to_vec(b)?);
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    Ok(diff / scale)
}

fn rand_tensor(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    lo: f64,
    hi: f64,
    dt: DType,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dt)
}

// ---------------------------------------------------------------- goldens

#[test]
fn goldens_match_pytorch() -> Result<()> {
    let dir = goldens_dir();
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json is committed");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("valid cases.json");
    let cases = manifest["cases"].as_array().expect("cases array");
    assert!(cases.len() >= 10);
    for case in cases {
        let file = case["file"].as_str().expect("file");
        let t = candle_core::safetensors::load(dir.join(file), &Device::Cpu)?;
        let align_corners = case["align_corners"].as_bool().expect("align_corners");
        let input = Var::from_tensor(&t["input"])?;
        let grad_out = &t["grad_out"];
        match case["op"].as_str() {
            Some("grid_sample") => {
                let grid = Var::from_tensor(&t["grid"])?;
                let padding = match case["padding"].as_str() {
                    Some("zeros") => PaddingMode::Zeros,
                    Some("border") => PaddingMode::Border,
                    other => panic!("unknown padding {other:?}"),
                };
                let mode = match case["mode"].as_str() {
                    Some("bilinear") => SampleMode::Bilinear,
                    Some("nearest") => SampleMode::Nearest,
                    other => panic!("unknown mode {other:?}"),
                };
                let opts = GridSampleOptions {
                    mode,
                    padding,
                    align_corners,
                };
                type Gs = fn(&Tensor, &Tensor, GridSampleOptions) -> Result<Tensor>;
                let mut impls: Vec<(&str, Gs)> = vec![("fast", grid_sample)];
                if mode == SampleMode::Bilinear {
                    impls.push(("reference", reference::grid_sample));
                }
                for (name, f) in impls {
                    let out = f(&input, &grid, opts)?;
                    let e = rel_err(&out, &t["output"])?;
                    assert!(e < 1e-5, "{file} {name}: output error {e}");
                    let grads = (out * grad_out)?.sum_all()?.backward()?;
                    let gi = grads.get(&input).expect("input grad");
                    let e = rel_err(gi, &t["grad_input"])?;
                    assert!(e < 1e-4, "{file} {name}: input grad error {e}");
                    let gg = grads.get(&grid).expect("grid grad");
                    match t.get("grad_grid") {
                        Some(expected) => {
                            let e = rel_err(gg, expected)?;
                            assert!(e < 1e-4, "{file} {name}: grid grad error {e}");
                        }
                        None => {
                            let m = to_vec(gg)?.iter().fold(0f64, |m, v| m.max(v.abs()));
                            assert_eq!(m, 0.0, "{file}: nearest grid grad must be zero");
                        }
                    }
                }
            }
            Some("upsample_bilinear2d") => {
                let oh = case["out_h"].as_u64().expect("out_h") as usize;
                let ow = case["out_w"].as_u64().expect("out_w") as usize;
                type Up = fn(&Tensor, usize, usize, bool) -> Result<Tensor>;
                let impls: [(&str, Up); 2] = [
                    ("fast", upsample_bilinear2d),
                    ("reference", reference::upsample_bilinear2d),
                ];
                for (name, f) in impls {
                    let out = f(&input, oh, ow, align_corners)?;
                    let e = rel_err(&out, &t["output"])?;
                    assert!(e < 1e-5, "{file} {name}: output error {e}");
                    let grads = (out * grad_out)?.sum_all()?.backward()?;
                    let e = rel_err(grads.get(&input).expect("grad"), &t["grad_input"])?;
                    assert!(e < 1e-4, "{file} {name}: input grad error {e}");
                }
            }
            other => panic!("unknown op {other:?} in {file}"),
        }
    }
    Ok(())
}

// ------------------------------------------------------ finite differences

/// Grid coordinate whose pixel coordinate is `p` (inverse unnormalisation).
fn grid_coord(p: f64, size: usize, align_corners: bool) -> f64 {
    let s = size as f64;
    if align_corners {
        2.0 * p / (s - 1.0) - 1.0
    } else {
        (2.0 * p + 1.0) / s - 1.0
    }
}

/// A grid whose pixel coordinates keep at least 0.1 px from every integer
/// (the bilinear kinks); with border padding they also stay inside the
/// clamp, with zeros padding some lie partly or wholly outside the input.
fn kink_free_grid(
    rng: &mut ChaCha8Rng,
    (n, ho, wo): (usize, usize, usize),
    (h, w): (usize, usize),
    padding: PaddingMode,
    align_corners: bool,
) -> Result<Tensor> {
    let mut v = Vec::with_capacity(n * ho * wo * 2);
    for _ in 0..n * ho * wo {
        for size in [w, h] {
            let cell = match padding {
                PaddingMode::Zeros => rng.random_range(-2..size as i64 + 1),
                PaddingMode::Border => rng.random_range(0..size as i64 - 1),
            };
            let p = cell as f64 + rng.random_range(0.1..0.9);
            v.push(grid_coord(p, size, align_corners));
        }
    }
    Tensor::from_vec(v, (n, ho, wo, 2), &Device::Cpu)
}

/// Compares backward() of sum(f(x) · r) with central differences, per element.
fn check_fd(
    what: &str,
    x: &Tensor,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
    r: &Tensor,
) -> Result<()> {
    let var = Var::from_tensor(x)?;
    let loss = |t: &Tensor| -> Result<f64> { (f(t)? * r)?.sum_all()?.to_scalar::<f64>() };
    let grads = (f(&var)? * r)?.sum_all()?.backward()?;
    let analytic = to_vec(grads.get(&var).expect("grad"))?;
    let base = to_vec(x)?;
    let eps = 1e-6;
    for (i, a) in analytic.iter().enumerate() {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let lp = loss(&Tensor::from_vec(plus, x.dims(), &Device::Cpu)?)?;
        let lm = loss(&Tensor::from_vec(minus, x.dims(), &Device::Cpu)?)?;
        let numeric = (lp - lm) / (2.0 * eps);
        assert!(
            (numeric - a).abs() <= 1e-6 * (1.0 + a.abs()),
            "{what}: element {i}: analytic {a} vs numeric {numeric}"
        );
    }
    Ok(())
}

#[test]
fn grid_sample_gradients_match_finite_differences() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (n, c, h, w, ho, wo) = (2, 2, 5, 6, 3, 4);
    for (padding, ac) in ALL_OPTIONS {
        let opts = GridSampleOptions::bilinear(padding, ac);
        let input = rand_tensor(&mut rng, &[n, c, h, w], -1.0, 1.0, DType::F64)?;
        let grid = kink_free_grid(&mut rng, (n, ho, wo), (h, w), padding, ac)?;
        let r = rand_tensor(&mut rng, &[n, c, ho, wo], -1.0, 1.0, DType::F64)?;
        let tag = format!("{padding:?} align_corners={ac}");
        check_fd(
            &format!("input, {tag}"),
            &input,
            &|x| grid_sample(x, &grid, opts),
            &r,
        )?;
        check_fd(
            &format!("grid, {tag}"),
            &grid,
            &|g| grid_sample(&input, g, opts),
            &r,
        )?;
    }
    Ok(())
}

#[test]
fn upsample_gradient_matches_finite_differences() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (oh, ow) in [(8, 10), (7, 3)] {
        for ac in [true, false] {
            let x = rand_tensor(&mut rng, &[2, 2, 4, 5], -1.0, 1.0, DType::F64)?;
            let r = rand_tensor(&mut rng, &[2, 2, oh, ow], -1.0, 1.0, DType::F64)?;
            check_fd(
                &format!("upsample to {oh}x{ow} align_corners={ac}"),
                &x,
                &|t| upsample_bilinear2d(t, oh, ow, ac),
                &r,
            )?;
        }
    }
    Ok(())
}

// ------------------------------------------------------ fast vs reference

#[test]
fn grid_sample_matches_reference_on_random_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for trial in 0..12 {
        let (n, c) = (rng.random_range(1..4), rng.random_range(1..5));
        let (h, w) = (rng.random_range(1..12), rng.random_range(1..12));
        let (ho, wo) = (rng.random_range(1..10), rng.random_range(1..10));
        let (padding, ac) = ALL_OPTIONS[trial % 4];
        let opts = GridSampleOptions::bilinear(padding, ac);
        let input = Var::from_tensor(&rand_tensor(
            &mut rng,
            &[n, c, h, w],
            -2.0,
            2.0,
            DType::F64,
        )?)?;
        let grid = Var::from_tensor(&rand_tensor(
            &mut rng,
            &[n, ho, wo, 2],
            -1.2,
            1.2,
            DType::F64,
        )?)?;
        let r = rand_tensor(&mut rng, &[n, c, ho, wo], -1.0, 1.0, DType::F64)?;
        let tag = format!(
            "trial {trial}: input {:?} grid {:?} {opts:?}",
            input.dims(),
            grid.dims()
        );
        let fast = grid_sample(&input, &grid, opts)?;
        let slow = reference::grid_sample(&input, &grid, opts)?;
        assert!(rel_err(&fast, &slow)? < 1e-12, "{tag}: output");
        let gf = (fast * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        for (name, v) in [("input", &input), ("grid", &grid)] {
            let e = rel_err(gf.get(v).expect("fast grad"), gs.get(v).expect("ref grad"))?;
            assert!(e < 1e-10, "{tag}: {name} grad error {e}");
        }
    }
    Ok(())
}

#[test]
fn upsample_matches_reference_on_random_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for trial in 0..12 {
        let (n, c) = (rng.random_range(1..3), rng.random_range(1..4));
        let (h, w) = (rng.random_range(1..9), rng.random_range(1..9));
        let (oh, ow) = (rng.random_range(1..17), rng.random_range(1..17));
        let ac = trial % 2 == 0;
        let x = Var::from_tensor(&rand_tensor(
            &mut rng,
            &[n, c, h, w],
            -2.0,
            2.0,
            DType::F64,
        )?)?;
        let r = rand_tensor(&mut rng, &[n, c, oh, ow], -1.0, 1.0, DType::F64)?;
        let tag = format!(
            "trial {trial}: {:?} -> {oh}x{ow} align_corners={ac}",
            x.dims()
        );
        let fast = upsample_bilinear2d(&x, oh, ow, ac)?;
        let slow = reference::upsample_bilinear2d(&x, oh, ow, ac)?;
        assert!(rel_err(&fast, &slow)? < 1e-12, "{tag}: output");
        let gf = (fast * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        let e = rel_err(
            gf.get(&x).expect("fast grad"),
            gs.get(&x).expect("ref grad"),
        )?;
        assert!(e < 1e-12, "{tag}: grad error {e}");
    }
    Ok(())
}

// ------------------------------------------------------ parallel schedule

/// Results must not depend on the number of threads, which changes how the
/// input-gradient scatter is partitioned (per batch item or per row block).
#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let opts = GridSampleOptions::bilinear(PaddingMode::Zeros, true);
    let input = rand_tensor(&mut rng, &[2, 3, 17, 19], -1.0, 1.0, DType::F64)?;
    let grid = rand_tensor(&mut rng, &[2, 23, 21, 2], -1.1, 1.1, DType::F64)?;
    let r = rand_tensor(&mut rng, &[2, 3, 23, 21], -1.0, 1.0, DType::F64)?;
    let run = |threads: usize| -> Result<Vec<Tensor>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        pool.install(|| {
            let (x, g) = (Var::from_tensor(&input)?, Var::from_tensor(&grid)?);
            let out = grid_sample(&x, &g, opts)?;
            let grads = (&out * &r)?.sum_all()?.backward()?;
            let up = upsample_bilinear2d(&x, 31, 40, false)?;
            Ok(vec![
                out,
                grads.get(&x).expect("input grad").clone(),
                grads.get(&g).expect("grid grad").clone(),
                up,
            ])
        })
    };
    let one = run(1)?;
    for threads in [3, 8] {
        for (a, b) in run(threads)?.iter().zip(&one) {
            assert!(rel_err(a, b)? < 1e-13, "{threads} threads differ from 1");
        }
    }
    Ok(())
}

// ------------------------------------------------------ edge cases

#[test]
fn non_finite_grid_points_sample_zero_and_pass_no_gradient() -> Result<()> {
    let input = Tensor::arange(1f32, 13f32, &Device::Cpu)?.reshape((1, 1, 3, 4))?;
    // NaN and ±inf, then a finite value whose pixel coordinate overflows f32.
    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let mut g = Vec::new();
    for v in bad {
        g.extend([v, 0.0, 0.0, v]);
    }
    g.extend([0.25, -0.5, 3e38, 0.1]);
    let grid = Tensor::from_vec(g, (1, 1, 8, 2), &Device::Cpu)?;
    for (padding, ac) in ALL_OPTIONS {
        let opts = GridSampleOptions::bilinear(padding, ac);
        let (x, gv) = (Var::from_tensor(&input)?, Var::from_tensor(&grid)?);
        let out = grid_sample(&x, &gv, opts)?;
        let vals = out.flatten_all()?.to_vec1::<f32>()?;
        assert!(vals[..6].iter().all(|&v| v == 0.0), "{opts:?}: {vals:?}");
        assert!(vals[6] != 0.0 && vals[6].is_finite(), "{opts:?}: {vals:?}");
        // Under border padding the huge point reads a right-border pixel.
        let huge_ok = match padding {
            PaddingMode::Zeros => vals[7] == 0.0,
            PaddingMode::Border => vals[7] > 0.0 && vals[7].is_finite(),
        };
        assert!(huge_ok, "{opts:?}: {vals:?}");
        let grads = out.sum_all()?.backward()?;
        let gg = grads
            .get(&gv)
            .expect("grid grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(gg[..12].iter().all(|&v| v == 0.0), "{opts:?}: {gg:?}");
        assert!(gg.iter().all(|v| v.is_finite()), "{opts:?}: {gg:?}");
        let gi = grads
            .get(&x)
            .expect("input grad")
            .sum_all()?
            .to_scalar::<f32>()?;
        let expected = if padding == PaddingMode::Zeros {
            1.0
        } else {
            2.0
        };
        assert!(
            (gi - expected).abs() < 1e-6,
            "{opts:?}: input grad sums to {gi}"
        );
    }
    Ok(())
}

#[test]
fn far_outside_points_read_zeros_or_the_border() -> Result<()> {
    let input = Tensor::arange(1f64, 13f64, &Device::Cpu)?.reshape((1, 1, 3, 4))?;
    let grid = Tensor::new(
        &[[[[1e30f64, 0.0], [-1e30, -1e30], [3.0, -7.0]]]],
        &Device::Cpu,
    )?;
    let zeros = grid_sample(
        &input,
        &grid,
        GridSampleOptions::bilinear(PaddingMode::Zeros, true),
    )?;
    assert_eq!(zeros.flatten_all()?.to_vec1::<f64>()?, [0.0, 0.0, 0.0]);
    let border = grid_sample(
        &input,
        &grid,
        GridSampleOptions::bilinear(PaddingMode::Border, true),
    )?;
    assert_eq!(border.flatten_all()?.to_vec1::<f64>()?, [8.0, 1.0, 4.0]);
    Ok(())
}

#[test]
fn non_contiguous_arguments_give_the_same_result() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let opts = GridSampleOptions::bilinear(PaddingMode::Border, false);
    // Stored as (N, H, W, C) and (N, Wo, Ho, 2), viewed as (N, C, H, W) and (N, Ho, Wo, 2).
    let nhwc = rand_tensor(&mut rng, &[2, 6, 7, 3], -1.0, 1.0, DType::F32)?;
    let input = nhwc.permute((0, 3, 1, 2))?;
    let grid = rand_tensor(&mut rng, &[2, 5, 4, 2], -1.0, 1.0, DType::F32)?.transpose(1, 2)?;
    assert!(!input.is_contiguous() && !grid.is_contiguous());
    let a = grid_sample(&input, &grid, opts)?;
    let b = grid_sample(&input.contiguous()?, &grid.contiguous()?, opts)?;
    assert_eq!(rel_err(&a, &b)?, 0.0);
    let a = upsample_bilinear2d(&input, 9, 5, true)?;
    let b = upsample_bilinear2d(&input.contiguous()?, 9, 5, true)?;
    assert_eq!(rel_err(&a, &b)?, 0.0);
    Ok(())
}

/// Only the arguments that need a gradient get one; the others are skipped
/// without changing the gradient of the one that does.
#[test]
fn gradient_flows_to_whichever_argument_is_tracked() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let opts = GridSampleOptions::bilinear(PaddingMode::Zeros, true);
    let input = rand_tensor(&mut rng, &[1, 2, 5, 5], -1.0, 1.0, DType::F64)?;
    let grid = rand_tensor(&mut rng, &[1, 4, 4, 2], -1.0, 1.0, DType::F64)?;
    let (x, g) = (Var::from_tensor(&input)?, Var::from_tensor(&grid)?);
    let both = grid_sample(&x, &g, opts)?.sum_all()?.backward()?;
    let only_grid = grid_sample(&input, &g, opts)?.sum_all()?.backward()?;
    let only_input = grid_sample(&x, &grid, opts)?.sum_all()?.backward()?;
    assert!(only_grid.get(&x).is_none() && only_input.get(&g).is_none());
    let e = rel_err(
        only_grid.get(&g).expect("grid"),
        both.get(&g).expect("grid"),
    )?;
    assert_eq!(e, 0.0);
    let e = rel_err(
        only_input.get(&x).expect("input"),
        both.get(&x).expect("input"),
    )?;
    assert_eq!(e, 0.0);
    Ok(())
}

// ------------------------------------------------------ errors

fn err_text(r: Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_grid_sample_arguments_are_clear_errors() -> Result<()> {
    let dev = Device::Cpu;
    let opts = GridSampleOptions::bilinear(PaddingMode::Zeros, true);
    let x = Tensor::zeros((2, 3, 4, 5), DType::F32, &dev)?;
    let g = Tensor::zeros((2, 6, 7, 2), DType::F32, &dev)?;
    let cases = [
        (x.get(0).ok(), Some(g.clone()), "[3, 4, 5]"),
        (Some(x.clone()), g.reshape((2, 42, 2)).ok(), "[2, 42, 2]"),
        (
            Some(x.clone()),
            Tensor::zeros((2, 6, 7, 3), DType::F32, &dev).ok(),
            "[2, 6, 7, 3]",
        ),
        (
            Some(x.clone()),
            Tensor::zeros((3, 6, 7, 2), DType::F32, &dev).ok(),
            "[3, 6, 7, 2]",
        ),
        (
            Tensor::zeros((2, 3, 0, 5), DType::F32, &dev).ok(),
            Some(g.clone()),
            "[2, 3, 0, 5]",
        ),
        (x.to_dtype(DType::U32).ok(), Some(g.clone()), "U32"),
        (
            x.to_dtype(DType::F16).ok(),
            g.to_dtype(DType::F16).ok(),
            "F16",
        ),
        (Some(x.clone()), g.to_dtype(DType::F64).ok(), "F64"),
    ];
    for (input, grid, needle) in cases {
        let (input, grid) = (input.expect("input built"), grid.expect("grid built"));
        for f in [grid_sample, reference::grid_sample] {
            let msg = err_text(f(&input, &grid, opts));
            assert!(
                msg.contains("grid_sample") && msg.contains(needle),
                "error {msg:?} should name the op and {needle}"
            );
        }
    }
    Ok(())
}

#[test]
fn bad_upsample_arguments_are_clear_errors() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4, 5), DType::F32, &dev)?;
    let cases = [
        (x.get(0)?, 8, 10, "[3, 4, 5]"),
        (x.clone(), 0, 10, "0x10"),
        (
            Tensor::zeros((1, 1, 0, 3), DType::F32, &dev)?,
            2,
            2,
            "[1, 1, 0, 3]",
        ),
        (x.to_dtype(DType::BF16)?, 8, 10, "BF16"),
    ];
    for (input, oh, ow, needle) in cases {
        let msg = err_text(upsample_bilinear2d(&input, oh, ow, false));
        assert!(
            msg.contains("upsample_bilinear2d") && msg.contains(needle),
            "error {msg:?} should name the op and {needle}"
        );
    }
    Ok(())
}

#[test]
fn nearest_mode_picks_the_nearest_pixel() -> Result<()> {
    let input = Tensor::arange(0f32, 12f32, &Device::Cpu)?.reshape((1, 1, 3, 4))?;
    // align_corners: pixel x = (g + 1) / 2 · 3, y = (g + 1) / 2 · 2.
    let grid = Tensor::new(
        &[[[[-1f32, -1.0], [0.1, 0.1], [1.0, 1.0], [1.5, 0.0]]]],
        &Device::Cpu,
    )?;
    let opts = GridSampleOptions {
        mode: SampleMode::Nearest,
        padding: PaddingMode::Zeros,
        align_corners: true,
    };
    let out = grid_sample(&input, &grid, opts)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(out, [0.0, 6.0, 11.0, 0.0]);
    Ok(())
}

#[test]
fn an_empty_grid_gives_an_empty_output_and_a_zero_input_gradient() -> Result<()> {
    let x = Var::from_tensor(&Tensor::ones((1, 2, 3, 4), DType::F32, &Device::Cpu)?)?;
    let g = Var::from_tensor(&Tensor::zeros((1, 0, 5, 2), DType::F32, &Device::Cpu)?)?;
    let opts = GridSampleOptions::bilinear(PaddingMode::Zeros, false);
    let out = grid_sample(&x, &g, opts)?;
    assert_eq!(out.dims(), [1, 2, 0, 5]);
    let grads = out.sum_all()?.backward()?;
    let gi = grads.get(&x).expect("input grad");
    assert_eq!(gi.dims(), [1, 2, 3, 4]);
    assert_eq!(gi.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    assert_eq!(grads.get(&g).expect("grid grad").dims(), [1, 0, 5, 2]);
    Ok(())
}
