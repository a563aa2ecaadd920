//! FAb-Net itself (Wiles, Koepke, Zisserman, "Self-supervised learning of a
//! facial attribute embedding from video", BMVC 2018, arXiv 1808.06882): one
//! encoder, a flow decoder that warps each source towards the target, a mask
//! decoder whose per-pixel softmax over sources fuses the warps (§2, §3).

use super::config::ModelConfig;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::init::init_varmap;
use super::ModelError;
use crate::ops::{grid_sample, GridSampleOptions, PaddingMode};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// The outputs of [`FabNet::reconstruct`] for `n` sources.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    /// The fused reconstruction of the target `(B, 3, S, S)`.
    pub fused: Tensor,
    /// Each source warped towards the target, `n × (B, 3, S, S)`.
    pub warped: Vec<Tensor>,
    /// Each source's confidence logits (mask decoder output, tanh-bounded),
    /// `n × (B, 1, S, S)`.
    pub masks: Vec<Tensor>,
    /// Each source's sampling grid `n × (B, S, S, 2)`: flow decoder output
    /// plus the identity grid, clamped to [-1, 1], x first; a backward warp
    /// that says where each target pixel reads in the source
    /// (align_corners = true).
    pub flows: Vec<Tensor>,
}

/// The FAb-Net model; weights live wherever the [`VarBuilder`] it was built
/// from keeps them (a [`VarMap`] for training, a loaded file for inference).
#[derive(Debug, Clone)]
pub struct FabNet {
    config: ModelConfig,
    encoder: Encoder,
    decoder: Decoder,
    mask: Decoder,
    single_source_mask: bool,
}

impl FabNet {
    /// Builds the model of `config` from `vb`, which must hold (or, for a
    /// `VarMap`-backed builder, creates with unseeded PyTorch 0.4 init) the
    /// official keys `encoder.*`, `decoder.*` and `mask.*`.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::new(config, &vb)?,
            decoder: Decoder::new(config, 2, "decoder", &vb)?,
            mask: Decoder::new(config, 1, "mask", &vb)?,
            single_source_mask: true,
        })
    }

    /// A freshly initialised model (PyTorch 0.4 defaults, drawn from `seed`)
    /// and the [`VarMap`] that holds its weights and BatchNorm statistics.
    pub fn init(
        config: &ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap), ModelError> {
        let varmap = init_varmap(config, seed, device)?;
        let model = Self::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((model, varmap))
    }

    /// Whether [`FabNet::reconstruct`] runs the mask decoder when given one source (the default,
    /// as the authors' code does). Its output then has fusion weight exactly 1 and gets no
    /// gradient, so skipping it changes neither the reconstruction nor any gradient; it only
    /// leaves the mask decoder's BatchNorm statistics untouched and saves about a third of a
    /// 1-source step. [`Reconstruction::masks`] then holds zeros.
    pub fn set_single_source_mask(&mut self, run: bool) {
        self.single_source_mask = run;
    }

    /// For the multi-source stage, which trains the flow decoder with lr 0: its convolutions
    /// still pass gradients to the encoder, but no longer compute their own weight and bias
    /// gradients, which nothing would use. Its BatchNorm layers are unchanged (their statistics
    /// still update in training mode, as in the authors' code). Lasts for this instance.
    pub fn freeze_flow_decoder(&mut self) {
        self.decoder.freeze_convs();
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The encoder, `encoder.*`.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The flow decoder, `decoder.*`.
    pub fn flow_decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The confidence (mask) decoder, `mask.*`.
    pub fn mask_decoder(&self) -> &Decoder {
        &self.mask
    }

    /// Embeds images `(B, 3, S, S)` in [0, 1] into raw embeddings `(B, E)`
    /// (not normalised). In train mode the call is one BatchNorm batch and
    /// updates the encoder's running statistics.
    pub fn embed(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.check_images(images, "images")?;
        Ok(self.encoder.forward_t(images, train)?.flatten_from(1)?)
    }

    /// Reconstructs `target` `(B, 3, S, S)` from one or more `sources` of the
    /// same shape. As in the authors' code every encoder or decoder call is
    /// its own BatchNorm batch: the target is encoded once, then each source
    /// is encoded and decoded in turn. The mask decoder runs even for one
    /// source, whose fusion weight is then exactly 1 (so it gets no gradient).
    pub fn reconstruct(
        &self,
        target: &Tensor,
        sources: &[Tensor],
        train: bool,
    ) -> Result<Reconstruction, ModelError> {
        self.check_images(target, "target")?;
        if sources.is_empty() {
            return Err(ModelError::NoSources);
        }
        for (i, s) in sources.iter().enumerate() {
            self.check_images(s, &format!("source {i}"))?;
            if s.dims() != target.dims() {
                return Err(ModelError::Shape(format!(
                    "source {i} has shape {:?} but the target has {:?}",
                    s.dims(),
                    target.dims()
                )));
            }
        }
        let target_code = self.encoder.forward_t(target, train)?;
        let identity =
            identity_grid(self.config.image_size, target.device())?.to_dtype(target.dtype())?;
        let sample = GridSampleOptions::bilinear(PaddingMode::Zeros, true);
        let n = sources.len();
        let (mut warped, mut masks, mut flows) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for source in sources {
            let code = Tensor::cat(&[&self.encoder.forward_t(source, train)?, &target_code], 1)?;
            let flow = self.decoder.forward_t(&code, train)?;
            if n > 1 || self.single_source_mask {
                masks.push(self.mask.forward_t(&code, train)?);
            } else {
                let (b, _, h, w) = source.dims4()?;
                masks.push(Tensor::zeros(
                    (b, 1, h, w),
                    source.dtype(),
                    source.device(),
                )?);
            }
            let grid = flow
                .permute((0, 2, 3, 1))?
                .broadcast_add(&identity)?
                .clamp(-1f32, 1f32)?;
            warped.push(grid_sample(source, &grid, sample)?);
            flows.push(grid);
        }
        let fused = if n == 1 {
            warped[0].clone()
        } else {
            let weights = candle_nn::ops::softmax(&Tensor::stack(&masks, 0)?, 0)?;
            weights.broadcast_mul(&Tensor::stack(&warped, 0)?)?.sum(0)?
        };
        Ok(Reconstruction {
            fused,
            warped,
            masks,
            flows,
        })
    }

    fn check_images(&self, x: &Tensor, what: &str) -> Result<(), ModelError> {
        let s = self.config.image_size;
        match x.dims() {
            [_, 3, h, w] if *h == s && *w == s => Ok(()),
            dims => Err(ModelError::Shape(format!(
                "{what} has shape {dims:?}, expected (B, 3, {s}, {s})"
            ))),
        }
    }
}

/// The identity sampling grid `(1, S, S, 2)`, x first:
/// `(linspace(-1, 1, S)[j], linspace(-1, 1, S)[i])` at row i, column j, in
/// f64 (the caller rounds it to the images' dtype).
fn identity_grid(size: usize, device: &Device) -> candle_core::Result<Tensor> {
    let step = 2.0 / (size - 1) as f64;
    let coords: Vec<f64> = (0..size).map(|i| i as f64 * step - 1.0).collect();
    let mut data = Vec::with_capacity(size * size * 2);
    for &y in &coords {
        for &x in &coords {
            data.push(x);
            data.push(y);
        }
    }
    Tensor::from_vec(data, (1, size, size, 2), device)
}
