//! The training loop of §4: sample a batch, reconstruct each target from its
//! sources, back-propagate the curriculum window of the per-sample L1, and
//! validate on held-out identities after every epoch (or every K steps). It
//! checkpoints every K steps, logs metrics as JSONL, draws reconstruction
//! grids, and resumes a run exactly from its newest checkpoint. The same loop
//! trains the autoencoder baseline, whose batches carry no sources.

use crate::plot::{image_grid, line_plot, save_png, Series};
use crate::{
    load_checkpoint, parse_device, CheckpointDir, CheckpointMeta, Curriculum, Objective, Optimizer,
    ScheduleEvent, TrainConfig, TrainError,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use fabnet_core::model::{
    curriculum_loss, per_sample_l1, set_varmap_specs, Autoencoder, FabNet, ModelConfig, ParamSpec,
    Part, Reconstruction, StateDict,
};
use fabnet_data::{Batch, DatasetIndex, Loader, LoaderConfig, Split, SplitFractions};
use image::RgbImage;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How a run is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in `out/checkpoints` if there is one.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimiser steps taken in total (including those before a resume).
    pub steps: u64,
    /// The step this run started from (0 unless resumed).
    pub resumed_from: u64,
    /// The last training loss (curriculum window).
    pub last_train_loss: f64,
    /// The best validation L1, if validation ran.
    pub best_validation: Option<f64>,
    /// The final checkpoint's JSON marker.
    pub checkpoint: PathBuf,
    /// The metrics log.
    pub metrics: PathBuf,
}

/// The model a run trains.
#[derive(Debug, Clone)]
pub enum Network {
    /// FAb-Net.
    FabNet(FabNet),
    /// The autoencoder baseline.
    Autoencoder(Autoencoder),
}

/// What one forward pass produced, for pictures.
#[derive(Debug, Clone)]
pub enum Output {
    /// FAb-Net's warps, masks and fused reconstruction.
    FabNet(Reconstruction),
    /// The autoencoder's reconstruction `(B, 3, S, S)`.
    Autoencoder(Tensor),
}

impl Network {
    /// A freshly initialised network for `objective` and its [`VarMap`].
    pub fn init(
        objective: Objective,
        config: &ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap), TrainError> {
        Ok(match objective {
            Objective::Fabnet => {
                let (m, v) = FabNet::init(config, seed, device)?;
                (Network::FabNet(m), v)
            }
            Objective::Autoencoder => {
                let (m, v) = Autoencoder::init(config, seed, device)?;
                (Network::Autoencoder(m), v)
            }
        })
    }

    /// Every tensor the network of `objective` holds.
    pub fn specs(objective: Objective, config: &ModelConfig) -> Vec<ParamSpec> {
        match objective {
            Objective::Fabnet => config.param_specs(),
            Objective::Autoencoder => config.autoencoder_param_specs(),
        }
    }

    /// The per-sample L1 `(B,)` of reconstructing `target` (from `sources`
    /// for FAb-Net, from itself for the autoencoder) and the outputs.
    pub fn forward(
        &self,
        target: &Tensor,
        sources: &[Tensor],
        train: bool,
    ) -> Result<(Tensor, Output), TrainError> {
        Ok(match self {
            Network::FabNet(m) => {
                let out = m.reconstruct(target, sources, train)?;
                (per_sample_l1(&out.fused, target)?, Output::FabNet(out))
            }
            Network::Autoencoder(m) => {
                let out = m.reconstruct(target, train)?;
                (per_sample_l1(&out, target)?, Output::Autoencoder(out))
            }
        })
    }
}

/// Resolves a preset name or a model TOML path.
pub fn model_config(preset: &str) -> Result<ModelConfig, TrainError> {
    let path = Path::new(preset);
    let config = if path.extension().is_some_and(|e| e == "toml") {
        ModelConfig::from_toml_file(path)
    } else {
        ModelConfig::preset(preset)
    };
    config.map_err(|e| TrainError::Config(e.to_string()))
}

