//! Model configuration: image size, widths, BatchNorm init and the upsampling
//! switch, plus the named presets shipped as TOML in `data/presets/`.

use super::ModelError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Encoder widths as multiples of the base width, in paper order (§2); a
/// model with `L` levels takes the first `L`, the last replaced by the
/// embedding size.
const ENCODER_MULTIPLES: [usize; 8] = [1, 2, 4, 8, 8, 8, 8, 8];
/// Decoder hidden widths as multiples of the base width (§3); a model with
/// `L` levels takes the last `L - 1`.
const DECODER_MULTIPLES: [usize; 7] = [8, 8, 8, 8, 4, 2, 1];

/// The presets under `data/presets/`, embedded so that they load by name.
const PRESETS: [(&str, &str); 3] = [
    ("paper", include_str!("../../../../data/presets/paper.toml")),
    ("small", include_str!("../../../../data/presets/small.toml")),
    ("tiny", include_str!("../../../../data/presets/tiny.toml")),
];

/// How BatchNorm scales (γ) start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GammaInit {
    /// γ ~ U(0, 1): PyTorch 0.4's default, which the paper's model used.
    Uniform,
    /// γ = 1: the default of later PyTorch versions and of candle.
    Ones,
}

/// The shape of a FAb-Net and the two settings the paper leaves open.
///
/// The encoder and each decoder have `log2(image_size)` levels; the widths
/// follow §8 of the reference, scaled by `base_width / 32`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Side of the square input and output images in pixels: a power of two
    /// in 32..=256.
    pub image_size: usize,
    /// Output channels of the first encoder conv (32 in the paper); every
    /// other width is a fixed multiple of it.
    pub base_width: usize,
    /// Output channels of the last encoder conv, i.e. the embedding size
    /// (256 in the paper).
    pub embedding_dim: usize,
    /// Initialisation of the BatchNorm scales.
    pub bn_gamma_init: GammaInit,
    /// `align_corners` of the decoders' bilinear ×2 upsampling, which the
    /// authors' code does not pin down.
    pub upsample_align_corners: bool,
}

/// The on-disk layout of a preset file: the model reads only `[model]`.
#[derive(Deserialize)]
struct PresetFile {
    model: ModelConfig,
}

/// One convolution of the plan, with its `nn.Sequential` indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvPlan {
    /// Index of the conv in its `nn.Sequential`, the middle part of its keys.
    pub index: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Index of the BatchNorm that follows the conv, if any.
    pub bn_index: Option<usize>,
}

impl ConvPlan {
    /// Inputs per output value: the fan-in of PyTorch's default init.
    pub fn fan_in(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
}

impl ModelConfig {
    /// Names of the shipped presets.
    pub const PRESET_NAMES: [&'static str; 3] = ["paper", "small", "tiny"];

    /// Loads a shipped preset by name (`paper`, `small` or `tiny`).
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        let (_, text) =
            PRESETS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ModelError::UnknownPreset {
                    name: name.to_owned(),
                    known: Self::PRESET_NAMES.join(", "),
                })?;
        Self::from_toml_str(text, &format!("preset `{name}`"))
    }

    /// Parses the `[model]` table of a preset-style TOML document; `origin`
    /// names the document in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        let file: PresetFile = toml::from_str(text).map_err(|e| ModelError::ConfigParse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        file.model.validate()?;
        Ok(file.model)
    }

    /// Reads a preset-style TOML file with a `[model]` table.
    pub fn from_toml_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Checks the image size and widths.
    pub fn validate(&self) -> Result<(), ModelError> {
        let s = self.image_size;
        if !(32..=256).contains(&s) || !s.is_power_of_two() {
            return Err(ModelError::InvalidConfig(format!(
                "image_size {s} is not a power of two in 32..=256"
            )));
        }
        if self.base_width == 0 {
            return Err(ModelError::InvalidConfig("base_width is 0".into()));
        }
        if self.embedding_dim == 0 {
            return Err(ModelError::InvalidConfig("embedding_dim is 0".into()));
        }
        Ok(())
    }

    /// Number of encoder levels, `log2(image_size)`; each decoder has as many
    /// upsampling steps.
    pub fn levels(&self) -> usize {
        self.image_size.trailing_zeros() as usize
    }

    /// Convs of the encoder: 4×4, stride 2, padding 1; BN and LeakyReLU follow
    /// every conv but the first (no BN) and the last (nothing).
    pub(crate) fn encoder_plan(&self) -> Vec<ConvPlan> {
        let n = self.levels();
        let mut widths: Vec<usize> = ENCODER_MULTIPLES[..n]
            .iter()
            .map(|m| m * self.base_width)
            .collect();
        widths[n - 1] = self.embedding_dim;
        // nn.Sequential indices: conv0, lrelu, then (conv, bn, lrelu) per level,
        // the last level being a bare conv.
        (0..n)
            .map(|i| ConvPlan {
                index: if i == 0 { 0 } else { 3 * i - 1 },
                in_channels: if i == 0 { 3 } else { widths[i - 1] },
                out_channels: widths[i],
                kernel: 4,
                bn_index: (i > 0 && i < n - 1).then_some(3 * i),
            })
            .collect()
    }

    /// Convs of a decoder with `out_channels` outputs: 3×3, stride 1,
    /// padding 1, each after a ×2 upsample; BN and ReLU follow every conv but
    /// the last (tanh).
    pub(crate) fn decoder_plan(&self, out_channels: usize) -> Vec<ConvPlan> {
        self.decoder_plan_from(2 * self.embedding_dim, out_channels)
    }

    /// A decoder plan whose first conv takes `in_channels` (FAb-Net's take
    /// the `2E` [source, target] code; the autoencoder baseline's take `E`).
    pub(crate) fn decoder_plan_from(
        &self,
        in_channels: usize,
        out_channels: usize,
    ) -> Vec<ConvPlan> {
        let hidden: Vec<usize> = DECODER_MULTIPLES[DECODER_MULTIPLES.len() + 1 - self.levels()..]
            .iter()
            .map(|m| m * self.base_width)
            .collect();
        let mut plan = Vec::with_capacity(hidden.len() + 1);
        let mut cin = in_channels;
        // nn.Sequential indices: relu, then (upsample, conv, bn, relu) per
        // hidden block, then upsample, conv, tanh.
        for (k, &w) in hidden.iter().enumerate() {
            plan.push(ConvPlan {
                index: 2 + 4 * k,
                in_channels: cin,
                out_channels: w,
                kernel: 3,
                bn_index: Some(3 + 4 * k),
            });
            cin = w;
        }
        plan.push(ConvPlan {
            index: 2 + 4 * hidden.len(),
            in_channels: cin,
            out_channels,
            kernel: 3,
            bn_index: None,
        });
        plan
    }
}
