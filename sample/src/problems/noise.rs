//! Noise models p(y | A(x)). Images live on the model's [−1, 1] scale, but every parameter is
//! stated on the **[0, 1] image scale** (σ_y = 0.05 means 5 % of the intensity range), as
//! configs and reports use it; the conversion (×2) happens here, once.

use burn::prelude::*;
use tweedie_core::rng::Rng;

/// Log-likelihoods are summed over all pixels of a sample: `[B, C, H, W]` → `[B]`.
pub trait NoiseModel {
    fn name(&self) -> String;
    /// log p(y | mean), exact (normalising constants included), per sample.
    fn log_prob(&self, y: Tensor<4>, mean: Tensor<4>) -> Tensor<1>;
    /// σ on the model scale, for Gaussian noise.
    fn gaussian_sigma(&self) -> Option<f64> {
        None
    }
    /// A draw of y given `mean` = A(x).
    fn sample(&self, mean: Tensor<4>, rng: &mut Rng) -> Tensor<4>;
    /// The estimate of A(x) that y gives on its own, on the model scale (y itself for additive
    /// noise; counts over the rate for Poisson): what A⁺ is applied to.
    fn mean_estimate(&self, y: Tensor<4>) -> Tensor<4> {
        y
    }
    /// The residual norm of DPS's step-size rule (Chung et al. 2023, Algorithm 1): ‖y − m‖₂ per
    /// sample for additive noise.
    fn residual_norm(&self, y: Tensor<4>, mean: Tensor<4>) -> Tensor<1> {
        per_sample_sum((y - mean).square()).sqrt()
    }
    /// log p(y | new) − log p(y | old) per sample, without the constants that cancel (what an
    /// optimiser compares: summed in f32, the constants would drown the change).
    fn log_prob_change(&self, y: Tensor<4>, new: Tensor<4>, old: Tensor<4>) -> Tensor<1> {
        self.log_prob(y.clone(), new) - self.log_prob(y, old)
    }
    /// An upper bound on the curvature −∂² log p(y | m)/∂m² of each pixel at `mean`, where the
    /// model has one (a diagonal preconditioner for proximal steps).
    fn curvature(&self, _y: Tensor<4>, _mean: Tensor<4>) -> Option<Tensor<4>> {
        None
    }
}

pub(crate) fn per_sample_sum(x: Tensor<4>) -> Tensor<1> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c * h * w]).sum_dim(1).reshape([b])
}

/// y = A(x) + σ ε with σ = 2 σ_y on the model scale.
#[derive(Debug, Clone, Copy)]
pub struct Gaussian {
    /// Standard deviation on the [0, 1] image scale.
    pub sigma_y: f64,
}

impl Gaussian {
    /// σ on the model's [−1, 1] scale.
    pub fn sigma(&self) -> f64 {
        2.0 * self.sigma_y
    }
}

impl NoiseModel for Gaussian {
    fn name(&self) -> String {
        format!("gaussian(σ_y={})", self.sigma_y)
    }
    fn gaussian_sigma(&self) -> Option<f64> {
        Some(self.sigma())
    }
    fn log_prob(&self, y: Tensor<4>, mean: Tensor<4>) -> Tensor<1> {
        let s = self.sigma();
        let n = y.dims()[1..].iter().product::<usize>() as f64;
        let c = -0.5 * n * (2.0 * std::f64::consts::PI * s * s).ln();
        per_sample_sum((y - mean).square())
            .mul_scalar(-0.5 / (s * s))
            .add_scalar(c)
    }
    fn sample(&self, mean: Tensor<4>, rng: &mut Rng) -> Tensor<4> {
        let shape = mean.dims();
        let z = rng.normal_tensor(shape, &mean.device());
        mean + z.mul_scalar(self.sigma())
    }
    /// −(new − old)(new + old − 2y)/(2σ²), summed.
    fn log_prob_change(&self, y: Tensor<4>, new: Tensor<4>, old: Tensor<4>) -> Tensor<1> {
        let s = self.sigma();
        per_sample_sum((new.clone() - old.clone()) * (new + old - y.mul_scalar(2.0)))
            .mul_scalar(-0.5 / (s * s))
    }
    fn curvature(&self, _y: Tensor<4>, mean: Tensor<4>) -> Option<Tensor<4>> {
        let s = self.sigma();
        Some(mean.zeros_like().add_scalar(1.0 / (s * s)))
    }
}

/// Photon counts: y ~ Poisson(rate · u) with u = (A(x) + 1)/2 the [0, 1] intensity (floored at
/// 1e-6 so the log stays finite). y is in counts.
#[derive(Debug, Clone, Copy)]
pub struct Poisson {
    /// Expected count of a pixel of intensity 1.
    pub rate: f64,
}