/// The parameters an optimiser updates, by official key: everything
/// trainable (not BatchNorm running statistics) of FAb-Net or the
/// autoencoder baseline, less the flow decoder when it is frozen.
pub fn trainable_params(varmap: &VarMap, freeze_flow: bool) -> Vec<(String, candle_core::Var)> {
    let mut out = Vec::new();
    for part in Part::ALL.into_iter().chain([Part::ImageDecoder]) {
        if freeze_flow && part == Part::FlowDecoder {
            continue;
        }
        let vars = Part::trainable_vars(part, varmap);
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for var in vars {
            if let Some((name, _)) = data
                .iter()
                .find(|(_, v)| v.as_tensor().id() == var.as_tensor().id())
            {
                out.push((name.clone(), var));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Overwrites the model's vars with the model tensors of a checkpoint (its
/// `optim.*` state aside); they must fit the model exactly, or nothing is written.
fn restore_model(
    specs: &[ParamSpec],
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    origin: &Path,
) -> Result<(), TrainError> {
    let state: StateDict = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optim."))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    Ok(set_varmap_specs(specs, varmap, &state, origin)?)
}

/// The metrics log: one JSON object per line, appended and flushed as the
/// run goes. A resumed run first drops the records after its checkpoint.
struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    fn open(path: PathBuf, keep_up_to_step: u64) -> Result<Self, TrainError> {
        let kept: Vec<String> = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= keep_up_to_step)
                })
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        };
        let tmp = path.with_extension("jsonl.tmp");
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        std::fs::write(&tmp, body).map_err(|e| TrainError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(Self { path, file })
    }

    fn write(&mut self, record: serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{record}").map_err(|e| TrainError::io(&self.path, e))?;
        self.file.flush().map_err(|e| TrainError::io(&self.path, e))
    }
}

