//! The decoders (§3 of the reference): from the concatenated
//! [source, target] embedding, ×2 bilinear upsampling and 3×3 convs back to
//! full resolution, ending in tanh. The flow decoder has 2 output channels,
//! the mask (confidence) decoder 1.

use super::act::leaky_relu;
use super::config::ModelConfig;
use super::layers::{Activation, ConvBlock};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// A decoder: ReLU on the `(N, 2E, 1, 1)` input, then per level bilinear ×2
/// upsampling → conv 3×3 → BatchNorm → ReLU, the last level ending in conv →
/// tanh. Its tensors are `{prefix}.{index}.*`.
#[derive(Debug, Clone)]
pub struct Decoder {
    blocks: Vec<ConvBlock>,
    align_corners: bool,
}

impl Decoder {
    /// Stops computing the gradients of every convolution's weight and bias
    /// (see [`FabNet::freeze_flow_decoder`](super::FabNet::freeze_flow_decoder)).
    pub fn freeze_convs(&mut self) {
        for block in &mut self.blocks {
            block.freeze_conv();
        }
    }

    /// Builds a decoder with `out_channels` outputs whose tensors live under
    /// `prefix` (`decoder` for the flow, `mask` for the confidence) of the
    /// model's root builder `vb`.
    pub fn new(
        config: &ModelConfig,
        out_channels: usize,
        prefix: &str,
        vb: &VarBuilder,
    ) -> Result<Self> {
        Self::with_input(config, 2 * config.embedding_dim, out_channels, prefix, vb)
    }

    /// A decoder whose input code has `in_channels` channels instead of
    /// FAb-Net's `2E` (the autoencoder baseline feeds the `E`-d embedding).
    pub fn with_input(
        config: &ModelConfig,
        in_channels: usize,
        out_channels: usize,
        prefix: &str,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp(prefix);
        let plan = config.decoder_plan_from(in_channels, out_channels);
        let last = plan.len() - 1;
        let blocks = plan
            .iter()
            .enumerate()
            .map(|(i, conv)| {
                let act = if i == last {
                    Activation::Tanh
                } else {
                    Activation::Relu
                };
                ConvBlock::new(conv, config, 1, 1, act, &vb)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            blocks,
            align_corners: config.upsample_align_corners,
        })
    }

    /// Maps `(N, C_in, 1, 1)` codes to `(N, out_channels, S, S)` in (-1, 1).
    /// One call is one BatchNorm batch.
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = leaky_relu(z, 0.0)?;
        for block in &self.blocks {
            let (_, _, height, width) = h.dims4()?;
            h = block.forward_upsampled_t(
                &h,
                (2 * height, 2 * width),
                self.align_corners,
                train,
            )?;
        }
        Ok(h)
    }
}
