//! A small, seedable, serialisable random number generator (xoshiro256**, seeded by SplitMix64).
//!
//! All randomness of training and sampling (timesteps, ε, data order, sampler noise) is drawn here
//! on the host, so a run is a pure function of its seed, and the generator's state can be written
//! into a checkpoint and restored bit for bit.

use serde::{Deserialize, Serialize};

/// xoshiro256** (Blackman & Vigna 2018). Its whole state is four words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from one number.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Self {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// An independent stream derived from this seed and a label (e.g. the step number).
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut x = seed ^ stream.wrapping_mul(0xD2B7_4407_B1CE_6E93);
        Self::new(splitmix64(&mut x))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An index drawn with probabilities `weights` (normalised, non-empty) by inverting their CDF
    /// at one uniform; rounding that leaves the CDF short of 1 falls to the last index with weight.
    pub fn categorical(&mut self, weights: &[f64]) -> usize {
        let u = self.uniform();
        let mut acc = 0.0;
        // Rounding can leave u at or past the last partial sum: then the last index with weight.
        let last = weights
            .iter()
            .rposition(|w| *w > 0.0)
            .unwrap_or(weights.len() - 1);
        weights
            .iter()
            .position(|w| {
                acc += w;
                u < acc
            })
            .map_or(last, |i| i.min(last))
    }

    /// Uniform integer in 0..n (Lemire's multiply-shift with rejection: unbiased).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        let n = n as u64;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as usize;
            }
        }
    }

    /// `len` standard normal draws (Box–Muller, both outputs used).
    pub fn normals(&mut self, len: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(len + 1);
        while out.len() < len {
            let u1 = 1.0 - self.uniform(); // (0, 1]
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
            out.push((r * c) as f32);
            out.push((r * s) as f32);
        }
        out.truncate(len);
        out
    }

    /// A tensor of standard normal draws of `shape` on `device` (drawn here, on the host).
    pub fn normal_tensor<const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &burn::prelude::Device,
    ) -> burn::prelude::Tensor<D> {
        let n = shape.iter().product();
        burn::prelude::Tensor::<D>::from_data(
            burn::prelude::TensorData::new(self.normals(n), shape),
            device,
        )
    }

    /// A uniformly random permutation of 0..n (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// The seed of the sub-stream `labels` (e.g. [role, iteration]) of `seed`: the seed, then each
/// label in turn, is absorbed by a SplitMix64 round, a bijection of u64. For one seed, label
/// lists of one length that differ in one label give distinct seeds, and so do distinct seeds
/// for one label list; other coincidences need a 64-bit hash collision, where `seed ^ stream`
/// collides by construction ((1, 2) and (2, 1), or (s, stream) and (s ^ c, stream ^ c) for any
/// c).
pub fn substream(seed: u64, labels: &[u64]) -> u64 {
    let mut x = seed;
    let mut h = splitmix64(&mut x);
    for label in labels {
        let mut x = h ^ label;
        h = splitmix64(&mut x);
    }
    h
}

/// burn's device RNG (parameter initialisation, dropout masks) is global to the process: two
/// runs in one process that seed it and draw from it concurrently interleave their draws. Hold
/// this lock from `device.seed(..)` until the draws are made to keep each run reproducible.
pub fn device_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    static MASK_STREAM: std::cell::RefCell<Option<Rng>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the dropout masks drawn on this thread taken from `rng` (on the host) instead of
/// burn's process-global device generator. Sharded training ([`crate::parallel`]) runs several
/// forward passes at once: drawing from the shared device generator would interleave their
/// draws in no fixed order, so each shard gets its own stream, a function of (seed, step, shard).
pub fn with_mask_stream<R>(rng: Rng, f: impl FnOnce() -> R) -> R {
    let previous = MASK_STREAM.with(|s| s.replace(Some(rng)));
    let out = f();
    MASK_STREAM.with(|s| *s.borrow_mut() = previous);
    out
}

/// A keep-mask (1 with probability `keep`, else 0) drawn from this thread's mask stream, or
/// `None` outside [`with_mask_stream`].
pub fn stream_mask<const D: usize>(
    shape: [usize; D],
    keep: f64,
    device: &burn::tensor::Device,
) -> Option<burn::tensor::Tensor<D>> {
    MASK_STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let rng = s.as_mut()?;
        let n: usize = shape.iter().product();
        let bits: Vec<f32> = (0..n)
            .map(|_| if rng.uniform() < keep { 1.0 } else { 0.0 })
            .collect();
        Some(burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(bits, shape),
            device,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_roundtrip() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.normals(9), b.normals(9));
        let saved = serde_json::to_string(&a).unwrap();
        let mut c: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(a.next_u64(), c.next_u64());
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn normals_have_unit_moments_and_below_is_in_range() {
        let mut r = Rng::new(1);
        let x = r.normals(200_000);
        let m = x.iter().map(|v| *v as f64).sum::<f64>() / x.len() as f64;
        let v = x.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.01, "mean {m} var {v}");
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        assert!(
            counts.iter().all(|c| (*c as f64 - 10_000.0).abs() < 500.0),
            "{counts:?}"
        );
        let mut p = r.permutation(100);
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
