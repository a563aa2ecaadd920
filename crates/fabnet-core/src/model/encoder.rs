//! The pix2pix-style encoder (§2 of the reference): 4×4 stride-2 convs that
//! halve the image down to 1×1, whose last raw output is the embedding.

use super::config::ModelConfig;
use super::layers::{Activation, ConvBlock};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Negative slope of the encoder's LeakyReLUs.
const LEAKY_SLOPE: f64 = 0.2;

/// The encoder: `log2(S)` levels of conv 4×4 / stride 2 / padding 1, each
/// followed by BatchNorm and LeakyReLU(0.2), except the first (no BN) and the
/// last (nothing). Its tensors are `encoder.{index}.*`.
#[derive(Debug, Clone)]
pub struct Encoder {
    blocks: Vec<ConvBlock>,
}

impl Encoder {
    /// Builds the encoder of `config`; `vb` is the model's root builder (the
    /// `encoder` prefix is added here).
    pub fn new(config: &ModelConfig, vb: &VarBuilder) -> Result<Self> {
        let vb = vb.pp("encoder");
        let plan = config.encoder_plan();
        let last = plan.len() - 1;
        let blocks = plan
            .iter()
            .enumerate()
            .map(|(i, conv)| {
                let act = if i == last {
                    Activation::None
                } else {
                    Activation::LeakyRelu(LEAKY_SLOPE)
                };
                ConvBlock::new(conv, config, 2, 1, act, &vb)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks })
    }

    /// Maps images `(N, 3, S, S)` in [0, 1] to the raw embedding map
    /// `(N, E, 1, 1)`. One call is one BatchNorm batch.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        Ok(h)
    }
}
