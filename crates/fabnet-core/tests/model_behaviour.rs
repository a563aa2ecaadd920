//! Behaviour the parity goldens do not pin down on their own: the curriculum
//! window, BatchNorm modes and per-call batches, fusion, parts and errors.

use candle_core::{Device, Tensor, Var};
use candle_nn::{Optimizer, SGD};
use fabnet_core::model::{
    curriculum_loss, curriculum_window, per_sample_l1, FabNet, GammaInit, ModelConfig, ModelError,
    Part,
};

fn nf4() -> ModelConfig {
    ModelConfig {
        image_size: 32,
        base_width: 4,
        embedding_dim: 32,
        bn_gamma_init: GammaInit::Uniform,
        upsample_align_corners: false,
    }
}

/// Deterministic smooth images `(n, 3, 32, 32)` in [0, 1], distinct per `salt`.
fn images(n: usize, salt: usize) -> Tensor {
    let mut data = Vec::with_capacity(n * 3 * 32 * 32);
    for b in 0..n {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let phase = (salt * 7 + b * 3 + c) as f32;
                    let v = 0.5
                        + 0.4 * ((x as f32 * 0.21 + phase).sin() * (y as f32 * 0.17 - phase).cos());
                    data.push(v);
                }
            }
        }
    }
    Tensor::from_vec(data, (n, 3, 32, 32), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn curriculum_loss_averages_the_sorted_window_and_routes_gradients() {
    let per_sample = Var::new(&[0.4f32, 0.1, 0.3, 0.2], &Device::Cpu).unwrap();
    // Sorted: 0.1, 0.2, 0.3, 0.4; [0.25, 0.75) of 4 is positions 1 and 2.
    let loss = curriculum_loss(per_sample.as_tensor(), 0.25, 0.75).unwrap();
    assert!((loss.to_scalar::<f32>().unwrap() - 0.25).abs() < 1e-7);
    let grads = loss.backward().unwrap();
    let g: Vec<f32> = grads.get(&per_sample).unwrap().to_vec1().unwrap();
    assert_eq!(g, [0.0, 0.0, 0.5, 0.5]);
    let all = curriculum_loss(per_sample.as_tensor(), 0.0, 1.0).unwrap();
    assert!((all.to_scalar::<f32>().unwrap() - 0.25).abs() < 1e-7);
    // The paper's final window [0.4, 0.9) on a batch of 32: positions 12..28.
    assert_eq!(curriculum_window(32, 0.4, 0.9).unwrap(), 12..28);
    assert_eq!(curriculum_window(32, 0.0, 0.5).unwrap(), 0..16);
}

#[test]
fn empty_windows_and_nan_losses_are_errors() {
    let one = Tensor::new(&[0.3f32], &Device::Cpu).unwrap();
    let err = curriculum_loss(&one, 0.0, 0.5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "curriculum window [0, 0.5) selects no sample of a batch of 1"
    );
    assert!(curriculum_window(8, 0.5, 1.5).is_err());
    assert!(curriculum_window(8, 0.6, 0.5).is_err());
    let nan = Tensor::new(&[0.3f32, f32::NAN], &Device::Cpu).unwrap();
    let err = curriculum_loss(&nan, 0.0, 1.0).unwrap_err();
    assert!(
        matches!(err, ModelError::NonFiniteLoss { sample: 1 }),
        "{err}"
    );
}

#[test]
fn per_sample_l1_averages_over_channels_and_pixels() {
    let a = Tensor::zeros((2, 3, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::cat(
        &[
            (a.get(0).unwrap() + 1.0).unwrap(),
            (a.get(1).unwrap() - 0.5).unwrap(),
        ],
        0,
    )
    .unwrap()
    .reshape((2, 3, 2, 2))
    .unwrap();
    let l: Vec<f32> = per_sample_l1(&a, &b).unwrap().to_vec1().unwrap();
    assert_eq!(l, [1.0, 0.5]);
    let err = per_sample_l1(&a, &a.narrow(3, 0, 1).unwrap()).unwrap_err();
    assert!(err.to_string().contains("[2, 3, 2, 1]"), "{err}");
}

#[test]
fn train_mode_updates_running_statistics_and_eval_mode_does_not() {
    let (model, varmap) = FabNet::init(&nf4(), 5, &Device::Cpu).unwrap();
    let stat = |name: &str| -> Vec<f32> {
        varmap.data().lock().unwrap()[name]
            .as_tensor()
            .to_vec1()
            .unwrap()
    };
    let x = images(4, 0);
    model.embed(&x, false).unwrap();
    assert!(stat("encoder.3.running_mean").iter().all(|&v| v == 0.0));
    assert!(stat("encoder.3.running_var").iter().all(|&v| v == 1.0));
    let train = model.embed(&x, true).unwrap();
    let mean = stat("encoder.3.running_mean");
    assert!(mean.iter().any(|&v| v != 0.0));
    // Momentum 0.1: the first update sets the running mean to a tenth of the
    // batch mean.
    // The encoder alone is the same BatchNorm batch as embed.
    model.encoder().forward_t(&x, true).unwrap();
    let twice = stat("encoder.3.running_mean");
    for (m1, m2) in mean.iter().zip(&twice) {
        // After two identical updates: m2 = 0.9·m1 + 0.1·(m1 / 0.1) = 1.9·m1.
        assert!(
            (m2 - 1.9 * m1).abs() <= 1e-6 + 1e-5 * m2.abs(),
            "{m1} then {m2}"
        );
    }
    let eval = model.embed(&x, false).unwrap();
    assert!(
        max_abs_diff(&train, &eval) > 1e-3,
        "eval mode used batch statistics"
    );
    assert_eq!(model.embed(&x, false).unwrap().dims(), [4, 32]);
}

#[test]
fn every_encoder_and_decoder_call_is_its_own_batch() {
    let (model, _) = FabNet::init(&nf4(), 6, &Device::Cpu).unwrap();
    let target = images(3, 1);
    let (s0, s1) = (images(3, 2), images(3, 3));
    let both = model.reconstruct(&target, &[s0, s1.clone()], true).unwrap();
    let alone = model
        .reconstruct(&target, std::slice::from_ref(&s1), true)
        .unwrap();
    // With per-call BatchNorm, source 1's warp does not depend on source 0.
    assert!(max_abs_diff(&both.warped[1], &alone.warped[0]) < 1e-6);
    assert!(max_abs_diff(&both.flows[1], &alone.flows[0]) < 1e-6);
    assert!(max_abs_diff(&both.masks[1], &alone.masks[0]) < 1e-6);
    // One source: the fusion weight is exactly 1.
    assert_eq!(max_abs_diff(&alone.fused, &alone.warped[0]), 0.0);
    // Several: a per-pixel convex combination of the warps.
    let lo = both.warped[0].minimum(&both.warped[1]).unwrap();
    let hi = both.warped[0].maximum(&both.warped[1]).unwrap();
    let below: f32 = (&lo - &both.fused)
        .unwrap()
        .relu()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    let above: f32 = (&both.fused - &hi)
        .unwrap()
        .relu()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        below < 1e-6 && above < 1e-6,
        "fused leaves the warps' range"
    );
    assert_eq!(both.flows[0].dims(), [3, 32, 32, 2]);
    assert_eq!(both.masks[0].dims(), [3, 1, 32, 32]);
    let flows: Vec<f32> = both.flows[0].flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        flows.iter().all(|v| (-1.0..=1.0).contains(v)),
        "grid not clamped"
    );
}

#[test]
fn parts_expose_disjoint_trainable_vars_so_the_flow_decoder_can_be_frozen() {
    let config = nf4();
    let (model, varmap) = FabNet::init(&config, 7, &Device::Cpu).unwrap();
    let mut total = 0;
    for part in Part::ALL {
        let vars = part.trainable_vars(&varmap);
        let n: usize = vars.iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, config.num_parameters(Some(part)), "{part:?}");
        total += n;
    }
    assert_eq!(total, config.num_parameters(None));

    let snapshot = |part: Part| -> Vec<Vec<f32>> {
        part.trainable_vars(&varmap)
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    let (enc0, flow0, mask0) = (
        snapshot(Part::Encoder),
        snapshot(Part::FlowDecoder),
        snapshot(Part::MaskDecoder),
    );
    let mut trained = Part::Encoder.trainable_vars(&varmap);
    trained.extend(Part::MaskDecoder.trainable_vars(&varmap));
    let mut sgd = SGD::new(trained, 0.1).unwrap();
    let target = images(4, 4);
    let sources = [images(4, 5), images(4, 6), images(4, 7)];
    let out = model.reconstruct(&target, &sources, true).unwrap();
    let loss = curriculum_loss(&per_sample_l1(&out.fused, &target).unwrap(), 0.0, 1.0).unwrap();
    sgd.backward_step(&loss).unwrap();
    assert_ne!(snapshot(Part::Encoder), enc0);
    assert_ne!(snapshot(Part::MaskDecoder), mask0);
    assert_eq!(snapshot(Part::FlowDecoder), flow0);

    // The parts are reachable on their own: the encoder gives the embedding.
    let x = images(2, 8);
    let direct = model
        .encoder()
        .forward_t(&x, false)
        .unwrap()
        .flatten_from(1)
        .unwrap();
    assert_eq!(max_abs_diff(&direct, &model.embed(&x, false).unwrap()), 0.0);
    let code = Tensor::cat(&[&direct, &direct], 1)
        .unwrap()
        .reshape((2, 64, 1, 1))
        .unwrap();
    assert_eq!(
        model.flow_decoder().forward_t(&code, false).unwrap().dims(),
        [2, 2, 32, 32]
    );
    assert_eq!(
        model.mask_decoder().forward_t(&code, false).unwrap().dims(),
        [2, 1, 32, 32]
    );
}

#[test]
fn bad_inputs_are_reported() {
    let (model, _) = FabNet::init(&nf4(), 8, &Device::Cpu).unwrap();
    let x = images(2, 0);
    assert!(matches!(
        model.reconstruct(&x, &[], false),
        Err(ModelError::NoSources)
    ));
    let small = x.narrow(2, 0, 16).unwrap();
    let err = model.embed(&small, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "images has shape [2, 3, 16, 32], expected (B, 3, 32, 32)"
    );
    let other_batch = images(3, 0);
    let err = model.reconstruct(&x, &[other_batch], false).unwrap_err();
    assert!(
        err.to_string()
            .contains("source 0 has shape [3, 3, 32, 32]"),
        "{err}"
    );
}

#[test]
fn skipping_the_single_source_mask_changes_no_output_or_gradient() {
    let (target, source) = (images(3, 1), images(3, 2));
    let run = |skip: bool| {
        let (mut model, varmap) = FabNet::init(&nf4(), 9, &Device::Cpu).unwrap();
        model.set_single_source_mask(!skip);
        let out = model
            .reconstruct(&target, std::slice::from_ref(&source), true)
            .unwrap();
        let loss = per_sample_l1(&out.fused, &target)
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let named: Vec<(String, Option<Tensor>)> = {
            let data = varmap.data().lock().unwrap();
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|k| (k.clone(), grads.get(data[k].as_tensor()).cloned()))
                .collect()
        };
        let mask_mean: Vec<f32> = varmap.data().lock().unwrap()["mask.3.running_mean"]
            .as_tensor()
            .to_vec1()
            .unwrap();
        (out, named, mask_mean)
    };
    let (full, full_grads, full_mask) = run(false);
    let (fast, fast_grads, fast_mask) = run(true);
    assert_eq!(max_abs_diff(&full.fused, &fast.fused), 0.0);
    assert_eq!(fast.masks.len(), 1);
    assert_eq!(fast.masks[0].dims(), [3, 1, 32, 32]);
    for ((name, a), (_, b)) in full_grads.iter().zip(&fast_grads) {
        match (a, b) {
            (Some(a), Some(b)) => assert_eq!(max_abs_diff(a, b), 0.0, "{name}"),
            // The mask decoder gets no gradient either way.
            (a, b) => assert!(
                a.as_ref()
                    .is_none_or(|a| max_abs_diff(a, &a.zeros_like().unwrap()) == 0.0)
                    && b.is_none(),
                "{name}"
            ),
        }
    }
    // Only the mask decoder's statistics tell the two apart.
    assert!(full_mask.iter().any(|&v| v != 0.0));
    assert!(fast_mask.iter().all(|&v| v == 0.0));
}

