//! Reconstruction experiments: a trained prior, an observation y = A(x) + noise of dataset images,
//! and a list of methods (the A⁺y and replacement baselines, DPS, DiffPIR, ΠGDM), each drawing a
//! few posterior samples per image. [`reconstruct`] runs one method; [`Report`] holds what
//! `metrics.json` and the panels show.

mod amortized;
pub mod config;
mod csb;
mod draw;
mod panel;
mod run;
mod tune;

pub use config::{MethodSpec, NoiseSpec, OperatorSpec, ReconFile};
pub use panel::panel_png;
pub use run::{ReconOptions, ReconReport, run};
pub use tune::{TuneOptions, TuneReport, TuneRow, tune};

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::NoiseSchedule;

use crate::catalog::Method;
use crate::metrics::{psnr, ssim_chw};
use crate::operator::pseudo_inverse;

/// The images to reconstruct and their observation, on the host ([−1, 1] scale).
pub struct Problem {
    /// `[C, H, W]` of one image.
    pub shape: [usize; 3],
    /// Dataset indices of the images.
    pub indices: Vec<usize>,
    /// Ground truth, `indices.len() × C·H·W`.
    pub truth: Vec<f32>,
    /// The observation's shape per image and its values, `indices.len() × ∏ y_shape`.
    pub y_shape: [usize; 3],
    pub y: Vec<f32>,
}

impl Problem {
    /// Draws y = A(x) + noise for the images `truth` (seeded).
    pub fn observe(
        file: &ReconFile,
        shape: [usize; 3],
        indices: Vec<usize>,
        truth: Vec<f32>,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let [c, h, w] = shape;
        let n = indices.len();
        let op = file.operator(h, w)?;
        let noise = file.noise_model()?;
        let x = Tensor::<4>::from_data(TensorData::new(truth.clone(), [n, c, h, w]), device);
        let y = noise.sample(op.apply(x), rng);
        let [_, yc, yh, yw] = y.dims();
        Ok(Self {
            shape,
            indices,
            truth,
            y_shape: [yc, yh, yw],
            y: tweedie_core::host_values(y),
        })
    }

    fn len(&self) -> usize {
        self.indices.len()
    }

    /// The observations of images `range`, each repeated `k` times, as a `[len·k, …]` tensor.
    fn y_rows(&self, range: std::ops::Range<usize>, k: usize, device: &Device) -> Tensor<4> {
        self.y_of(range, k, device)
    }

    /// The observations of `images` (dataset order of the problem), each repeated `k` times.
    fn y_of(
        &self,
        images: impl ExactSizeIterator<Item = usize>,
        k: usize,
        device: &Device,
    ) -> Tensor<4> {
        let m: usize = self.y_shape.iter().product();
        let n = images.len();
        let mut v = Vec::with_capacity(n * k * m);
        for i in images {
            for _ in 0..k {
                v.extend_from_slice(&self.y[i * m..(i + 1) * m]);
            }
        }
        let [c, h, w] = self.y_shape;
        Tensor::from_data(TensorData::new(v, [n * k, c, h, w]), device)
    }
}

/// The networks a method may use: on the inner backend, and on its autodiff twin for guidance.
pub struct Models<'a> {
    pub plain: &'a dyn Denoiser,
    pub grad: &'a dyn Denoiser,
    pub device: Device,
    pub grad_device: Device,
    /// No progress bars (methods that train first draw their own).
    pub quiet: bool,
}

impl MethodRun {
    /// What ran: the method and, for TDS and FK, its K.
    pub fn spec(&self) -> MethodSpec {
        MethodSpec {
            method: self.method,
            particles: self.particles.as_ref().map(|p| p.k),
        }
    }
}

/// One method's posterior samples and costs.
pub struct MethodRun {
    pub method: Method,
    /// Samples per image (1 for `pinv`).
    pub samples: usize,
    /// `images × samples × C·H·W`, clamped to [−1, 1].
    pub values: Vec<f32>,
    /// Network evaluations (forward passes) per posterior sample.
    pub nfe: usize,
    /// Vector-Jacobian products through the network per posterior sample.
    pub vjps: usize,
    pub seconds: f64,
    /// TDS and FK: what the particle systems did.
    pub particles: Option<ParticleRun>,
    /// Amortized methods: the wall seconds their networks trained for (paid once, for any y).
    pub train_seconds: Option<f64>,
}