fn to_scalar(t: &Tensor) -> Result<f64, TrainError> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Trains FAb-Net as `config` says, from scratch, from `init_from`, or (with
/// `resume`) from the newest checkpoint of `config.out`.
pub fn train(config: &TrainConfig, options: RunOptions) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let device = parse_device(&config.device)?;
    let model_cfg = model_config(&config.preset)?;
    std::fs::create_dir_all(&config.out).map_err(|e| TrainError::io(&config.out, e))?;
    let ckpts = CheckpointDir::new(config.out.join("checkpoints"), config.keep_checkpoints);
    let config_json = serde_json::to_value(config)
        .map_err(|e| TrainError::Config(format!("cannot record the config: {e}")))?;

    // Data: the index, a seeded identity split, a jittered training loader
    // and a fixed, unjittered validation plan.
    let (index, _) =
        DatasetIndex::open(&config.data).map_err(|e| TrainError::Data(e.to_string()))?;
    let index = Arc::new(index);
    let split = Split::seeded(&index, config.seed, SplitFractions::default())
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let loader_cfg = LoaderConfig {
        batch_size: config.batch_size,
        num_views: match config.objective {
            Objective::Fabnet => config.sources + 1,
            Objective::Autoencoder => 1,
        },
        image_size: model_cfg.image_size as u32,
        seed: config.seed,
        jitter: true,
        drop_last: true,
        workers: config.workers,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(index.clone(), &split.train, loader_cfg.clone())
        .map_err(|e| TrainError::Data(e.to_string()))?;
    if loader.batches_per_epoch() == 0 {
        return Err(TrainError::Config(format!(
            "{} training identities cannot fill one batch of {}; lower batch_size",
            loader.identities().len(),
            config.batch_size
        )));
    }
    let validation = if split.val.is_empty() {
        tracing::warn!("no validation identities: the curriculum window will not move");
        None
    } else {
        Some(
            Loader::new(
                index.clone(),
                &split.val,
                loader_cfg.clone().without_jitter(),
            )
            .map_err(|e| TrainError::Data(e.to_string()))?,
        )
    };

    // Model, optimiser and schedule: fresh, from `init_from`, or resumed.
    let (mut model, varmap) = Network::init(config.objective, &model_cfg, config.seed, &device)?;
    if let Network::FabNet(m) = &mut model {
        m.set_single_source_mask(config.single_source_mask);
        if config.freeze_flow {
            m.freeze_flow_decoder();
        }
    }
    let specs = Network::specs(config.objective, &model_cfg);
    let mut optimizer = Optimizer::new(
        trainable_params(&varmap, config.freeze_flow),
        config.optimizer,
    )?;
    let mut curriculum = Curriculum::new(config.curriculum);
    let (mut step, mut epoch, mut batch_in_epoch) = (0u64, 0u64, 0u64);
    let resume_from = if options.resume {
        ckpts.latest()?
    } else {
        None
    };
    if let Some(json) = &resume_from {
        let ckpt = load_checkpoint(json, &device)?;
        if ckpt.meta.sources != config.sources {
            return Err(TrainError::Checkpoint(format!(
                "{} was trained with {} sources, this run has {}",
                json.display(),
                ckpt.meta.sources,
                config.sources
            )));
        }
        restore_model(&specs, &varmap, &ckpt.tensors, json)?;
        optimizer.load_state(&ckpt.tensors)?;
        curriculum = ckpt.meta.curriculum;
        (step, epoch, batch_in_epoch) = (ckpt.meta.step, ckpt.meta.epoch, ckpt.meta.batch_in_epoch);
        tracing::info!(step, epoch, "resuming from {}", json.display());
    } else if let Some(init) = &config.init_from {
        let ckpt = load_checkpoint(init, &device)?;
        restore_model(&specs, &varmap, &ckpt.tensors, init)?;
        // The multi-source stage keeps the window the 1-source stage reached.
        curriculum = Curriculum {
            config: config.curriculum,
            ..ckpt.meta.curriculum
        };
        tracing::info!("starting from the weights of {}", init.display());
    }
    let resumed_from = step;
    let mut metrics = MetricsLog::open(config.out.join("metrics.jsonl"), step)?;

    let bar = progress_bar(options.progress, config.steps, step);
    let mut last_train_loss = f64::NAN;
    let mut last_checkpoint = resume_from.clone();
    let started = Instant::now();
    let save = |step: u64,
                epoch: u64,
                batch_in_epoch: u64,
                curriculum: &Curriculum,
                optimizer: &Optimizer| {
        let mut tensors = varmap_tensors(&varmap);
        tensors.extend(optimizer.state()?);
        let meta = CheckpointMeta {
            step,
            epoch,
            batch_in_epoch,
            curriculum: curriculum.clone(),
            seed: config.seed,
            sources: config.sources,
            config: config_json.clone(),
        };
        ckpts.save(&meta, &tensors)
    };

    'epochs: while step < config.steps {
        let batches = loader.epoch_from(epoch, batch_in_epoch as usize);
        for batch in batches {
            if step >= config.steps {
                break 'epochs;
            }
            let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
            let t0 = Instant::now();
            let (target, sources) = batch_tensors(&batch, &device)?;
            let (per_sample, out) = model.forward(&target, &sources, true)?;
            let per_values: Vec<f32> = per_sample.to_vec1()?;
            if per_values.iter().any(|v| !v.is_finite()) {
                return Err(TrainError::NonFinite {
                    what: "loss",
                    step: step + 1,
                    last_checkpoint: last_checkpoint.clone(),
                });
            }
            let (lo, hi) = curriculum.window;
            let loss = curriculum_loss(&per_sample, lo, hi)?;
            let grads = loss.backward()?;
            // A diverged model can still have a finite loss (NaN sampling
            // positions read zeros), so the gradients are checked too.
            let grad_norm = optimizer.grad_norm(&grads)?;
            if !grad_norm.is_finite() {
                return Err(TrainError::NonFinite {
                    what: "gradient",
                    step: step + 1,
                    last_checkpoint: last_checkpoint.clone(),
                });
            }
            optimizer.step(&grads)?;
            step += 1;
            batch_in_epoch += 1;
            last_train_loss = to_scalar(&loss)?;
            let mean_all =
                per_values.iter().map(|&v| f64::from(v)).sum::<f64>() / per_values.len() as f64;
            let samples_per_s = batch.batch_size as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            metrics.write(json!({
                "kind": "train", "step": step, "epoch": epoch, "loss": last_train_loss,
                "loss_all": mean_all, "grad_norm": grad_norm, "lr": optimizer.learning_rate(), "window": [lo, hi],
                "samples_per_s": samples_per_s,
            }))?;
            if let Some(bar) = &bar {
                bar.set_position(step);
                bar.set_message(format!(
                    "loss {last_train_loss:.4}  {samples_per_s:.1} samples/s"
                ));
            }
            if config.picture_every > 0 && step % config.picture_every == 0 {
                let path = config
                    .out
                    .join("pictures")
                    .join(format!("step-{step:08}.png"));
                let picture = match &out {
                    Output::FabNet(r) => reconstruction_grid(&target, &sources, r, 4)?,
                    Output::Autoencoder(y) => autoencoder_grid(&target, y, 4)?,
                };
                save_png(&picture, &path).map_err(|e| TrainError::io(&path, e))?;
            }
            // Validation comes before the checkpoint so that the saved
            // schedule already holds its result.
            if config.validate_every > 0 && step % config.validate_every == 0 {
                validate_and_schedule(
                    &model,
                    validation.as_ref().map(|v| (v, config.validation_batches)),
                    (step, epoch),
                    &mut curriculum,
                    &mut optimizer,
                    &mut metrics,
                    &device,
                )?;
            }
            if step % config.checkpoint_every == 0 && step < config.steps {
                last_checkpoint = Some(save(step, epoch, batch_in_epoch, &curriculum, &optimizer)?);
            }
        }
        // The epoch is complete: validate, then let the schedule react.
        if config.validate_every == 0 {
            validate_and_schedule(
                &model,
                validation.as_ref().map(|v| (v, config.validation_batches)),
                (step, epoch),
                &mut curriculum,
                &mut optimizer,
                &mut metrics,
                &device,
            )?;
        }
        epoch += 1;
        batch_in_epoch = 0;
    }
    let checkpoint = save(step, epoch, batch_in_epoch, &curriculum, &optimizer)?;
    if let Some(bar) = bar {
        bar.finish_with_message(format!("loss {last_train_loss:.4}"));
    }
    let loss_png = config.out.join("loss.png");
    save_png(&loss_curve(&metrics.path)?, &loss_png).map_err(|e| TrainError::io(&loss_png, e))?;
    tracing::info!(
        steps = step - resumed_from,
        seconds = started.elapsed().as_secs_f64(),
        "training finished; checkpoint {}",
        checkpoint.display()
    );
    Ok(TrainSummary {
        steps: step,
        resumed_from,
        last_train_loss,
        best_validation: curriculum.best_ever,
        checkpoint,
        metrics: metrics.path,
    })
}

