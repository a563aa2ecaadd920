//! The building block shared by the encoder and the decoders: a conv with
//! bias, an optional BatchNorm and an activation, with the official key names.

use super::act::leaky_relu;
use super::config::{ConvPlan, GammaInit, ModelConfig};
use super::conv::{conv2d, upsample_conv2d};
use super::norm::BatchNorm2d;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// BatchNorm constants of PyTorch's `BatchNorm2d` defaults, which the
/// authors' code used.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// The nonlinearity after a conv (and its BatchNorm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Activation {
    /// `max(x, slope·x)`.
    LeakyRelu(f64),
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// The identity.
    None,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::LeakyRelu(slope) => leaky_relu(x, slope),
            Activation::Relu => leaky_relu(x, 0.0),
            Activation::Tanh => x.tanh(),
            Activation::None => Ok(x.clone()),
        }
    }
}

/// conv → BatchNorm (optional) → activation, as one level of the network.
#[derive(Debug, Clone)]
pub(crate) struct ConvBlock {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    bn: Option<BatchNorm2d>,
    activation: Activation,
}

impl ConvBlock {
    /// Stops tracking the convolution's weight and bias: they keep their
    /// values (the storage is shared), but backward no longer computes their
    /// gradients.
    pub fn freeze_conv(&mut self) {
        self.weight = self.weight.detach();
        self.bias = self.bias.detach();
    }

    /// Builds the block of `plan` under `vb` (the part's prefix), with the
    /// given stride and padding. The init hints reproduce PyTorch 0.4's
    /// defaults for vars that `vb` has to create.
    pub fn new(
        plan: &ConvPlan,
        config: &ModelConfig,
        stride: usize,
        padding: usize,
        activation: Activation,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let bound = 1.0 / (plan.fan_in() as f64).sqrt();
        let uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let k = plan.kernel;
        let cv = vb.pp(plan.index);
        let weight = cv.get_with_hints(
            (plan.out_channels, plan.in_channels, k, k),
            "weight",
            uniform,
        )?;
        let bias = cv.get_with_hints(plan.out_channels, "bias", uniform)?;
        let bn = match plan.bn_index {
            None => None,
            Some(index) => {
                let bv = vb.pp(index);
                let n = plan.out_channels;
                let gamma_init = match config.bn_gamma_init {
                    GammaInit::Uniform => Init::Uniform { lo: 0.0, up: 1.0 },
                    GammaInit::Ones => Init::Const(1.0),
                };
                Some(BatchNorm2d::new(
                    bv.get_with_hints(n, "running_mean", Init::Const(0.0))?,
                    bv.get_with_hints(n, "running_var", Init::Const(1.0))?,
                    bv.get_with_hints(n, "weight", gamma_init)?,
                    bv.get_with_hints(n, "bias", Init::Const(0.0))?,
                    BN_EPS,
                    BN_MOMENTUM,
                )?)
            }
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            bn,
            activation,
        })
    }

    /// Applies the block to `(N, C_in, H, W)`. In train mode the BatchNorm
    /// normalises with this call's batch statistics and updates its running
    /// statistics; in eval mode it uses the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = conv2d(x, &self.weight, &self.bias, self.stride, self.padding)?;
        self.finish(&y, train)
    }

    /// [`ConvBlock::forward_t`] of `x` upsampled bilinearly to `size` (one
    /// op for both on the CPU, see [`upsample_conv2d`]).
    pub fn forward_upsampled_t(
        &self,
        x: &Tensor,
        size: (usize, usize),
        align_corners: bool,
        train: bool,
    ) -> Result<Tensor> {
        let y = upsample_conv2d(
            x,
            size,
            align_corners,
            (&self.weight, &self.bias),
            (self.stride, self.padding),
        )?;
        self.finish(&y, train)
    }

    /// The BatchNorm and activation after the conv's output `y`.
    fn finish(&self, y: &Tensor, train: bool) -> Result<Tensor> {
        let slope = match self.activation {
            Activation::LeakyRelu(s) if s >= 0.0 => Some(s),
            Activation::Relu => Some(0.0),
            _ => None,
        };
        match (&self.bn, slope) {
            // One op and one pass for both (same values and gradients).
            (Some(bn), Some(slope)) => bn.forward_act_t(y, train, Some(slope)),
            (Some(bn), None) => self.activation.apply(&bn.forward_t(y, train)?),
            (None, _) => self.activation.apply(y),
        }
    }
}
