//! Process-wide allocator tuning for training on the CPU.
//!
//! glibc hands allocations above its mmap threshold (128 KiB at start,
//! adapting up to 32 MiB) straight to the kernel and unmaps them on free.
//! A training step allocates and frees hundreds of activation and gradient
//! buffers of several MiB, so every step page-faulted its memory in afresh:
//! profiled on a `small` batch-32 step, the faults and TLB shootdowns took
//! 20–40 % of the time. [`keep_freed_memory`] raises the threshold to its
//! maximum and stops heap trimming, so freed buffers are reused.

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

/// The environment variables that give a glibc child process (the PyTorch
/// reference of the benches) the same settings as [`keep_freed_memory`].
pub const GLIBC_ENV: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "33554432"),
    ("MALLOC_TRIM_THRESHOLD_", "2147483647"),
];

#[cfg(test)]
mod tests {
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
