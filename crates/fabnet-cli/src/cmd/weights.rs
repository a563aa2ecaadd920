//! Shared by `embed`, `probe` and `retrieve`: the model flags (`--checkpoint` / `--random-init`,
//! `--preset`), loading the encoder from our checkpoints, weights files or a fresh init, the image
//! preparations (the FAb-Net no-jitter crop, a plain resize, a probe box) and batched embedding.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fabnet_core::model::{check_state_dict_specs, Encoder, StateDict};
use fabnet_core::{FabNet, ModelConfig};
use fabnet_data::{transform_frame, CropWindow};
use fabnet_probe::{crop_resize, CropBox};
use image::imageops::FilterType;
use image::RgbImage;

/// Which weights to embed with.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Weights: our training checkpoint (`step-XXXXXXXX.json`, weights beside it; `optim.*` tensors are
    /// ignored; FAb-Net or autoencoder-baseline runs) or a file with the official keys (`.safetensors` or zip-format `.pth`, e.g. a converted
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
    /// Where to embed: cpu, or cuda / cuda:N (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// Whether a model was asked for.
    pub fn given(&self) -> bool {
        self.checkpoint.is_some() || self.random_init
    }

    /// Loads the model on `--device`; an error if neither `--checkpoint` nor `--random-init` was
    /// given.
    pub fn load(&self) -> anyhow::Result<Embedder> {
        let device = fabnet_train::parse_device(&self.device)?;
        match (&self.checkpoint, self.random_init) {
            (Some(path), _) => {
                let is_ours = path.extension().is_some_and(|e| e == "json");
                let config = self.config(if is_ours {
                    checkpoint_field(path, "/config/preset")?
                } else {
                    None
                })?;
                if is_ours {
                    Embedder::from_checkpoint(&config, path, &device)
                } else {
                    let model = FabNet::from_file(&config, path, &device)
                        .with_context(|| format!("cannot load weights {}", path.display()))?;
                    Ok(Embedder::new(
                        model.config(),
                        model.encoder().clone(),
                        &device,
                    ))
                }
            }
            (None, true) => Embedder::random_init(&self.config(None)?, self.seed, &device),
            (None, false) => anyhow::bail!("give --checkpoint PATH or --random-init"),
        }
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

/// A string our trainer records in a checkpoint's JSON (e.g. `/config/preset`), if any.
fn checkpoint_field(json: &Path, pointer: &str) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(json)
        .with_context(|| format!("cannot read checkpoint {}", json.display()))?;
    let meta: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("checkpoint {} is not JSON", json.display()))?;
    Ok(meta
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// A loaded encoder in eval mode.
pub struct Embedder {
    config: ModelConfig,
    encoder: Encoder,
    device: Device,
}

impl Embedder {
    fn new(config: &ModelConfig, encoder: Encoder, device: &Device) -> Self {
        Self {
            config: config.clone(),
            encoder,
            device: device.clone(),
        }
    }

    /// The encoder of a freshly initialised FAb-Net drawn from `seed`: the untrained baseline.
    pub fn random_init(config: &ModelConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let model = FabNet::init(config, seed, device)?.0;
        Ok(Self::new(config, model.encoder().clone(), device))
    }

    /// The encoder of one of our training checkpoints (FAb-Net or the autoencoder baseline, as its
    /// JSON records), strictly checked against `config`.
    pub fn from_checkpoint(
        config: &ModelConfig,
        json: &Path,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let ckpt = fabnet_train::load_checkpoint(json, device)
            .with_context(|| format!("cannot load checkpoint {}", json.display()))?;
        let objective = match ckpt
            .meta
            .config
            .pointer("/objective")
            .and_then(|v| v.as_str())
        {
            Some("autoencoder") => fabnet_train::Objective::Autoencoder,
            _ => fabnet_train::Objective::Fabnet,
        };
        let state: StateDict = ckpt
            .tensors
            .into_iter()
            .filter(|(k, _)| !k.starts_with("optim."))
            .collect();
        let specs = fabnet_train::Network::specs(objective, config);
        let report = check_state_dict_specs(&specs, &state);
        anyhow::ensure!(
            report.is_clean(),
            "checkpoint {} does not fit the model (is --preset right?): {report}",
            json.display()
        );
        let vb = VarBuilder::from_tensors(state.into_iter().collect(), DType::F32, device);
        Ok(Self::new(config, Encoder::new(config, &vb)?, device))
    }

    /// Side S of the square input images, pixels.
    pub fn image_size(&self) -> u32 {
        self.config.image_size as u32
    }

    /// Embedding size D.
    pub fn dim(&self) -> usize {
        self.config.embedding_dim
    }

    /// Embeds `n` images given as one `(n, 3, S, S)` CHW buffer in [0, 1]; returns `(n, D)` row-major.
    pub fn embed(&self, images: Vec<f32>, n: usize) -> anyhow::Result<Vec<f32>> {
        let s = self.image_size() as usize;
        let x = Tensor::from_vec(images, (n, 3, s, s), &self.device)?;
        let e = self.encoder.forward_t(&x, false)?.flatten_from(1)?;
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
    /// A face box treated as a face-track frame: cut and resized to 256 as `fabnet extract` does,
    /// then the no-jitter crop, so the encoder sees the view it was trained on.
    FaceFrame(CropBox),
}

/// Side of the frames `fabnet extract` writes by default, which the crop recipe assumes.
const FRAME_SIDE: u32 = 256;

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
        Prep::FaceFrame(b) => transform_frame(
            &crop_resize(image, &b, FRAME_SIDE, FRAME_SIDE)?,
            CropWindow::centre(),
            size,
        )?,
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
