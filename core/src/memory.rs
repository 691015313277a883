//! How the process's allocator treats freed memory.
//!
//! A denoising step allocates and frees the same few-megabyte tensors hundreds of times. glibc's
//! malloc returns such blocks to the kernel (mmap'd blocks on every free, the heap's top past
//! `M_TRIM_THRESHOLD`), so the next step's tensor lands on fresh pages that the kernel must zero
//! and map one fault at a time: 10–13 % of a `bench --mode sample` step on flex went to
//! `clear_page` and page faults (perf, `tiny` and `mnist` at batch 32). [`keep_freed_memory`]
//! raises both thresholds once, at start-up, so freed tensors stay in the heap and are reused.
//! Measured in BENCHMARKS.md (2026-12-02, third session): up to 1.5× on a preset's sample step with
//! one shard, 1.0–1.3× with two, peak RSS −3 to +18 MiB.
//!
//! This is the one module of the workspace with `unsafe` code (the lint is `deny`, allowed here
//! alone): `mallopt` is a C function. Elsewhere (musl, macOS, Windows) the call does nothing.
#![allow(unsafe_code)]

/// Largest block glibc will serve from its heaps instead of a fresh `mmap`: 32 MiB, the highest
/// value `mallopt(M_MMAP_THRESHOLD)` accepts on 64-bit targets (half of its 64 MiB heap size).
/// Larger tensors are still mapped and unmapped per allocation.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at a heap's top that glibc keeps instead of returning it to the kernel: 1 GiB.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Keeps freed tensors in the process for reuse (glibc's `M_MMAP_THRESHOLD` = [`MMAP_THRESHOLD`],
/// `M_TRIM_THRESHOLD` = [`TRIM_THRESHOLD`]). Call it first in `main`, before threads start; the
/// binaries do. `TWEEDIE_MALLOC=default` in the environment leaves glibc's defaults, for
/// side-by-side checks. Returns whether the allocator took both settings (false where it is not
/// glibc, or when told to leave it).
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("TWEEDIE_MALLOC").is_some_and(|v| v == "default") {
        return false;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    let mmap = libc::c_int::try_from(MMAP_THRESHOLD).expect("fits in an int");
    let trim = libc::c_int::try_from(TRIM_THRESHOLD).expect("fits in an int");
    // SAFETY: mallopt takes two ints by value and only updates malloc's own parameters under its
    // lock; it reads or writes no memory of ours, and both values are in the ranges glibc's
    // manual gives (it returns 0, changing nothing, for a value it refuses).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_thresholds_and_allocation_still_works() {
        assert!(keep_freed_memory(), "glibc refused a threshold");
        // A block just under the threshold and one above it are both served and usable.
        for n in [MMAP_THRESHOLD / 4 - 16, MMAP_THRESHOLD / 4 + 16] {
            let v = vec![1.5f32; n];
            assert_eq!(v.iter().map(|&x| f64::from(x)).sum::<f64>(), 1.5 * n as f64);
        }
    }
}