/// The particle systems of a TDS or FK run: one system of K particles per posterior sample,
/// its statistics indexed like the samples (image-major).
#[derive(Debug, Clone)]
pub struct ParticleRun {
    pub k: usize,
    /// Mean effective sample size over the steps, per system.
    pub ess_mean: Vec<f64>,
    /// Resampling events, per system.
    pub resamplings: Vec<usize>,
    /// Particles whose weight became non-finite and was set to zero, per system.
    pub dropped: Vec<usize>,
    /// log Ẑ, per system: an unbiased estimate (in Ẑ) of the model's p(y).
    pub log_z: Vec<f64>,
}

/// Runs `method` on every image of `problem`. `on_step` is called after each reverse step of each
/// batch.
pub fn reconstruct(
    file: &ReconFile,
    spec: impl Into<MethodSpec>,
    problem: &Problem,
    models: &Models,
    schedule: &NoiseSchedule,
    rng: &mut Rng,
    on_step: impl FnMut(),
) -> Result<MethodRun> {
    let spec = spec.into();
    let method = spec.method;
    if method == Method::Pinv {
        return pinv(file, problem, &models.device);
    }
    if method == Method::Amortized {
        return amortized::reconstruct(file, problem, models, rng, on_step);
    }
    if method == Method::Csb {
        return csb::reconstruct(file, problem, models, rng, on_step);
    }
    draw::reconstruct(file, spec, problem, models, schedule, rng, on_step)
}

/// A⁺ŷ, clamped to the image range: one "sample" per image.
fn pinv(file: &ReconFile, problem: &Problem, device: &Device) -> Result<MethodRun> {
    let clock = Instant::now();
    let [_, h, w] = problem.shape;
    let op = file.operator(h, w)?;
    let y = file
        .noise_model()?
        .mean_estimate(problem.y_rows(0..problem.len(), 1, device));
    let Some(x) = pseudo_inverse(op.as_ref(), y) else {
        bail!("pinv needs a linear operator");
    };
    Ok(MethodRun {
        method: Method::Pinv,
        samples: 1,
        values: tweedie_core::host_values(x.clamp(-1.0, 1.0)),
        nfe: 0,
        vjps: 0,
        seconds: clock.elapsed().as_secs_f64(),
        particles: None,
        train_seconds: None,
    })
}

/// Quality of one method on one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageScore {
    pub index: usize,
    /// PSNR (dB, [0, 1] scale) and SSIM of each posterior sample against the ground truth.
    pub psnr: Vec<f64>,
    pub ssim: Vec<f64>,
    /// The same for the posterior mean (the average of the samples).
    pub psnr_posterior_mean: f64,
    pub ssim_posterior_mean: f64,
    /// LPIPS of each sample and of the posterior mean against the truth, when the weights were
    /// found (`metrics.json`'s `lpips` says which).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpips: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpips_posterior_mean: Option<f64>,
    /// Mean per-pixel posterior standard deviation ([0, 1] scale).
    pub std_mean: f64,
    /// TDS and FK: the mean over this image's systems of their mean ESS…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ess_mean: Option<f64>,
    /// …and of their resampling events…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resamplings: Option<f64>,
    /// …and log of the mean of their Ẑ: an estimate of log p(y) under the model…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_z: Option<f64>,
    /// …and the particles whose weight became non-finite (NaN or ±∞) and was set to zero,
    /// summed over the systems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<usize>,
}

/// One method's line of `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    /// Means over images and samples.
    pub psnr_mean: f64,
    pub ssim_mean: f64,
    /// Means over images of the posterior mean's scores.
    pub psnr_posterior_mean: f64,
    pub ssim_posterior_mean: f64,
    /// LPIPS, as PSNR and SSIM above, when the weights were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpips_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpips_posterior_mean: Option<f64>,
    pub nfe: usize,
    pub vjps: usize,
    pub steps: usize,
    pub samples_per_image: usize,
    pub seconds: f64,
    /// TDS and FK: particles per posterior sample, and the mean ESS over images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub particles: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ess_mean: Option<f64>,
    /// Amortized methods: training wall seconds (once, for any y), besides `seconds` (sampling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
    pub images: Vec<ImageScore>,
}