/// One validation (`batches` batches of the loader) and the schedule's reaction to it, logged.
fn validate_and_schedule(
    model: &Network,
    validation: Option<(&Loader, usize)>,
    (step, epoch): (u64, u64),
    curriculum: &mut Curriculum,
    optimizer: &mut Optimizer,
    metrics: &mut MetricsLog,
    device: &Device,
) -> Result<(), TrainError> {
    let Some((val_loader, batches)) = validation else {
        return Ok(());
    };
    let val = validate(model, val_loader, batches, device)?;
    let event = curriculum.observe_validation(val);
    if event == ScheduleEvent::ReduceLr {
        optimizer.set_learning_rate(optimizer.learning_rate() * curriculum.config.lr_factor);
    }
    if event == ScheduleEvent::Shifted {
        tracing::info!(step, window = ?curriculum.window, "curriculum window shifted");
    }
    metrics.write(json!({
        "kind": "val", "step": step, "epoch": epoch, "loss": val,
        "window": [curriculum.window.0, curriculum.window.1],
        "event": format!("{event:?}"), "lr": optimizer.learning_rate(),
    }))
}

fn progress_bar(show: bool, total: u64, at: u64) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} train [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(at);
    Some(bar)
}

/// The batch as tensors: the target `(B, 3, S, S)` and each source slot.
pub fn batch_tensors(batch: &Batch, device: &Device) -> Result<(Tensor, Vec<Tensor>), TrainError> {
    let shape = batch.target_shape();
    let target = Tensor::from_slice(&batch.target, &shape, device)?;
    let mut sources = Vec::with_capacity(batch.num_sources);
    for k in 0..batch.num_sources {
        let data = batch
            .source(k)
            .ok_or_else(|| TrainError::Data(format!("batch has no source slot {k}")))?;
        sources.push(Tensor::from_slice(data, &shape, device)?);
    }
    Ok((target, sources))
}

/// Mean L1 (window [0, 1)) of the model in eval mode over the first
/// `batches` batches of the fixed validation plan: epochs 0, 1, … of the
/// validation loader, so a split with fewer identities than `batches` batches
/// hold is visited several times, each time on other tracks and frames.
pub fn validate(
    model: &Network,
    loader: &Loader,
    batches: usize,
    device: &Device,
) -> Result<f64, TrainError> {
    let (mut sum, mut count) = (0.0, 0usize);
    let mut seen = 0;
    // The same epochs every time, so values compare across validations.
    for epoch in 0u64.. {
        if seen >= batches {
            break;
        }
        let before = seen;
        for batch in loader.epoch(epoch).take(batches - seen) {
            let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
            let (target, sources) = batch_tensors(&batch, device)?;
            let (per, _) = model.forward(&target, &sources, false)?;
            let per: Vec<f32> = per.to_vec1()?;
            sum += per.iter().map(|&v| f64::from(v)).sum::<f64>();
            count += per.len();
            seen += 1;
        }
        if seen == before {
            break;
        }
    }
    if count == 0 {
        return Err(TrainError::Data(
            "the validation split produced no batch".into(),
        ));
    }
    Ok(sum / count as f64)
}

