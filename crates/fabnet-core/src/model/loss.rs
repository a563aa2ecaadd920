//! The reconstruction loss and the curriculum over it (§4 of the reference):
//! a per-sample L1, and the mean over a window of the sorted per-sample
//! losses that moves from the easiest half towards harder samples.

use super::ModelError;
use candle_core::{Tensor, D};
use std::ops::Range;

/// Mean absolute error per sample: `(B, ...)` pairs to `(B,)`, averaged over
/// all non-batch elements (C×H×W for images).
pub fn per_sample_l1(fused: &Tensor, target: &Tensor) -> Result<Tensor, ModelError> {
    if fused.dims() != target.dims() {
        return Err(ModelError::Shape(format!(
            "reconstruction has shape {:?} but the target has {:?}",
            fused.dims(),
            target.dims()
        )));
    }
    Ok((fused - target)?.abs()?.flatten_from(1)?.mean(D::Minus1)?)
}

/// Sorted positions `[⌊lo·B⌋, ⌊hi·B⌋)` of the curriculum window for a batch
/// of `batch`; an error when the window is empty or outside [0, 1].
pub fn curriculum_window(batch: usize, lo: f64, hi: f64) -> Result<Range<usize>, ModelError> {
    let empty = ModelError::CurriculumWindow { lo, hi, batch };
    if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) {
        return Err(empty);
    }
    let (start, end) = (
        (lo * batch as f64).floor() as usize,
        (hi * batch as f64).floor() as usize,
    );
    if start >= end {
        return Err(empty);
    }
    Ok(start..end)
}

/// The curriculum loss: the mean of the per-sample losses `(B,)` at sorted
/// (ascending) positions `[⌊lo·B⌋, ⌊hi·B⌋)`, a scalar. Gradients reach only
/// the selected samples; `lo = 0, hi = 1` gives the plain mean.
pub fn curriculum_loss(per_sample: &Tensor, lo: f64, hi: f64) -> Result<Tensor, ModelError> {
    let batch = per_sample.dims1()?;
    let window = curriculum_window(batch, lo, hi)?;
    let values: Vec<f32> = per_sample.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Err(ModelError::NonFiniteLoss { sample: i });
    }
    let mut order: Vec<u32> = (0..batch as u32).collect();
    // Stable, so ties keep batch order as torch.sort does on CPU.
    order.sort_by(|&a, &b| values[a as usize].total_cmp(&values[b as usize]));
    let picked = Tensor::new(&order[window], per_sample.device())?;
    Ok(per_sample.index_select(&picked, 0)?.mean_all()?)
}
