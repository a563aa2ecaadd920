//! Process-wide tuning for training on the CPU: the allocator, and the
//! spin-wait of candle's own thread pool.
//!
//! glibc hands allocations above its mmap threshold (128 KiB at start,
//! adapting up to 32 MiB) straight to the kernel and unmaps them on free.
//! A training step allocates and frees hundreds of activation and gradient
//! buffers of several MiB, so every step page-faulted its memory in afresh:
//! profiled on a `small` batch-32 step, the faults and TLB shootdowns took
//! 20–40 % of the time. [`keep_freed_memory`] raises the threshold to its
//! maximum and stops heap trimming, so freed buffers are reused.
//!
//! candle runs its element-wise CPU ops on a thread pool of its own, whose
//! workers spin for 25 000 iterations after each op before they sleep.
//! Our kernels run on rayon's threads, so on a 2-core machine that spinning
//! took a core from them after every candle op (about 10 % of a `tiny`
//! training step's CPU samples). [`shorten_candle_spin`] cuts the spin.
//!
//! The ops allocate their outputs through [`zeros`], which has all cores
//! write the zeros of a large buffer.

use rayon::prelude::*;

/// The mmap threshold set by [`keep_freed_memory`]: glibc's ceiling on
/// 64-bit targets.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Makes glibc keep freed buffers of up to [`MMAP_THRESHOLD_BYTES`] in the
/// heap for reuse instead of returning them to the kernel. Call it once at
/// program start (the `fabnet` CLI and the benches do); it changes the
/// whole process's allocator and costs memory that stays mapped at its peak.
/// Returns whether the settings took effect: always `false` off glibc.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values
        // are within glibc's accepted ranges.
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int);
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            mmap == 1 && trim == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The spin limit [`shorten_candle_spin`] sets: a few microseconds.
pub const CANDLE_SPIN_LIMIT: u32 = 100;

/// candle's environment variable for its thread pool's spin limit.
const CANDLE_SPIN_ENV: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Sets candle's thread-pool spin limit to [`CANDLE_SPIN_LIMIT`] unless the
/// user already set `CANDLE_BARRIER_POOL_SPIN_LIMIT`, and returns the value
/// in effect. candle reads it once, when its pool starts, so call this at
/// program start, before any candle op and before other threads exist (it
/// writes the environment).
pub fn shorten_candle_spin() -> String {
    match std::env::var(CANDLE_SPIN_ENV) {
        Ok(v) => v,
        Err(_) => {
            let v = CANDLE_SPIN_LIMIT.to_string();
            std::env::set_var(CANDLE_SPIN_ENV, &v);
            v
        }
    }
}

/// The environment variables that give a glibc child process (the PyTorch
/// reference of the benches) the same settings as [`keep_freed_memory`].
pub const GLIBC_ENV: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "33554432"),
    ("MALLOC_TRIM_THRESHOLD_", "2147483647"),
];

/// Elements from which [`zeros`] has the cores write them in parallel.
const PARALLEL_ZEROS: usize = 1 << 16;

/// `len` copies of `zero`, written by all cores for large buffers. The ops
/// allocate their outputs on the calling thread, where a plain
/// `vec![zero; len]` of megabytes is a memset the other cores wait for
/// (about 2 % of a training step's time on 2 cores).
pub(crate) fn zeros<T: Copy + Send + Sync>(len: usize, zero: T) -> Vec<T> {
    if len < PARALLEL_ZEROS {
        return vec![zero; len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(PARALLEL_ZEROS)
        .for_each(|chunk| {
            for e in chunk {
                e.write(zero);
            }
        });
    // SAFETY: the capacity is at least `len`, and every element below `len`
    // was written above.
    unsafe { v.set_len(len) };
    v
}

#[cfg(test)]
mod tests {
    /// Below, at and above the parallel threshold (whose chunks leave a
    /// remainder), every element is the given zero, also a negative one.
    #[test]
    fn zeros_fills_every_element_at_every_size() {
        for len in [
            0,
            1,
            super::PARALLEL_ZEROS - 1,
            super::PARALLEL_ZEROS,
            3 * super::PARALLEL_ZEROS + 5,
        ] {
            let v = super::zeros(len, -0.0f32);
            assert_eq!(v.len(), len);
            assert!(
                v.iter().all(|x| x.to_bits() == (-0.0f32).to_bits()),
                "len {len}"
            );
        }
    }

    #[test]
    fn candle_spin_limit_is_set_once_and_a_user_value_wins() {
        // Both orders in one test: tests share the process environment.
        let first = super::shorten_candle_spin();
        assert_eq!(
            std::env::var(super::CANDLE_SPIN_ENV).ok(),
            Some(first.clone())
        );
        std::env::set_var(super::CANDLE_SPIN_ENV, "7");
        assert_eq!(super::shorten_candle_spin(), "7");
    }

    #[test]
    fn settings_take_effect_on_glibc_and_match_the_child_environment() {
        let applied = super::keep_freed_memory();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        assert_eq!(
            super::GLIBC_ENV[0].1.parse::<usize>().ok(),
            Some(super::MMAP_THRESHOLD_BYTES)
        );
        assert_eq!(
            super::GLIBC_ENV[1].1.parse::<i64>().ok(),
            Some(i32::MAX as i64)
        );
    }
}
