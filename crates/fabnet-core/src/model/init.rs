//! Seeded initialisation with PyTorch 0.4's defaults (§4 of the reference):
//! conv weights and biases U(±1/√fan_in), BatchNorm γ ~ U(0, 1) (or 1),
//! β = 0, running mean 0 and running variance 1.

use super::config::{GammaInit, ModelConfig};
use super::spec::{ParamKind, ParamSpec};
use super::ModelError;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A [`VarMap`] holding every tensor of `config` (parameters and BatchNorm
/// buffers, official keys), initialised from `seed`: the same seed gives the
/// same weights on every machine.
pub fn init_varmap(config: &ModelConfig, seed: u64, device: &Device) -> Result<VarMap, ModelError> {
    init_specs(config, &config.param_specs(), seed, device)
}

/// A [`VarMap`] holding the tensors `specs` names (e.g.
/// [`ModelConfig::autoencoder_param_specs`]), initialised from `seed` as
/// [`init_varmap`] does.
pub fn init_specs(
    config: &ModelConfig,
    specs: &[ParamSpec],
    seed: u64,
    device: &Device,
) -> Result<VarMap, ModelError> {
    config.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for spec in specs {
            let n = spec.numel();
            let values: Vec<f32> = match spec.kind {
                ParamKind::ConvWeight | ParamKind::ConvBias => {
                    let bound = 1.0 / (spec.fan_in as f64).sqrt();
                    uniform(&mut rng, n, -bound, bound)
                }
                ParamKind::BnWeight => match config.bn_gamma_init {
                    GammaInit::Uniform => uniform(&mut rng, n, 0.0, 1.0),
                    GammaInit::Ones => vec![1.0; n],
                },
                ParamKind::BnBias | ParamKind::RunningMean => vec![0.0; n],
                ParamKind::RunningVar => vec![1.0; n],
            };
            let tensor = Tensor::from_vec(values, spec.shape.as_slice(), device)?;
            data.insert(spec.name.clone(), Var::from_tensor(&tensor)?);
        }
    }
    Ok(varmap)
}

/// `n` draws from U(lo, hi), computed in f64 and rounded to f32.
fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (lo + (hi - lo) * rng.random::<f64>()) as f32)
        .collect()
}
