//! TDS, FK steering and MCGdiff on images against closed forms. The prior is a Gaussian on 8×8 images
//! with a smooth, non-diagonal covariance (its exact denoiser, `tweedie_core::gaussian`); the
//! observation is inpainting or SR ×2 with Gaussian noise, so the posterior is Gaussian.
//!
//! What the particle methods target is the posterior under the *chain's* prior: the law of the
//! sample the 100-step DDPM chain draws with the exact denoiser, which is itself Gaussian and
//! computed exactly (`GaussianImage::chain_marginal`). Against it, the samplers are exact up to
//! Monte Carlo error as K grows, and the mean of Ẑ is an unbiased estimate of the chain's
//! evidence. The gap between the chain's evidence and the true p(y) is the discretisation error
//! of the chain, measured here in closed form.

use burn::prelude::*;
use tweedie_core::gaussian::{GaussianImage, GaussianPosterior, posterior};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule, Spacing};
use tweedie_sample::catalog::{Method, MethodSettings};
use tweedie_sample::recon::{Models, Problem, ReconFile, reconstruct};
use tweedie_sample::smc::Twist;

const STEPS: usize = 100;

struct Case {
    file: ReconFile,
    problem: Problem,
    prior: GaussianImage,
    schedule: NoiseSchedule,
    /// Under the chain's prior (what the samplers target) and under the true prior.
    chain: GaussianPosterior,
    exact: GaussianPosterior,
    /// A (row-major d_y × 64), σ and y on the model's scale.
    a: Vec<f64>,
    sigma: f64,
    y: Vec<f64>,
}

fn case(operator: &str) -> Case {
    let text = format!(
        r#"
kind = "reconstruction"
checkpoint = "unused"
[data]
dataset = "mnist"
[operator]
{operator}
[noise]
kind = "gaussian"
sigma_y = 0.1
[run]
methods = ["tds", "fk"]
samples = 400
batch_size = 1000000
[tds]
steps = {STEPS}
clip = false
[fk]
steps = {STEPS}
clip = false
[mcgdiff]
steps = {STEPS}
clip = false
"#
    );
    let file = ReconFile::parse(&text).unwrap();
    file.validate().unwrap();
    let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let prior =
        GaussianImage::smooth([1, 8, 8], 0.0, 0.3, 2.0, schedule.alphas_cumprod.clone()).unwrap();
    let device = Device::flex();
    let mut rng = Rng::new(11);
    let truth: Vec<f32> = prior
        .sample(1, &mut rng)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let problem = Problem::observe(&file, [1, 8, 8], vec![0], truth, &mut rng, &device).unwrap();
    // A as a dense matrix: its columns are the images of the basis vectors.
    let d = 64;
    let op = file.operator(8, 8).unwrap();
    let basis: Vec<f32> = (0..d * d)
        .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
        .collect();
    let cols = tweedie_core::host_values(op.apply(Tensor::<4>::from_data(
        TensorData::new(basis, [d, 1, 8, 8]),
        &device,
    )));
    let m = cols.len() / d;
    let a: Vec<f64> = (0..m * d)
        .map(|r| cols[(r % d) * m + r / d] as f64)
        .collect();
    let sigma = file.gaussian_sigma().unwrap();
    let y: Vec<f64> = problem.y.iter().map(|v| *v as f64).collect();
    let ts = schedule.timesteps(STEPS, Spacing::Trailing).unwrap();
    let (cm, cc) = prior.chain_marginal(&schedule, &ts);
    let chain = posterior(&cm, &cc, &a, sigma, &y).unwrap();
    let exact = posterior(&prior.mean, &prior.cov(), &a, sigma, &y).unwrap();
    Case {
        file,
        problem,
        prior,
        schedule,
        chain,
        exact,
        a,
        sigma,
        y,
    }
}

/// Errors of a method's draws against the chain's posterior, each normalised by its Monte Carlo
/// standard error (so ≈ 1 for exact independent draws): the mean over pixels of
/// (m̂ − m)² / (v/N) and of (v̂ − v)² / (v² · 2/(N − 1)); and log of the mean Ẑ with its
/// standard error.
struct Errors {
    mean_z: f64,
    var_z: f64,
    log_z: f64,
    log_z_se: f64,
    ess: f64,
}