/// Per-pixel mean and standard deviation ([−1, 1] scale) of image `i`'s samples.
pub fn moments(run: &MethodRun, i: usize, per: usize) -> (Vec<f32>, Vec<f32>) {
    let k = run.samples;
    let s = &run.values[i * k * per..(i + 1) * k * per];
    let mut mean = vec![0f64; per];
    let mut sq = vec![0f64; per];
    for j in 0..k {
        for p in 0..per {
            let v = s[j * per + p] as f64;
            mean[p] += v / k as f64;
            sq[p] += v * v / k as f64;
        }
    }
    let std = mean
        .iter()
        .zip(&sq)
        .map(|(m, q)| (q - m * m).max(0.0).sqrt() as f32)
        .collect();
    (mean.into_iter().map(|v| v as f32).collect(), std)
}

/// Adds LPIPS (each sample and the posterior mean against the truth) to a report from [`score`].
pub fn add_lpips(
    report: &mut MethodReport,
    run: &MethodRun,
    problem: &Problem,
    net: &tweedie_core::lpips::Lpips,
    device: &Device,
) {
    let [c, h, w] = problem.shape;
    let per = c * h * w;
    let k = run.samples;
    let n = problem.indices.len();
    // Pairs: every sample, then every posterior mean, each against its image's truth.
    let mut a = Vec::with_capacity(n * (k + 1) * per);
    let mut b = Vec::with_capacity(n * (k + 1) * per);
    for i in 0..n {
        let truth = &problem.truth[i * per..(i + 1) * per];
        a.extend_from_slice(&run.values[i * k * per..(i + 1) * k * per]);
        for _ in 0..k {
            b.extend_from_slice(truth);
        }
    }
    for i in 0..n {
        a.extend(moments(run, i, per).0);
        b.extend_from_slice(&problem.truth[i * per..(i + 1) * per]);
    }
    let d = crate::lpips::distances(net, &a, &b, [n * (k + 1), c, h, w], device);
    for (i, s) in report.images.iter_mut().enumerate() {
        s.lpips = Some(d[i * k..(i + 1) * k].iter().map(|&v| v as f64).collect());
        s.lpips_posterior_mean = Some(d[n * k + i] as f64);
    }
    report.lpips_mean = Some(mean_of(
        &d[..n * k].iter().map(|&v| v as f64).collect::<Vec<_>>(),
    ));
    report.lpips_posterior_mean = Some(mean_of(
        &d[n * k..].iter().map(|&v| v as f64).collect::<Vec<_>>(),
    ));
}

