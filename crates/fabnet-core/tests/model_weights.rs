//! Weights I/O: safetensors round trips, `.pth` layouts, and strict loading
//! that names every difference and changes nothing on failure.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use fabnet_core::model::{
    init_varmap, load_into_varmap, read_state_dict, save_varmap, FabNet, GammaInit, ModelConfig,
    ModelError,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/goldens/model"
    ))
    .join(name)
}

fn nf4(image_size: usize) -> ModelConfig {
    ModelConfig {
        image_size,
        base_width: 4,
        embedding_dim: 32,
        bn_gamma_init: GammaInit::Uniform,
        upsample_align_corners: false,
    }
}

fn snapshot(varmap: &VarMap) -> HashMap<String, Vec<f32>> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

fn images(n: usize, size: usize) -> Tensor {
    let data: Vec<f32> = (0..n * 3 * size * size)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    Tensor::from_vec(data, (n, 3, size, size), &Device::Cpu).unwrap()
}

#[test]
fn safetensors_round_trip_keeps_weights_and_running_statistics() {
    let config = nf4(32);
    let dev = Device::Cpu;
    let (model, varmap) = FabNet::init(&config, 3, &dev).unwrap();
    // A train-mode call moves the running statistics away from 0 / 1.
    model.embed(&images(2, 32), true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    save_varmap(&varmap, &path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary file left behind");

    let other = init_varmap(&config, 4, &dev).unwrap();
    assert_ne!(snapshot(&other), snapshot(&varmap));
    load_into_varmap(&config, &other, &path).unwrap();
    assert_eq!(snapshot(&other), snapshot(&varmap));
    let rm = &snapshot(&varmap)["encoder.3.running_mean"];
    assert!(rm.iter().any(|&v| v != 0.0), "running mean was not saved");

    let x = images(2, 32);
    let loaded = FabNet::from_file(&config, &path, &dev).unwrap();
    let a: Vec<Vec<f32>> = model.embed(&x, false).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = loaded.embed(&x, false).unwrap().to_vec2().unwrap();
    assert_eq!(a, b);
}

#[test]
fn pth_layouts_are_normalised_to_official_keys() {
    // tiny: {"state_dict": model}; small: {"state_dict_model": model, "state_dict": probe}.
    for (name, size) in [("tiny_nf4", 32), ("small_nf4", 64)] {
        let from_pth = read_state_dict(&golden(&format!("{name}_state_dict.pth"))).unwrap();
        let from_st = read_state_dict(&golden(&format!("{name}_weights.safetensors"))).unwrap();
        let keys: Vec<&String> = from_pth.keys().collect();
        assert_eq!(keys, from_st.keys().collect::<Vec<_>>(), "{name}");
        assert!(keys.iter().all(|k| !k.ends_with("num_batches_tracked")));
        assert_eq!(keys.len(), nf4(size).param_specs().len());
        for (k, t) in &from_pth {
            let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = from_st[k].flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "{name} {k}");
        }
    }
}

#[test]
fn data_parallel_prefix_and_batch_counters_are_accepted() {
    let config = nf4(32);
    let state = read_state_dict(&golden("tiny_nf4_weights.safetensors")).unwrap();
    let mut prefixed: HashMap<String, Tensor> = state
        .iter()
        .map(|(k, t)| (format!("module.{k}"), t.clone()))
        .collect();
    let counter = Tensor::new(&[40i64], &Device::Cpu)
        .unwrap()
        .squeeze(0)
        .unwrap();
    prefixed.insert("module.encoder.3.num_batches_tracked".into(), counter);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dp.safetensors");
    candle_core::safetensors::save(&prefixed, &path).unwrap();
    let varmap = init_varmap(&config, 0, &Device::Cpu).unwrap();
    load_into_varmap(&config, &varmap, &path).unwrap();
    let expected: Vec<f32> = state["mask.2.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(snapshot(&varmap)["mask.2.weight"], expected);
}

#[test]
fn mismatched_weights_are_listed_by_name_and_nothing_is_loaded() {
    // tiny weights into a small model: the small encoder has two more
    // levels, its decoders one more block, so indices shift.
    let config = nf4(64);
    let varmap = init_varmap(&config, 1, &Device::Cpu).unwrap();
    let before = snapshot(&varmap);
    let err =
        load_into_varmap(&config, &varmap, &golden("tiny_nf4_weights.safetensors")).unwrap_err();
    let ModelError::StateDictMismatch { path, report } = &err else {
        panic!("unexpected error {err}");
    };
    assert!(path.ends_with("tiny_nf4_weights.safetensors"));
    assert!(
        report.missing.contains(&"encoder.14.weight".to_string()),
        "{report}"
    );
    assert!(
        report
            .missing
            .contains(&"encoder.12.running_var".to_string()),
        "{report}"
    );
    assert!(
        report.missing.contains(&"mask.22.bias".to_string()),
        "{report}"
    );
    assert!(report.unexpected.is_empty(), "{report}");
    assert_eq!(report.missing.len(), 18, "{report}");
    assert_eq!(report.mismatched.len(), 40, "{report}");
    let m = report
        .mismatched
        .iter()
        .find(|m| m.name == "decoder.6.weight")
        .unwrap();
    assert_eq!(
        (m.expected.as_slice(), m.found.as_slice()),
        (&[32, 32, 3, 3][..], &[16, 32, 3, 3][..])
    );
    let msg = err.to_string();
    assert!(
        msg.contains("encoder.14.weight")
            && msg.contains("decoder.6.weight (model [32, 32, 3, 3], file [16, 32, 3, 3])"),
        "{msg}"
    );
    assert_eq!(
        snapshot(&varmap),
        before,
        "a failed load changed the varmap"
    );
}

#[test]
fn one_extra_key_is_reported_as_unexpected() {
    let config = nf4(32);
    let mut state: HashMap<String, Tensor> =
        read_state_dict(&golden("tiny_nf4_weights.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    state.insert(
        "probe.0.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra.safetensors");
    candle_core::safetensors::save(&state, &path).unwrap();
    match FabNet::from_file(&config, &path, &Device::Cpu) {
        Err(ModelError::StateDictMismatch { report, .. }) => {
            assert_eq!(report.unexpected, ["probe.0.weight"]);
            assert!(report.missing.is_empty() && report.mismatched.is_empty());
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn legacy_pickles_and_missing_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("nv2_curriculum.pth");
    // Pre-1.6 torch.save output opens with pickle protocol 2.
    std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
    let err = read_state_dict(&legacy).unwrap_err();
    assert!(matches!(err, ModelError::LegacyPickle { .. }), "{err}");
    assert!(err.to_string().contains("convert_release.py"), "{err}");
    let missing = dir.path().join("absent.safetensors");
    let err = read_state_dict(&missing).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a weights file at all").unwrap();
    let err = read_state_dict(&garbage).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read weights {}", garbage.display())),
        "{err}"
    );
    assert!(Path::new(&garbage).exists());
}

/// `tests/goldens/convert_release.py` on a legacy (pre-zip) pickle laid out
/// like the `*_4views.pth` release files, with a `module.` prefix and an
/// object of a class that is not importable; skipped without torch.
#[test]
fn legacy_release_pickles_convert_to_loadable_safetensors() {
    let python = Path::new("/usr/bin/python3");
    let has_torch = std::process::Command::new(python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("skipping: /usr/bin/python3 with torch is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy_4views.pth");
    let make = format!(
        "import sys, types, torch\n\
         sd = torch.load({src:?})['state_dict']\n\
         m = types.ModuleType('authors_code'); sys.modules['authors_code'] = m\n\
         class Opts: pass\n\
         Opts.__module__ = 'authors_code'; m.Opts = Opts\n\
         torch.save({{'state_dict_model': {{'module.' + k: v for k, v in sd.items()}},\n\
                     'state_dict': {{'0.weight': torch.ones(3)}}, 'opts': Opts()}},\n\
                    {dst:?}, _use_new_zipfile_serialization=False)\n",
        src = golden("tiny_nf4_state_dict.pth"),
        dst = legacy,
    );
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(python)
            .args(args)
            .env("OPENBLAS_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-c".as_ref(), make.as_ref()]);
    assert!(matches!(
        read_state_dict(&legacy),
        Err(ModelError::LegacyPickle { .. })
    ));
    let converted = dir.path().join("converted.safetensors");
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/goldens/convert_release.py"
    ));
    run(&[
        script.as_os_str(),
        legacy.as_os_str(),
        converted.as_os_str(),
    ]);
    let ours = read_state_dict(&converted).unwrap();
    let golden_state = read_state_dict(&golden("tiny_nf4_weights.safetensors")).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        golden_state.keys().collect::<Vec<_>>()
    );
    for (k, t) in &ours {
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = golden_state[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{k}");
    }
    FabNet::from_file(&nf4(32), &converted, &Device::Cpu).unwrap();
}