fn errors(c: &Case, method: Method, k: usize, twist: Option<Twist>) -> Errors {
    let mut file = c.file.clone();
    file.tds.particles = vec![k];
    file.fk.particles = vec![k];
    file.mcgdiff.particles = vec![k];
    file.tds.twist = twist;
    file.fk.twist = twist;
    let device = Device::flex();
    let models = Models {
        plain: &c.prior,
        grad: &c.prior,
        device: device.clone(),
        grad_device: device.autodiff(),
        quiet: true,
    };
    let mut rng = Rng::new(100 + k as u64);
    let run = reconstruct(
        &file,
        method,
        &c.problem,
        &models,
        &c.schedule,
        &mut rng,
        || {},
    )
    .unwrap();
    let d = 64;
    let n = run.values.len() / d;
    let (mut mean_z, mut var_z) = (0.0, 0.0);
    for p in 0..d {
        let xs: Vec<f64> = (0..n).map(|i| run.values[i * d + p] as f64).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let (cm, cv) = (c.chain.mean[p], c.chain.cov[p * d + p]);
        mean_z += (m - cm).powi(2) / (cv / n as f64) / d as f64;
        var_z += (v - cv).powi(2) / (cv * cv * 2.0 / (n as f64 - 1.0)) / d as f64;
    }
    let parts = run.particles.unwrap();
    let zs: Vec<f64> = parts
        .log_z
        .iter()
        .map(|l| (l - c.chain.log_evidence).exp())
        .collect();
    let zm = zs.iter().sum::<f64>() / n as f64;
    let zsd = (zs.iter().map(|z| (z - zm).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
    let e = Errors {
        mean_z,
        var_z,
        log_z: c.chain.log_evidence + zm.ln(),
        log_z_se: zsd / (n as f64).sqrt() / zm,
        ess: parts.ess_mean.iter().sum::<f64>() / n as f64,
    };
    eprintln!(
        "{:?} K={k} ({:?} twist): mean error {:.2}, variance error {:.2} (× Monte Carlo), log Ẑ {:.3} ± {:.3} \
         (chain {:.3}, exact {:.3}), ESS {:.2}",
        method,
        MethodSettings::twist(twist, &file.offers(8, 8).unwrap()),
        e.mean_z,
        e.var_z,
        e.log_z,
        e.log_z_se,
        c.chain.log_evidence,
        c.exact.log_evidence,
        e.ess
    );
    e
}

#[test]
fn tds_and_fk_reach_the_gaussian_posterior_on_images_as_k_grows() {
    for op in ["kind = \"inpaint-half\"", "kind = \"sr\"\nfactor = 2"] {
        let c = case(op);
        // The chain's evidence differs from the true p(y) by its discretisation; in closed form,
        // and smaller with more steps.
        let gap = |steps| {
            let ts = c.schedule.timesteps(steps, Spacing::Trailing).unwrap();
            let (m, v) = c.prior.chain_marginal(&c.schedule, &ts);
            let p = posterior(&m, &v, &c.a, c.sigma, &c.y).unwrap();
            p.log_evidence - c.exact.log_evidence
        };
        let (gap100, gap1000) = (gap(STEPS), gap(1000));
        eprintln!(
            "{op}: log p(y) {:.4}; the 100-step chain's evidence is off by {gap100:.4} (1000 steps: {gap1000:.4})",
            c.exact.log_evidence
        );
        assert!(gap1000.abs() < gap100.abs());
        for m in [Method::Tds, Method::Fk] {
            let small = errors(&c, m, 1, None);
            errors(&c, m, 4, None);
            let big = errors(&c, m, 64, None);
            // Exact up to Monte Carlo error at K = 64 (each error is ≈ 1 for exact draws).
            assert!(
                big.mean_z < 3.0 && big.var_z < 3.0,
                "{m:?} K = 64: {:.2}, {:.2}",
                big.mean_z,
                big.var_z
            );
            assert!(
                small.mean_z > 2.0 * big.mean_z,
                "{m:?}: the error falls with K"
            );
            // log Ẑ estimates the chain's evidence, not the (discretisation-shifted) true one.
            let off = (big.log_z - c.chain.log_evidence).abs();
            assert!(
                off < 4.0 * big.log_z_se,
                "{m:?}: log Ẑ {} vs {} (se {})",
                big.log_z,
                c.chain.log_evidence,
                big.log_z_se
            );
            if gap100.abs() > 8.0 * big.log_z_se {
                assert!((big.log_z - c.exact.log_evidence).abs() > off);
            }
        }
    }
}

/// The papers' plain look-ahead twist p(y | x̂_0) has the same target, but its weights are far
/// more uneven on these 64-pixel problems: TDS needs many more particles for the same error.
#[test]
fn the_tweedie_twist_targets_the_same_posterior_with_worse_weights() {
    let c = case("kind = \"sr\"\nfactor = 2");
    let plain = |k| errors(&c, Method::Tds, k, Some(Twist::Tweedie));
    let (k1, k64) = (plain(1), plain(64));
    let widened = errors(&c, Method::Tds, 64, Some(Twist::Pigdm));
    assert!(k64.mean_z < k1.mean_z, "the error falls with K");
    assert!(widened.mean_z <= k64.mean_z);
}

/// MCGdiff's twists ignore the prior (N(√ᾱ_t ȳ; x̄_t, 1 − ᾱ_t + ᾱ_t σ²) per observed singular
/// coordinate), so on this strongly correlated 64-pixel prior it converges far more slowly in K
/// than TDS: at K = 64 its posterior-mean error is still ≈ 8 Monte Carlo errors
/// (`scripts/mcgdiff-numpy.py`, the same filter in numpy, gives 8.08 on this prior: the method's
/// property, not this code's). Here: the error falls with K and the variances are already
/// right; on the Gaussian-mixture benchmarks (the paper's own) K = 64 reaches TDS's level.
#[test]
fn mcgdiff_moves_towards_the_gaussian_posterior_as_k_grows() {
    let c = case("kind = \"inpaint-half\"");
    let small = errors(&c, Method::Mcgdiff, 1, None);
    let big = errors(&c, Method::Mcgdiff, 64, None);
    assert!(
        big.mean_z < 0.5 * small.mean_z,
        "{} vs {}",
        big.mean_z,
        small.mean_z
    );
    assert!(big.var_z < 3.0, "variance error {}", big.var_z);
    assert!(big.ess > 32.0, "ESS {}", big.ess);
}