/// Scores `run` against the problem's ground truth.
pub fn score(run: &MethodRun, problem: &Problem, steps: usize) -> MethodReport {
    let [c, h, w] = problem.shape;
    let per = c * h * w;
    let k = run.samples;
    let mut images = Vec::new();
    for (i, &index) in problem.indices.iter().enumerate() {
        let truth = &problem.truth[i * per..(i + 1) * per];
        let sample = |j: usize| &run.values[(i * k + j) * per..(i * k + j + 1) * per];
        let (mean, std) = moments(run, i, per);
        images.push(ImageScore {
            index,
            psnr: (0..k).map(|j| psnr(sample(j), truth)).collect(),
            ssim: (0..k)
                .map(|j| ssim_chw(sample(j), truth, c, h, w))
                .collect(),
            psnr_posterior_mean: psnr(&mean, truth),
            ssim_posterior_mean: ssim_chw(&mean, truth, c, h, w),
            lpips: None,
            lpips_posterior_mean: None,
            std_mean: std.iter().map(|v| *v as f64 * 0.5).sum::<f64>() / per as f64,
            ess_mean: run
                .particles
                .as_ref()
                .map(|p| mean_of(&p.ess_mean[i * k..(i + 1) * k])),
            resamplings: run.particles.as_ref().map(|p| {
                let r: Vec<f64> = p.resamplings[i * k..(i + 1) * k]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                mean_of(&r)
            }),
            log_z: run.particles.as_ref().map(|p| {
                let l = &p.log_z[i * k..(i + 1) * k];
                crate::smc::log_sum_exp(l) - (l.len() as f64).ln()
            }),
            dropped: run
                .particles
                .as_ref()
                .map(|p| p.dropped[i * k..(i + 1) * k].iter().sum()),
        });
    }
    let all = |f: fn(&ImageScore) -> &Vec<f64>| {
        let v: Vec<f64> = images.iter().flat_map(|s| f(s).iter().copied()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let over_images =
        |f: fn(&ImageScore) -> f64| images.iter().map(f).sum::<f64>() / images.len().max(1) as f64;
    MethodReport {
        psnr_mean: all(|s| &s.psnr),
        ssim_mean: all(|s| &s.ssim),
        psnr_posterior_mean: over_images(|s| s.psnr_posterior_mean),
        ssim_posterior_mean: over_images(|s| s.ssim_posterior_mean),
        lpips_mean: None,
        lpips_posterior_mean: None,
        nfe: run.nfe,
        vjps: run.vjps,
        steps,
        samples_per_image: k,
        seconds: run.seconds,
        particles: run.particles.as_ref().map(|p| p.k),
        ess_mean: run
            .particles
            .as_ref()
            .map(|_| mean_of(&images.iter().filter_map(|s| s.ess_mean).collect::<Vec<_>>())),
        train_seconds: run.train_seconds,
        images,
    }
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tweedie_core::denoiser::GaussianDenoiser;
    use tweedie_core::schedule::BetaSchedule;

    #[test]
    fn every_method_fits_the_observation_and_reports_its_costs() {
        // 8×8 images from an iid N(0, 0.5²) prior (its exact denoiser), SR ×2 with σ_y = 0.025.
        let text = r#"
kind = "reconstruction"
checkpoint = "unused"
[data]
dataset = "mnist"
[operator]
kind = "sr"
factor = 2
[noise]
kind = "gaussian"
sigma_y = 0.025
[run]
methods = ["pinv", "dps", "diffpir", "pigdm"]
samples = 3
batch_size = 6
[dps]
steps = 50
rule = "log-likelihood"
[diffpir]
steps = 30
[pigdm]
steps = 30
"#;
        let file = ReconFile::parse(text).unwrap();
        file.validate().unwrap();
        let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let prior = GaussianDenoiser {
            mean: 0.0,
            std: 0.5,
            alphas_cumprod: schedule.alphas_cumprod.clone(),
        };
        let device = Device::flex();
        let mut rng = Rng::new(1);
        let truth: Vec<f32> = rng.normals(3 * 64).iter().map(|v| v * 0.5).collect();
        let problem =
            Problem::observe(&file, [1, 8, 8], vec![0, 1, 2], truth, &mut rng, &device).unwrap();
        assert_eq!(problem.y_shape, [1, 4, 4]);
        let models = Models {
            plain: &prior,
            grad: &prior,
            device: device.clone(),
            grad_device: device.clone().autodiff(),
            quiet: true,
        };
        let op = file.operator(8, 8).unwrap();
        for m in [Method::Pinv, Method::Dps, Method::Diffpir, Method::Pigdm] {
            let mut steps = 0;
            let run = reconstruct(&file, m, &problem, &models, &schedule, &mut rng, || {
                steps += 1
            })
            .unwrap();
            let k = run.samples;
            assert_eq!(run.values.len(), 3 * k * 64, "{m:?}");
            assert_eq!(steps, 3usize.div_ceil(2) * file.steps(m), "{m:?}");
            assert_eq!(run.nfe, file.steps(m), "{m:?}");
            // Every sample explains y: RMS of A x − y within 3σ (σ = 0.05 on the model scale).
            let x = Tensor::<4>::from_data(
                TensorData::new(run.values.clone(), [3 * k, 1, 8, 8]),
                &device,
            );
            let ax = tweedie_core::host_values(op.apply(x));
            let m16 = 16;
            for (j, chunk) in ax.chunks(m16).enumerate() {
                let y = &problem.y[(j / k) * m16..(j / k + 1) * m16];
                let rms = (chunk
                    .iter()
                    .zip(y)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f32>()
                    / 16.0)
                    .sqrt();
                assert!(rms < 0.15, "{m:?}: sample {j} misses y by {rms}");
            }
            let report = score(&run, &problem, file.steps(m));
            assert!(report.psnr_mean.is_finite() && report.images.len() == 3);
        }
    }
}
