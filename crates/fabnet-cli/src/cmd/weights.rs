//! Shared by `embed`, `probe` and `retrieve`: the model flags (`--checkpoint` / `--random-init`,
//! `--preset`), loading the encoder from our checkpoints, weights files or a fresh init, the image
//! preparations (the FAb-Net no-jitter crop, a plain resize, a probe box) and batched embedding.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fabnet_core::model::{check_state_dict, StateDict};
use fabnet_core::{FabNet, ModelConfig};
use fabnet_data::{transform_frame, CropWindow};
use fabnet_probe::{crop_resize, CropBox};
use image::imageops::FilterType;
use image::RgbImage;

/// Which weights to embed with.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Weights: our training checkpoint (`step-XXXXXXXX.json`, weights beside it; `optim.*` tensors are
    /// ignored) or a file with the official keys (`.safetensors` or zip-format `.pth`, e.g. a converted
    /// release file).
    #[arg(long, conflicts_with = "random_init")]
    pub checkpoint: Option<PathBuf>,
    /// Use a freshly initialised model (PyTorch 0.4 init drawn from `--seed`): the untrained baseline.
    #[arg(long)]
    pub random_init: bool,
    /// Seed of `--random-init`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model preset (paper, small, tiny) or a model TOML file. Default: the preset recorded in our
    /// checkpoint's JSON, else paper (the release weights).
    #[arg(long)]
    pub preset: Option<String>,
}

impl ModelArgs {
    /// Whether a model was asked for.
    pub fn given(&self) -> bool {
        self.checkpoint.is_some() || self.random_init
    }

    /// Loads the model on the CPU; an error if neither `--checkpoint` nor `--random-init` was given.
    pub fn load(&self) -> anyhow::Result<Embedder> {
        let device = Device::Cpu;
        let model = match (&self.checkpoint, self.random_init) {
            (Some(path), _) => {
                let is_ours = path.extension().is_some_and(|e| e == "json");
                let config = self.config(if is_ours {
                    checkpoint_preset(path)?
                } else {
                    None
                })?;
                if is_ours {
                    load_our_checkpoint(&config, path, &device)?
                } else {
                    FabNet::from_file(&config, path, &device)
                        .with_context(|| format!("cannot load weights {}", path.display()))?
                }
            }
            (None, true) => {
                let config = self.config(None)?;
                FabNet::init(&config, self.seed, &device)?.0
            }
            (None, false) => anyhow::bail!("give --checkpoint PATH or --random-init"),
        };
        Ok(Embedder { model, device })
    }

    fn config(&self, recorded: Option<String>) -> anyhow::Result<ModelConfig> {
        let name = self
            .preset
            .clone()
            .or(recorded)
            .unwrap_or_else(|| "paper".to_string());
        fabnet_train::model_config(&name).with_context(|| format!("model preset {name:?}"))
    }
}

/// The `preset` our trainer records in a checkpoint's JSON (`config.preset`), if any.
fn checkpoint_preset(json: &Path) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(json)
        .with_context(|| format!("cannot read checkpoint {}", json.display()))?;
    let meta: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("checkpoint {} is not JSON", json.display()))?;
    Ok(meta
        .pointer("/config/preset")
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// Builds the model from one of our checkpoints, strictly checked against `config`.
fn load_our_checkpoint(
    config: &ModelConfig,
    json: &Path,
    device: &Device,
) -> anyhow::Result<FabNet> {
    let ckpt = fabnet_train::load_checkpoint(json, device)
        .with_context(|| format!("cannot load checkpoint {}", json.display()))?;
    let state: StateDict = ckpt
        .tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optim."))
        .collect();
    let report = check_state_dict(config, &state);
    anyhow::ensure!(
        report.is_clean(),
        "checkpoint {} does not fit the model (is --preset right?): {report}",
        json.display()
    );
    Ok(FabNet::new(
        config,
        VarBuilder::from_tensors(state.into_iter().collect(), DType::F32, device),
    )?)
}

/// A loaded encoder in eval mode.
pub struct Embedder {
    model: FabNet,
    device: Device,
}

impl Embedder {
    /// Side S of the square input images, pixels.
    pub fn image_size(&self) -> u32 {
        self.model.config().image_size as u32
    }

    /// Embedding size D.
    pub fn dim(&self) -> usize {
        self.model.config().embedding_dim
    }

    /// Embeds `n` images given as one `(n, 3, S, S)` CHW buffer in [0, 1]; returns `(n, D)` row-major.
    pub fn embed(&self, images: Vec<f32>, n: usize) -> anyhow::Result<Vec<f32>> {
        let s = self.image_size() as usize;
        let x = Tensor::from_vec(images, (n, 3, s, s), &self.device)?;
        let e = self.model.embed(&x, false)?;
        Ok(e.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// How images are cut before the model sees them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prep {
    /// The FAb-Net no-jitter crop (reference §1), as in training.
    Centre,
    /// The whole image, resized to S×S.
    Resize,
    /// A box in the image's pixel coordinates, resized to S×S (the probe crops of §5).
    Box(CropBox),
}

/// Applies `prep` and returns the `(3, S, S)` CHW buffer in [0, 1].
pub fn prepare(image: &RgbImage, prep: Prep, size: u32) -> anyhow::Result<Vec<f32>> {
    Ok(match prep {
        Prep::Centre => transform_frame(image, CropWindow::centre(), size)?,
        Prep::Resize => chw(&image::imageops::resize(
            image,
            size,
            size,
            FilterType::Triangle,
        )),
        Prep::Box(b) => chw(&crop_resize(image, &b, size, size)?),
    })
}

/// RGB8 `(H, W, 3)` to planar CHW in [0, 1].
fn chw(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px[c]) / 255.0;
        }
    }
    out
}

/// Decodes an image file to RGB8; the error names the path.
pub fn load_image(path: &Path) -> anyhow::Result<RgbImage> {
    let (image, _) = fabnet_data::load_frame(path)?;
    Ok(image)
}
