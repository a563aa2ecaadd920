//! The autoencoder baseline of the paper's tables: FAb-Net's encoder (same
//! keys, so its embedding is read exactly as FAb-Net's), and a decoder with
//! FAb-Net's decoder widths that maps the embedding alone back to the image.
//! Trained on the same frames with the same budget, it shows what plain
//! reconstruction learns without the flow bottleneck.

use super::config::ModelConfig;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::init::init_specs;
use super::spec::Part;
use super::ModelError;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// Encoder → embedding → image decoder (`encoder.*`, `autoencoder.*`).
#[derive(Debug, Clone)]
pub struct Autoencoder {
    config: ModelConfig,
    encoder: Encoder,
    decoder: Decoder,
}

impl Autoencoder {
    /// Builds the autoencoder of `config` from `vb`, which must hold the
    /// tensors of [`ModelConfig::autoencoder_param_specs`].
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::new(config, &vb)?,
            decoder: Decoder::with_input(
                config,
                config.embedding_dim,
                3,
                Part::ImageDecoder.prefix(),
                &vb,
            )?,
        })
    }

    /// A freshly initialised autoencoder (PyTorch 0.4 defaults drawn from
    /// `seed`) and the [`VarMap`] holding its tensors.
    pub fn init(
        config: &ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap), ModelError> {
        let varmap = init_specs(config, &config.autoencoder_param_specs(), seed, device)?;
        let model = Self::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((model, varmap))
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Raw embeddings `(B, E)` of images `(B, 3, S, S)` in [0, 1].
    pub fn embed(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.check_images(images)?;
        Ok(self.encoder.forward_t(images, train)?.flatten_from(1)?)
    }

    /// The reconstruction `(B, 3, S, S)` in [0, 1] of `images`: the decoder's
    /// tanh output mapped by `(y + 1) / 2`. One call is one BatchNorm batch
    /// for the encoder and one for the decoder.
    pub fn reconstruct(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.check_images(images)?;
        let code = self.encoder.forward_t(images, train)?;
        let y = self.decoder.forward_t(&code, train)?;
        Ok(((y + 1.0)? * 0.5)?)
    }

    fn check_images(&self, x: &Tensor) -> Result<(), ModelError> {
        let s = self.config.image_size;
        match x.dims() {
            [_, 3, h, w] if *h == s && *w == s => Ok(()),
            dims => Err(ModelError::Shape(format!(
                "images have shape {dims:?}, expected (B, 3, {s}, {s})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FabNet;

    #[test]
    fn shapes_keys_and_a_learning_step() -> Result<(), Box<dyn std::error::Error>> {
        let config = ModelConfig::preset("tiny")?;
        let device = Device::Cpu;
        let (ae, varmap) = Autoencoder::init(&config, 3, &device)?;
        let specs = config.autoencoder_param_specs();
        assert_eq!(varmap.all_vars().len(), specs.len());
        // The encoder is FAb-Net's, under the same keys and shapes.
        let fabnet_encoder: Vec<_> = config
            .param_specs()
            .into_iter()
            .filter(|s| s.part == Part::Encoder)
            .collect();
        let ae_encoder: Vec<_> = specs
            .iter()
            .filter(|s| s.part == Part::Encoder)
            .cloned()
            .collect();
        assert_eq!(fabnet_encoder, ae_encoder);
        assert!(specs
            .iter()
            .filter(|s| s.part == Part::ImageDecoder)
            .all(|s| s.name.starts_with("autoencoder.")));

        // Flat colours: learnable through a 256-d bottleneck, unlike noise.
        let x = Tensor::rand(0.1f32, 0.9f32, (4, 3, 1, 1), &device)?
            .broadcast_as((4, 3, 32, 32))?
            .contiguous()?;
        let y = ae.reconstruct(&x, true)?;
        assert_eq!(y.dims(), &[4, 3, 32, 32]);
        let (lo, hi) = (
            y.min_all()?.to_scalar::<f32>()?,
            y.max_all()?.to_scalar::<f32>()?,
        );
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
        assert_eq!(ae.embed(&x, false)?.dims(), &[4, 256]);

        // The same seed and the same encoder keys give FAb-Net's embedding
        // when the encoder weights are shared.
        let (fab, fab_vars) = FabNet::init(&config, 3, &device)?;
        {
            let ae_data = varmap.data().lock().map_err(|e| e.to_string())?;
            let fab_data = fab_vars.data().lock().map_err(|e| e.to_string())?;
            for (k, v) in fab_data.iter().filter(|(k, _)| k.starts_with("encoder.")) {
                v.set(ae_data[k].as_tensor())?;
            }
        }
        let diff = (fab.embed(&x, false)? - ae.embed(&x, false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);

        // A few Adam steps on one batch lower its L1 clearly.
        let vars = varmap.all_vars();
        let mut opt = candle_nn::AdamW::new(
            vars,
            candle_nn::ParamsAdamW {
                lr: 3e-3,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        use candle_nn::Optimizer;
        let loss = |ae: &Autoencoder| -> candle_core::Result<Tensor> {
            ae.reconstruct(&x, true)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                .sub(&x)?
                .abs()?
                .mean_all()
        };
        let first = loss(&ae)?.to_scalar::<f32>()?;
        for _ in 0..15 {
            opt.backward_step(&loss(&ae)?)?;
        }
        let last = loss(&ae)?.to_scalar::<f32>()?;
        assert!(last < first * 0.9, "L1 {first} -> {last}");
        Ok(())
    }
}
