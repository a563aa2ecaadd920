//! What the model's fused CPU ops share: typed views of candle's CPU
//! storages, the f32/f64 dispatch of a kernel written once, generically,
//! per-thread scratch buffers, ordered f64 plane sums, and the switch to
//! the generic (device-independent) path.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, WithDType};

/// The contiguous elements of `l` in `s`, or an error naming `op`.
pub(crate) fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: operand {:?} is not contiguous", l.dims()),
    }
}

/// A kernel over two operands of one float type.
/// Elements a parallel task should at least cover: the deep layers' tensors
/// have planes of one to four pixels, and one task per plane or channel
/// spent more time waking threads than working.
const MIN_TASK_ELEMENTS: usize = 1 << 13;

/// The fewest items of `elements_per_item` elements one task takes (for
/// rayon's `with_min_len`).
pub(crate) fn min_items(elements_per_item: usize) -> usize {
    (MIN_TASK_ELEMENTS / elements_per_item.max(1)).max(1)
}

/// `Σ_i Σ_j f(planes[i][j])` in f64, each plane summed in order and the
/// planes' sums added in order, so that the result equals the nested
/// iterator sums bit for bit. A single f64 sum waits on its previous
/// addition; four planes at a time keep four independent chains busy.
/// Planes are of one length.
pub(crate) fn sum_of_plane_sums<T: Copy>(planes: &[&[T]], f: impl Fn(T) -> f64) -> f64 {
    // Rust's f64 `Sum` starts from −0.0; so do these.
    let mut total = -0.0;
    let mut groups = planes.chunks_exact(4);
    for group in &mut groups {
        let mut s = [-0.0f64; 4];
        for (((a, b), c), d) in group[0].iter().zip(group[1]).zip(group[2]).zip(group[3]) {
            s[0] += f(*a);
            s[1] += f(*b);
            s[2] += f(*c);
            s[3] += f(*d);
        }
        for v in s {
            total += v;
        }
    }
    for plane in groups.remainder() {
        total += plane.iter().map(|v| f(*v)).sum::<f64>();
    }
    total
}

thread_local! {
    /// Whether this thread's ops take the generic path on the CPU (see
    /// [`with_generic_ops`](super::with_generic_ops)).
    static GENERIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether an op on `x` runs its fused CPU kernel: on a CPU tensor, unless
/// this thread asked for the generic path.
pub(crate) fn fused_cpu(x: &candle_core::Tensor) -> bool {
    x.device().is_cpu() && !GENERIC.with(std::cell::Cell::get)
}

/// Runs `f` with this thread's ops on the generic path; restores the
/// previous setting afterwards, also when `f` panics.
pub(crate) fn with_generic<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERIC.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GENERIC.with(|g| g.replace(true)));
    f()
}

thread_local! {
    /// Scratch buffers of any element type, kept between op calls.
    static SCRATCH: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer of at least `len` elements whose contents are whatever
/// an earlier op left: for buffers every element of which is written before
/// it is read (column matrices, GEMM results), so that each call does not
/// zero megabytes afresh. Hand it back with [`give_scratch`].
pub(crate) fn take_scratch<T: WithDType>(len: usize) -> Vec<T> {
    let reused = SCRATCH.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.iter().position(|b| b.is::<Vec<T>>())?;
        pool.swap_remove(at).downcast::<Vec<T>>().ok()
    });
    let mut buf = reused.map(|b| *b).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    buf
}

/// Returns a buffer from [`take_scratch`] to this thread's pool.
pub(crate) fn give_scratch<T: WithDType>(buf: Vec<T>) {
    SCRATCH.with(|pool| pool.borrow_mut().push(Box::new(buf)));
}

/// Fills every pooled scratch buffer of this thread and of rayon's workers
/// with NaN, so that a test reading an element its op did not write sees it.
#[cfg(test)]
pub(crate) fn poison_scratch() {
    rayon::broadcast(|_| poison_this_thread());
    poison_this_thread();
}

#[cfg(test)]
fn poison_this_thread() {
    SCRATCH.with(|pool| {
        for b in pool.borrow_mut().iter_mut() {
            if let Some(v) = b.downcast_mut::<Vec<f64>>() {
                v.fill(f64::NAN);
            } else if let Some(v) = b.downcast_mut::<Vec<f32>>() {
                v.fill(f32::NAN);
            }
        }
    });
}

pub(crate) trait Kernel2 {
    /// The op's name, for errors.
    const NAME: &'static str;
    /// Runs on contiguous operands.
    fn run<T: WithDType>(&self, a: &[T], b: &[T]) -> Vec<T>;
}

/// A kernel over three operands of one float type.
pub(crate) trait Kernel3 {
    /// The op's name, for errors.
    const NAME: &'static str;
    /// Runs on contiguous operands.
    fn run<T: WithDType>(&self, a: &[T], b: &[T], c: &[T]) -> Vec<T>;
}

/// Runs `k` on two f32 or two f64 storages.
pub(crate) fn dispatch2<K: Kernel2>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    let op = K::NAME;
    Ok(match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => {
            CpuStorage::F32(k.run::<f32>(contiguous(s1, l1, op)?, contiguous(s2, l2, op)?))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_)) => {
            CpuStorage::F64(k.run::<f64>(contiguous(s1, l1, op)?, contiguous(s2, l2, op)?))
        }
        _ => candle_core::bail!(
            "{op}: unsupported dtypes {:?}, {:?} (f32 or f64, both alike)",
            s1.dtype(),
            s2.dtype()
        ),
    })
}

/// Runs `k` on three f32 or three f64 storages.
pub(crate) fn dispatch3<K: Kernel3>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    let op = K::NAME;
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
            CpuStorage::F32(k.run::<f32>(
                contiguous(s1, l1, op)?,
                contiguous(s2, l2, op)?,
                contiguous(s3, l3, op)?,
            ))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
            CpuStorage::F64(k.run::<f64>(
                contiguous(s1, l1, op)?,
                contiguous(s2, l2, op)?,
                contiguous(s3, l3, op)?,
            ))
        }
        _ => candle_core::bail!(
            "{op}: unsupported dtypes {:?}, {:?}, {:?} (f32 or f64, all alike)",
            s1.dtype(),
            s2.dtype(),
            s3.dtype()
        ),
    })
}

/// The largest absolute elementwise difference of two tensors, for tests.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(candle_core::DType::F64))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    /// The generic path holds inside `with_generic` only, nested calls
    /// included, and the setting comes back after a panic inside it.
    #[test]
    fn generic_path_is_scoped_and_restored_after_a_panic() {
        let x = candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        assert!(super::fused_cpu(&x));
        super::with_generic(|| {
            assert!(!super::fused_cpu(&x));
            super::with_generic(|| assert!(!super::fused_cpu(&x)));
            assert!(!super::fused_cpu(&x));
        });
        assert!(super::fused_cpu(&x));
        let caught = std::panic::catch_unwind(|| super::with_generic(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(super::fused_cpu(&x));
    }
}