/// `(3, S, S)` or `(1, S, S)` in [0, 1] as an RGB picture, enlarged (nearest) to at least 64 px
/// wide so that the column labels fit.
fn to_rgb(t: &Tensor) -> Result<RgbImage, TrainError> {
    let img = to_rgb_exact(t)?;
    let factor = 64u32.div_ceil(img.width().max(1));
    if factor <= 1 {
        return Ok(img);
    }
    Ok(image::imageops::resize(
        &img,
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::Nearest,
    ))
}

fn to_rgb_exact(t: &Tensor) -> Result<RgbImage, TrainError> {
    let (c, h, w) = t.dims3()?;
    let data: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, p) in img.pixels_mut().enumerate() {
        for (k, ch) in p.0.iter_mut().enumerate() {
            let v = data[if c == 1 { i } else { k * plane + i }];
            *ch = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Ok(img)
}

/// A picture of up to `rows` samples: target | sources | warped sources |
/// fusion weights | fused reconstruction.
pub fn reconstruction_grid(
    target: &Tensor,
    sources: &[Tensor],
    out: &Reconstruction,
    rows: usize,
) -> Result<RgbImage, TrainError> {
    let n = sources.len();
    let weights = if n == 1 {
        vec![out.masks[0].ones_like()?]
    } else {
        let w = candle_nn::ops::softmax(&Tensor::stack(&out.masks, 0)?, 0)?;
        (0..n)
            .map(|k| w.get(k))
            .collect::<candle_core::Result<Vec<_>>>()?
    };
    let mut labels: Vec<String> = vec!["target".into()];
    labels.extend((0..n).map(|k| format!("source {k}")));
    labels.extend((0..n).map(|k| format!("warped {k}")));
    labels.extend((0..n).map(|k| format!("weight {k}")));
    labels.push("fused".into());
    let mut grid_rows = Vec::new();
    for b in 0..target.dim(0)?.min(rows) {
        let mut row = vec![to_rgb(&target.get(b)?)?];
        for s in sources {
            row.push(to_rgb(&s.get(b)?)?);
        }
        for w in &out.warped {
            row.push(to_rgb(&w.get(b)?)?);
        }
        for w in &weights {
            row.push(to_rgb(&w.get(b)?)?);
        }
        row.push(to_rgb(&out.fused.get(b)?)?);
        grid_rows.push(row);
    }
    let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    Ok(image_grid(&grid_rows, &label_refs, 2))
}

/// A picture of up to `rows` samples: target | autoencoder reconstruction.
pub fn autoencoder_grid(
    target: &Tensor,
    out: &Tensor,
    rows: usize,
) -> Result<RgbImage, TrainError> {
    let mut grid_rows = Vec::new();
    for b in 0..target.dim(0)?.min(rows) {
        grid_rows.push(vec![to_rgb(&target.get(b)?)?, to_rgb(&out.get(b)?)?]);
    }
    Ok(image_grid(&grid_rows, &["target", "reconstruction"], 2))
}

/// The loss curve of a metrics log: training loss (window and all samples)
/// and validation loss against steps, log scale.
pub fn loss_curve(metrics: &Path) -> Result<RgbImage, TrainError> {
    let text = std::fs::read_to_string(metrics).map_err(|e| TrainError::io(metrics, e))?;
    let (mut window, mut all, mut val) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(step), Some(loss)) = (v["step"].as_f64(), v["loss"].as_f64()) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("train") => {
                window.push((step, loss));
                if let Some(a) = v["loss_all"].as_f64() {
                    all.push((step, a));
                }
            }
            Some("val") => val.push((step, loss)),
            _ => {}
        }
    }
    Ok(line_plot(
        "reconstruction loss (L1)",
        "step",
        "L1",
        &[
            Series {
                label: "train, curriculum window",
                points: &window,
            },
            Series {
                label: "train, all samples",
                points: &all,
            },
            Series {
                label: "validation",
                points: &val,
            },
        ],
        true,
    ))
}