impl NoiseModel for Poisson {
    fn name(&self) -> String {
        format!("poisson(rate={})", self.rate)
    }
    /// E[y] = rate · (A(x) + 1)/2, so A(x) ≈ 2 y/rate − 1.
    fn mean_estimate(&self, y: Tensor<4>) -> Tensor<4> {
        y.mul_scalar(2.0 / self.rate).sub_scalar(1.0)
    }
    /// DPS's rule for shot noise (Chung et al. 2023, §3.2, eq. 16 and Algorithm 2): the Gaussian
    /// approximation of the counts, ‖y − λ(m)‖_Λ with Λ = diag(1/(2y)), in counts; a pixel with no
    /// count is weighted as one count (its variance estimate y would be 0).
    fn residual_norm(&self, y: Tensor<4>, mean: Tensor<4>) -> Tensor<1> {
        let weight = y.clone().clamp_min(1.0).mul_scalar(2.0).recip();
        per_sample_sum((y - self.intensity(mean)).square() * weight).sqrt()
    }
    /// y log(λ_new/λ_old) − (λ_new − λ_old), summed: no log y!, and the log of a ratio.
    fn log_prob_change(&self, y: Tensor<4>, new: Tensor<4>, old: Tensor<4>) -> Tensor<1> {
        let (ln, lo) = (self.intensity(new), self.intensity(old));
        per_sample_sum(y * (ln.clone() / lo.clone()).log() - (ln - lo))
    }
    /// y/(m + 1)² (with m + 1 at the intensity floor at most): the exact curvature of
    /// y log λ − λ in m, unbounded only at the floor.
    fn curvature(&self, y: Tensor<4>, mean: Tensor<4>) -> Option<Tensor<4>> {
        let u = mean.add_scalar(1.0).clamp_min(2.0 * INTENSITY_FLOOR);
        Some(y / u.clone().square())
    }
    fn log_prob(&self, y: Tensor<4>, mean: Tensor<4>) -> Tensor<1> {
        let lambda = self.intensity(mean);
        let yv = tweedie_core::host_values(y.clone());
        let b = y.dims()[0];
        let per = yv.len() / b.max(1);
        // −Σ log y! per sample (constant in x), on the host.
        let lfact: Vec<f32> = yv
            .chunks(per.max(1))
            .map(|c| -c.iter().map(|v| libm::lgamma(*v as f64 + 1.0)).sum::<f64>() as f32)
            .collect();
        let lfact = Tensor::<1>::from_data(TensorData::new(lfact, [b]), &y.device());
        per_sample_sum(y * lambda.clone().log() - lambda) + lfact
    }
    fn sample(&self, mean: Tensor<4>, rng: &mut Rng) -> Tensor<4> {
        let shape = mean.dims();
        let v: Vec<f32> = tweedie_core::host_values(mean.clone())
            .into_iter()
            .map(|m| {
                poisson(
                    rng,
                    (((m as f64) + 1.0) * 0.5 * self.rate).max(INTENSITY_FLOOR * self.rate),
                ) as f32
            })
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, shape), &mean.device())
    }
}

/// The least intensity (m + 1)/2 a Poisson pixel is given, so that log λ stays finite.
const INTENSITY_FLOOR: f64 = 1e-6;

impl Poisson {
    /// λ = rate · (m + 1)/2, floored at [`INTENSITY_FLOOR`] · rate.
    fn intensity(&self, mean: Tensor<4>) -> Tensor<4> {
        mean.add_scalar(1.0)
            .mul_scalar(0.5 * self.rate)
            .clamp_min(INTENSITY_FLOOR * self.rate)
    }
}

/// An exact Poisson draw: Knuth's product method on pieces of mean ≤ 30 (a sum of independent
/// Poissons is Poisson).
fn poisson(rng: &mut Rng, lambda: f64) -> u64 {
    let mut left = lambda;
    let mut total = 0;
    while left > 0.0 {
        let l = left.min(30.0);
        left -= l;
        let limit = (-l).exp();
        let mut p = rng.uniform();
        while p > limit {
            total += 1;
            p *= rng.uniform();
        }
    }
    total
}

/// Heavy-tailed errors: y = A(x) + s·T_ν with s = 2·scale on the model scale.
#[derive(Debug, Clone, Copy)]
pub struct StudentT {
    pub nu: f64,
    /// Scale on the [0, 1] image scale.
    pub scale: f64,
}

impl NoiseModel for StudentT {
    fn name(&self) -> String {
        format!("student-t(ν={}, scale={})", self.nu, self.scale)
    }
    fn log_prob(&self, y: Tensor<4>, mean: Tensor<4>) -> Tensor<1> {
        let (nu, s) = (self.nu, 2.0 * self.scale);
        let n = y.dims()[1..].iter().product::<usize>() as f64;
        let c = n
            * (libm::lgamma((nu + 1.0) / 2.0)
                - libm::lgamma(nu / 2.0)
                - 0.5 * (nu * std::f64::consts::PI * s * s).ln());
        let r2 = (y - mean).square().div_scalar(nu * s * s);
        per_sample_sum(r2.add_scalar(1.0).log())
            .mul_scalar(-(nu + 1.0) / 2.0)
            .add_scalar(c)
    }
    /// (ν + 1)/(ν s²): the curvature at a zero residual, its maximum.
    fn curvature(&self, _y: Tensor<4>, mean: Tensor<4>) -> Option<Tensor<4>> {
        let s = 2.0 * self.scale;
        Some(
            mean.zeros_like()
                .add_scalar((self.nu + 1.0) / (self.nu * s * s)),
        )
    }
    fn sample(&self, mean: Tensor<4>, rng: &mut Rng) -> Tensor<4> {
        let shape = mean.dims();
        let n: usize = shape.iter().product();
        let z = rng.normals(n);
        let v: Vec<f32> = z
            .iter()
            .map(|z| {
                let chi2 = 2.0 * gamma(rng, self.nu / 2.0);
                (*z as f64 / (chi2 / self.nu).sqrt() * 2.0 * self.scale) as f32
            })
            .collect();
        let device = mean.device();
        mean + Tensor::<4>::from_data(TensorData::new(v, shape), &device)
    }
}

/// Gamma(shape k, scale 1) by Marsaglia & Tsang (2000); k < 1 via the boost U^{1/k}.
fn gamma(rng: &mut Rng, k: f64) -> f64 {
    if k < 1.0 {
        return gamma(rng, k + 1.0) * rng.uniform().max(f64::MIN_POSITIVE).powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normals(1)[0] as f64;
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.uniform();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}