#[test]
fn a_frozen_flow_decoder_computes_no_weight_gradient_and_changes_no_other() {
    let (target, sources) = (images(3, 3), vec![images(3, 4), images(3, 5)]);
    let run = |freeze: bool| {
        let (mut model, varmap) = FabNet::init(&nf4(), 11, &Device::Cpu).unwrap();
        if freeze {
            model.freeze_flow_decoder();
        }
        let out = model.reconstruct(&target, &sources, true).unwrap();
        let loss = per_sample_l1(&out.fused, &target)
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let named: Vec<(String, Option<Tensor>)> = names
            .into_iter()
            .map(|k| (k.clone(), grads.get(data[k].as_tensor()).cloned()))
            .collect();
        (out.fused, named)
    };
    let (fused, all) = run(false);
    let (frozen_fused, frozen) = run(true);
    assert_eq!(max_abs_diff(&fused, &frozen_fused), 0.0);
    let mut frozen_convs = 0;
    for ((name, a), (_, b)) in all.iter().zip(&frozen) {
        let decoder_conv = name.starts_with("decoder.")
            && (name.ends_with(".weight") || name.ends_with(".bias"))
            && b.is_none();
        if decoder_conv {
            frozen_convs += 1;
            assert!(a.is_some(), "{name} had a gradient before freezing");
            continue;
        }
        match (a, b) {
            (Some(a), Some(b)) => assert_eq!(max_abs_diff(a, b), 0.0, "{name}"),
            (None, None) => {}
            _ => panic!("{name}: a gradient appeared or vanished"),
        }
    }
    // Every conv of the flow decoder (weight and bias each) lost its gradient; the encoder's and
    // mask's remained, bit for bit.
    assert!(frozen_convs >= 8, "{frozen_convs}");
    assert!(frozen
        .iter()
        .any(|(n, g)| n.starts_with("encoder.") && g.is_some()));
}
