//! The training losses: L_simple and its min-SNR-γ weighting, against closed forms.

use burn::prelude::*;
use tweedie_core::denoiser::{Denoiser, GaussianDenoiser};
use tweedie_core::diffusion::q_sample;
use tweedie_core::loss::{l_simple, l_weighted, mean_per_sample, min_snr_weights};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};

const MU: f64 = 0.1;
const STD: f64 = 0.3;

fn setup() -> (NoiseSchedule, GaussianDenoiser, Device) {
    let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let d = GaussianDenoiser {
        mean: MU,
        std: STD,
        alphas_cumprod: s.alphas_cumprod.clone(),
    };
    (s, d, Device::flex())
}

#[test]
fn min_snr_weights_follow_the_formula() {
    let (s, _, _) = setup();
    let gamma = 5.0;
    let t: Vec<usize> = (0..1000).collect();
    let w = min_snr_weights(&s, &t, gamma);
    let snr = |i: usize| s.alphas_cumprod[i] / (1.0 - s.alphas_cumprod[i]);
    // Nearly clean steps: w = γ / SNR (t = 0: ᾱ = 1 − 1e-4, SNR = 9999).
    assert!((w[0] - gamma / 9999.0).abs() < 1e-9, "w_0 = {}", w[0]);
    // Weight 1 exactly where SNR ≤ γ, below 1 where it is above; never increasing in SNR.
    let cross = t.iter().position(|&i| snr(i) <= gamma).unwrap();
    assert!(cross > 0 && cross < 1000);
    assert!(w[cross..].iter().all(|&v| v == 1.0));
    assert!(w[..cross].iter().all(|&v| v < 1.0));
    assert!(w.windows(2).all(|p| p[0] <= p[1]));
}

#[test]
fn unit_weights_give_l_simple() {
    let (s, d, device) = setup();
    let mut rng = Rng::new(3);
    let x0 = rng.normal_tensor([6, 1, 4, 4], &device);
    let eps = rng.normal_tensor([6, 1, 4, 4], &device);
    let t = [0, 10, 200, 500, 800, 999];
    let a = l_simple(&d, &s, x0.clone(), &t, eps.clone()).into_scalar::<f32>();
    let b = l_weighted(&d, &s, x0, &t, eps, &[1.0; 6]).into_scalar::<f32>();
    assert_eq!(a, b);
}

#[test]
fn weighted_loss_is_the_weighted_mean_of_per_sample_errors() {
    let (s, d, device) = setup();
    let mut rng = Rng::new(4);
    let x0 = rng.normal_tensor([4, 1, 5, 5], &device);
    let eps = rng.normal_tensor([4, 1, 5, 5], &device);
    let t = [3, 50, 400, 900];
    let w = min_snr_weights(&s, &t, 5.0);
    let got = l_weighted(&d, &s, x0.clone(), &t, eps.clone(), &w).into_scalar::<f32>() as f64;
    let x_t = q_sample(&s, x0, &t, eps.clone());
    let per = tweedie_core::host_values(mean_per_sample((d.eps(x_t, &t) - eps).square()));
    let want = per.iter().zip(&w).map(|(e, w)| *e as f64 * w).sum::<f64>() / 4.0;
    assert!(
        (got - want).abs() < 1e-6 * want.max(1e-3),
        "{got} vs {want}"
    );
}

/// With data N(μ, s²) and its exact ε-predictor, E‖ε − ε*(x_t)‖² per pixel is Var(ε | x_t) =
/// ᾱ s² / (ᾱ s² + 1 − ᾱ); the weighted loss at one t is that times w_t.
#[test]
fn weighted_loss_matches_the_gaussian_closed_form() {
    let (s, d, device) = setup();
    let mut rng = Rng::new(5);
    let n = 4096;
    for &t in &[20usize, 150, 600] {
        let x0 = rng
            .normal_tensor([n, 1, 2, 2], &device)
            .mul_scalar(STD)
            .add_scalar(MU);
        let eps = rng.normal_tensor([n, 1, 2, 2], &device);
        let ts = vec![t; n];
        let w = min_snr_weights(&s, &ts, 5.0);
        let got = l_weighted(&d, &s, x0, &ts, eps, &w).into_scalar::<f32>() as f64;
        let ab = s.alphas_cumprod[t];
        let var = ab * STD * STD / (ab * STD * STD + 1.0 - ab);
        let want = w[0] * var;
        // Monte Carlo over 4n pixels: the squared error of a N(0, var) variable has sd √2·var.
        let tol = 4.0 * (2.0f64).sqrt() * want / ((4 * n) as f64).sqrt();
        assert!((got - want).abs() < tol, "t = {t}: {got} vs {want} ± {tol}");
    }
}
