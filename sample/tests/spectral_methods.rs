//! DDRM, DDNM, RED-diff, DAPS and PnP-DM on the Gaussian 8×8 image prior of `particles.rs` (its exact
//! denoiser, so only the methods' own approximations show): without noise the spectral methods'
//! samples satisfy A x = y exactly (inpainting and super-resolution ×2); with noise none is an
//! exact posterior sampler, and each one's distance to the chain's posterior is printed next to
//! the prior's (and must be well below it).

use burn::prelude::*;
use tweedie_core::gaussian::{GaussianImage, posterior};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule, Spacing};
use tweedie_sample::catalog::Method;
use tweedie_sample::recon::{Models, Problem, ReconFile, reconstruct};

struct Run {
    values: Vec<f32>,
    y: Vec<f32>,
    file: ReconFile,
}

fn run(
    operator: &str,
    sigma_y: f64,
    method: Method,
    steps: usize,
) -> (Run, GaussianImage, NoiseSchedule) {
    let text = format!(
        "kind = \"reconstruction\"\ncheckpoint = \"unused\"\n[data]\ndataset = \"mnist\"\n\
         [operator]\n{operator}\n[noise]\nkind = \"gaussian\"\nsigma_y = {sigma_y}\n[run]\n\
         methods = [\"{}\"]\nsamples = 200\nbatch_size = 1000000\n\
         [ddrm]\nsteps = {steps}\nclip = false\n[ddnm]\nsteps = {steps}\nclip = false\n\
         [reddiff]\nsteps = {steps}\n[daps]\nsteps = {steps}\nlangevin_steps = 20\nlr = 0.01\n\
         [pnpdm]\nrho_min = 0.05\niterations = 60\n",
        method.name()
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
    let models = Models {
        plain: &prior,
        grad: &prior,
        device: device.clone(),
        grad_device: device.autodiff(),
        quiet: true,
    };
    let r = reconstruct(
        &file,
        method,
        &problem,
        &models,
        &schedule,
        &mut Rng::new(5),
        || {},
    )
    .unwrap();
    let y = problem.y.clone();
    (
        Run {
            values: r.values,
            y,
            file,
        },
        prior,
        schedule,
    )
}

#[test]
fn noiseless_spectral_methods_keep_the_observation_exactly() {
    for op in ["kind = \"inpaint-half\"", "kind = \"sr\"\nfactor = 2"] {
        for method in [Method::Ddrm, Method::Ddnm] {
            let (r, _, _) = run(op, 0.0, method, 20);
            let a = r.file.operator(8, 8).unwrap();
            let n = r.values.len() / 64;
            let x = Tensor::<4>::from_data(
                TensorData::new(r.values.clone(), [n, 1, 8, 8]),
                &Device::flex(),
            );
            let ax = tweedie_core::host_values(a.apply(x));
            let m = r.y.len();
            let worst = ax
                .iter()
                .enumerate()
                .map(|(i, v)| (v - r.y[i % m]).abs())
                .fold(0.0f32, f32::max);
            eprintln!(
                "{op} {}: largest |A x − y| {worst:e} over {n} samples",
                method.name()
            );
            assert!(
                worst < 1e-5,
                "{op} {}: |A x − y| up to {worst}",
                method.name()
            );
        }
    }
}

#[test]
fn noisy_methods_move_towards_the_posterior() {
    for method in [
        Method::Ddrm,
        Method::Ddnm,
        Method::Reddiff,
        Method::Daps,
        Method::Pnpdm,
    ] {
        let steps = match method {
            Method::Daps => 50,
            Method::Reddiff => 1000,
            _ => 100,
        };
        let (r, prior, schedule) = run("kind = \"inpaint-half\"", 0.1, method, steps);
        let a_op = r.file.operator(8, 8).unwrap();
        let d = 64;
        let basis: Vec<f32> = (0..d * d)
            .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
            .collect();
        let cols = tweedie_core::host_values(a_op.apply(Tensor::<4>::from_data(
            TensorData::new(basis, [d, 1, 8, 8]),
            &Device::flex(),
        )));
        let m = cols.len() / d;
        let a: Vec<f64> = (0..m * d)
            .map(|k| cols[(k % d) * m + k / d] as f64)
            .collect();
        let y: Vec<f64> = r.y.iter().map(|v| *v as f64).collect();
        let sigma = r.file.gaussian_sigma().unwrap();
        let ts = schedule.timesteps(steps, Spacing::Trailing).unwrap();
        let (cm, cc) = prior.chain_marginal(&schedule, &ts);
        let post = posterior(&cm, &cc, &a, sigma, &y).unwrap();
        let n = r.values.len() / d;
        let mean: Vec<f64> = (0..d)
            .map(|p| (0..n).map(|i| r.values[i * d + p] as f64).sum::<f64>() / n as f64)
            .collect();
        let dist = |m: &[f64]| {
            (0..d)
                .map(|p| (m[p] - post.mean[p]).powi(2) / post.cov[p * d + p])
                .sum::<f64>()
                / d as f64
        };
        let (ours, prior_d) = (dist(&mean), dist(&cm));
        eprintln!(
            "{}: mean squared error of the posterior mean in posterior standard deviations {ours:.3} \
             (the prior mean: {prior_d:.3}; Monte Carlo floor ≈ {:.3})",
            method.name(),
            1.0 / n as f64
        );
        assert!(
            ours.is_finite() && ours < 0.5 * prior_d,
            "{ours} vs {prior_d}"
        );
    }
}
