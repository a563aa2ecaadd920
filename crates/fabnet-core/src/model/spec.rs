//! The model's tensors by name: the official state-dict keys, their shapes
//! and roles, and which of them belong to the encoder, the flow decoder and
//! the mask decoder.

use super::config::{ConvPlan, ModelConfig};
use candle_core::Var;
use candle_nn::VarMap;

/// One of the three separately trained parts of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The image encoder (`encoder.*`).
    Encoder,
    /// The flow decoder (`decoder.*`, 2 output channels).
    FlowDecoder,
    /// The confidence (mask) decoder (`mask.*`, 1 output channel).
    MaskDecoder,
    /// The autoencoder baseline's image decoder (`autoencoder.*`, 3 output
    /// channels, fed the embedding alone); not part of FAb-Net.
    ImageDecoder,
}

impl Part {
    /// FAb-Net's parts, in state-dict order.
    pub const ALL: [Part; 3] = [Part::Encoder, Part::FlowDecoder, Part::MaskDecoder];

    /// The key prefix of the part's tensors, without the trailing dot.
    pub fn prefix(self) -> &'static str {
        match self {
            Part::Encoder => "encoder",
            Part::FlowDecoder => "decoder",
            Part::MaskDecoder => "mask",
            Part::ImageDecoder => "autoencoder",
        }
    }

    /// The part's trainable variables in `varmap` (weights and biases, not
    /// BatchNorm running statistics), sorted by name; e.g. to freeze the flow
    /// decoder, leave its vars out of the optimiser.
    pub fn trainable_vars(self, varmap: &VarMap) -> Vec<Var> {
        let prefix = format!("{}.", self.prefix());
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut named: Vec<(&String, &Var)> = data
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix) && !is_running_stat(name))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    }
}

/// What a named tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Conv kernel `(out, in, k, k)`.
    ConvWeight,
    /// Conv bias `(out,)`.
    ConvBias,
    /// BatchNorm scale γ `(channels,)`.
    BnWeight,
    /// BatchNorm shift β `(channels,)`.
    BnBias,
    /// BatchNorm running mean `(channels,)`: a buffer, not trained.
    RunningMean,
    /// BatchNorm running (unbiased) variance `(channels,)`: a buffer, not trained.
    RunningVar,
}

impl ParamKind {
    /// Whether gradient descent updates this tensor.
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamKind::RunningMean | ParamKind::RunningVar)
    }
}

/// A named tensor of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The official state-dict key, e.g. `encoder.2.weight`.
    pub name: String,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Its role.
    pub kind: ParamKind,
    /// The part it belongs to.
    pub part: Part,
    /// Fan-in of the conv it belongs to (conv tensors only, else 0), which
    /// sets PyTorch's default init bound `1/sqrt(fan_in)`.
    pub fan_in: usize,
}

impl ParamSpec {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Whether a key names a BatchNorm running statistic.
pub(crate) fn is_running_stat(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

fn push_conv(specs: &mut Vec<ParamSpec>, part: Part, conv: &ConvPlan) {
    let p = part.prefix();
    let fan_in = conv.fan_in();
    let k = conv.kernel;
    specs.push(ParamSpec {
        name: format!("{p}.{}.weight", conv.index),
        shape: vec![conv.out_channels, conv.in_channels, k, k],
        kind: ParamKind::ConvWeight,
        part,
        fan_in,
    });
    specs.push(ParamSpec {
        name: format!("{p}.{}.bias", conv.index),
        shape: vec![conv.out_channels],
        kind: ParamKind::ConvBias,
        part,
        fan_in,
    });
    if let Some(bn) = conv.bn_index {
        for (suffix, kind) in [
            ("weight", ParamKind::BnWeight),
            ("bias", ParamKind::BnBias),
            ("running_mean", ParamKind::RunningMean),
            ("running_var", ParamKind::RunningVar),
        ] {
            specs.push(ParamSpec {
                name: format!("{p}.{bn}.{suffix}"),
                shape: vec![conv.out_channels],
                kind,
                part,
                fan_in: 0,
            });
        }
    }
}

impl ModelConfig {
    /// Every tensor of the model (parameters and BatchNorm buffers) in
    /// state-dict order: encoder, flow decoder, mask decoder.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for conv in self.encoder_plan() {
            push_conv(&mut specs, Part::Encoder, &conv);
        }
        for conv in self.decoder_plan(2) {
            push_conv(&mut specs, Part::FlowDecoder, &conv);
        }
        for conv in self.decoder_plan(1) {
            push_conv(&mut specs, Part::MaskDecoder, &conv);
        }
        specs
    }

    /// Every tensor of the autoencoder baseline: FAb-Net's encoder, then an
    /// image decoder with FAb-Net's decoder widths fed the `E`-d embedding
    /// alone, ending in 3 channels.
    pub fn autoencoder_param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for conv in self.encoder_plan() {
            push_conv(&mut specs, Part::Encoder, &conv);
        }
        for conv in self.decoder_plan_from(self.embedding_dim, 3) {
            push_conv(&mut specs, Part::ImageDecoder, &conv);
        }
        specs
    }

    /// Number of trainable scalars of one part, or of the whole model with
    /// `None` (BatchNorm buffers excluded, as PyTorch's `parameters()`).
    pub fn num_parameters(&self, part: Option<Part>) -> usize {
        self.param_specs()
            .iter()
            .filter(|s| s.kind.is_trainable() && part.is_none_or(|p| p == s.part))
            .map(ParamSpec::numel)
            .sum()
    }
}
