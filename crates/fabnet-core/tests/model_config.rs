//! Presets, parameter counts (§8 of the reference), official key names and
//! the seeded PyTorch 0.4 initialisation.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use fabnet_core::model::{
    init_varmap, FabNet, GammaInit, ModelConfig, ModelError, ParamKind, Part,
};
use std::collections::BTreeMap;

fn preset(name: &str) -> ModelConfig {
    ModelConfig::preset(name).unwrap()
}

#[test]
fn paper_preset_has_the_papers_parameter_counts() {
    let c = preset("paper");
    assert_eq!(
        (c.image_size, c.base_width, c.embedding_dim),
        (256, 32, 256)
    );
    assert_eq!(c.bn_gamma_init, GammaInit::Uniform);
    assert_eq!(c.levels(), 8);
    assert_eq!(c.num_parameters(None), 11_568_643);
    assert_eq!(c.num_parameters(Some(Part::Encoder)), 4_887_904);
    assert_eq!(c.num_parameters(Some(Part::FlowDecoder)), 3_340_514);
    assert_eq!(c.num_parameters(Some(Part::MaskDecoder)), 3_340_225);
}

#[test]
fn small_and_tiny_presets_have_the_reference_sizes() {
    // §8: "about 7.11 M" and "about 4.88 M"; exact values from PyTorch
    // (tests/goldens/make_model_goldens.py at base width 32).
    let small = preset("small");
    assert_eq!((small.image_size, small.levels()), (64, 6));
    assert_eq!(small.num_parameters(None), 7_107_587);
    assert_eq!(small.num_parameters(Some(Part::Encoder)), 2_789_216);
    let tiny = preset("tiny");
    assert_eq!((tiny.image_size, tiny.levels()), (32, 5));
    assert_eq!(tiny.num_parameters(None), 4_877_059);
    assert_eq!(tiny.num_parameters(Some(Part::FlowDecoder)), 1_568_738);
}

#[test]
fn paper_keys_are_the_official_nn_sequential_indices() {
    let specs = preset("paper").param_specs();
    let indices = |prefix: &str, suffix: &str| -> Vec<usize> {
        specs
            .iter()
            .filter_map(|s| {
                let rest = s.name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                rest.parse().ok()
            })
            .collect()
    };
    // §2: encoder.{0,2,3,5,6,8,9,11,12,14,15,17,18,20}.*
    assert_eq!(
        indices("encoder.", ".weight"),
        [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20]
    );
    assert_eq!(indices("encoder.", ".running_mean"), [3, 6, 9, 12, 15, 18]);
    // §3: decoder.{2,3,6,7,...,26,27,30}.*, the same for mask.
    let dec: Vec<usize> = (0..7)
        .flat_map(|k| [2 + 4 * k, 3 + 4 * k])
        .chain([30])
        .collect();
    assert_eq!(indices("decoder.", ".weight"), dec);
    assert_eq!(indices("mask.", ".weight"), dec);
    let shape = |name: &str| specs.iter().find(|s| s.name == name).unwrap().shape.clone();
    assert_eq!(shape("encoder.0.weight"), [32, 3, 4, 4]);
    assert_eq!(shape("encoder.20.weight"), [256, 256, 4, 4]);
    assert_eq!(shape("decoder.2.weight"), [256, 512, 3, 3]);
    assert_eq!(shape("decoder.26.weight"), [32, 64, 3, 3]);
    assert_eq!(shape("decoder.30.weight"), [2, 32, 3, 3]);
    assert_eq!(shape("mask.30.bias"), [1]);
    assert_eq!(shape("encoder.3.running_var"), [64]);
}

#[test]
fn model_builds_exactly_the_specified_tensors() {
    for name in ModelConfig::PRESET_NAMES {
        let config = preset(name);
        let varmap = VarMap::new();
        FabNet::new(
            &config,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let built: BTreeMap<String, Vec<usize>> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        let specified: BTreeMap<String, Vec<usize>> = config
            .param_specs()
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        assert_eq!(built, specified, "preset {name}");
    }
}

#[test]
fn invalid_configs_and_unknown_presets_are_rejected() {
    let mut c = preset("tiny");
    for bad in [16, 48, 512] {
        c.image_size = bad;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(&bad.to_string()), "{err}");
    }
    let err = ModelConfig::preset("huge").unwrap_err();
    assert!(matches!(err, ModelError::UnknownPreset { .. }), "{err}");
    assert!(err.to_string().contains("paper, small, tiny"), "{err}");
    let err = ModelConfig::from_toml_str("[model]\nimage_size = 64\n", "inline").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot parse model config inline"),
        "{err}"
    );
    let text = "[model]\nimage_size = 64\nbase_width = 8\nembedding_dim = 64\n\
                bn_gamma_init = \"ones\"\nupsample_align_corners = true\n[train]\nlr = 0.001\n";
    let c = ModelConfig::from_toml_str(text, "inline").unwrap();
    assert_eq!(c.bn_gamma_init, GammaInit::Ones);
    assert!(c.upsample_align_corners);
}

#[test]
fn init_is_seeded_and_follows_pytorch_0_4() {
    let config = preset("tiny");
    let dev = Device::Cpu;
    let values = |vm: &VarMap, name: &str| -> Vec<f32> {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let a = init_varmap(&config, 7, &dev).unwrap();
    let b = init_varmap(&config, 7, &dev).unwrap();
    let c = init_varmap(&config, 8, &dev).unwrap();
    for spec in config.param_specs() {
        let v = values(&a, &spec.name);
        assert_eq!(
            v,
            values(&b, &spec.name),
            "{} differs for one seed",
            spec.name
        );
        let (lo, hi) = (
            v.iter().cloned().fold(f32::MAX, f32::min),
            v.iter().cloned().fold(f32::MIN, f32::max),
        );
        match spec.kind {
            ParamKind::ConvWeight | ParamKind::ConvBias => {
                let bound = 1.0 / (spec.fan_in as f32).sqrt();
                assert!(
                    lo >= -bound && hi <= bound,
                    "{}: [{lo}, {hi}] outside ±{bound}",
                    spec.name
                );
                if spec.kind == ParamKind::ConvWeight {
                    // Thousands of draws reach close to both ends.
                    assert!(
                        lo < -0.9 * bound && hi > 0.9 * bound,
                        "{}: [{lo}, {hi}]",
                        spec.name
                    );
                    assert_ne!(v, values(&c, &spec.name), "{} ignores the seed", spec.name);
                }
            }
            ParamKind::BnWeight => assert!(lo >= 0.0 && hi <= 1.0 && hi > lo, "{}", spec.name),
            ParamKind::BnBias | ParamKind::RunningMean => assert!(lo == 0.0 && hi == 0.0),
            ParamKind::RunningVar => assert!(lo == 1.0 && hi == 1.0),
        }
    }
    let ones = ModelConfig {
        bn_gamma_init: GammaInit::Ones,
        ..config
    };
    let vm = init_varmap(&ones, 7, &dev).unwrap();
    assert!(values(&vm, "encoder.3.weight").iter().all(|&g| g == 1.0));
}
