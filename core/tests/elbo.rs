//! The ELBO against closed forms. Data x_0 ~ N(μ, s² I) has an exact ε-predictor
//! ([`GaussianDenoiser`]); with it every term of the bound can be computed by hand in f64 here,
//! and the expected KL terms have a closed form of their own.

use burn::prelude::*;
use tweedie_core::denoiser::GaussianDenoiser;
use tweedie_core::elbo::{ModelVariance, elbo_bpd};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};

const MU: f64 = 0.1;
const STD: f64 = 0.3;

fn gauss_kl(m1: f64, lv1: f64, m2: f64, lv2: f64) -> f64 {
    0.5 * (-1.0 + lv2 - lv1 + (lv1 - lv2).exp() + (m1 - m2).powi(2) * (-lv2).exp())
}

fn cdf(z: f64) -> f64 {
    0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

/// −log p(x | m, σ) for the discretized decoder, by hand.
fn decoder_nll(x: f64, m: f64, log_scale: f64) -> f64 {
    let inv = (-log_scale).exp();
    let hi = cdf(inv * (x - m + 1.0 / 255.0));
    let lo = cdf(inv * (x - m - 1.0 / 255.0));
    let p = if x < -0.999 {
        hi
    } else if x > 0.999 {
        1.0 - lo
    } else {
        hi - lo
    };
    -p.max(1e-12).ln()
}

fn setup(big_t: usize) -> (NoiseSchedule, GaussianDenoiser) {
    let s = NoiseSchedule::new(BetaSchedule::iddpm_cosine(), big_t).unwrap();
    let d = GaussianDenoiser {
        mean: MU,
        std: STD,
        alphas_cumprod: s.alphas_cumprod.clone(),
    };
    (s, d)
}

/// 8-bit data drawn from N(μ, s²), as the decoder expects.
fn data(b: usize, n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    r.normals(b * n)
        .into_iter()
        .map(|z| {
            let x = (MU + STD * z as f64).clamp(-1.0, 1.0);
            (((x + 1.0) * 127.5).round() / 127.5 - 1.0) as f32
        })
        .collect()
}

#[test]
fn every_term_matches_a_hand_computation() {
    let (big_t, b, n) = (12usize, 3usize, 16usize);
    let (s, den) = setup(big_t);
    let dev = Device::flex();
    let x0v = data(b, n, 3);
    let x0 = Tensor::<4>::from_data(TensorData::new(x0v.clone(), [b, 1, 4, 4]), &dev);
    for variance in [ModelVariance::Small, ModelVariance::Large] {
        let terms = elbo_bpd(
            &den,
            &s,
            x0.clone(),
            variance,
            false,
            &mut Rng::new(11),
            |_| {},
        );
        // Replay the same noise, in the documented order t = T−1, …, 0.
        let mut rng = Rng::new(11);
        let ln2 = std::f64::consts::LN_2;
        let ab_t = s.alphas_cumprod[big_t - 1];
        for i in 0..b {
            let prior: f64 = (0..n)
                .map(|j| {
                    gauss_kl(
                        ab_t.sqrt() * x0v[i * n + j] as f64,
                        (1.0 - ab_t).ln(),
                        0.0,
                        0.0,
                    )
                })
                .sum::<f64>()
                / n as f64
                / ln2;
            assert!(
                (terms.prior[i] - prior).abs() < 1e-5 * (1.0 + prior),
                "prior {i}"
            );
        }
        for t in (0..big_t).rev() {
            let eps = rng.normals(b * n);
            let (ab, abp, beta) = (s.alphas_cumprod[t], s.alphas_cumprod_prev[t], s.betas[t]);
            let c1 = beta * abp.sqrt() / (1.0 - ab);
            let c2 = (1.0 - abp) * (1.0 - beta).sqrt() / (1.0 - ab);
            let lv_model = match (variance, t) {
                (ModelVariance::Large, t) if t > 0 => beta.ln(),
                _ => s.posterior_log_variance_clipped[t],
            };
            for i in 0..b {
                let mut acc = 0.0;
                for j in 0..n {
                    let x = x0v[i * n + j] as f64;
                    let xt = ab.sqrt() * x + (1.0 - ab).sqrt() * eps[i * n + j] as f64;
                    let eps_star =
                        (1.0 - ab).sqrt() * (xt - ab.sqrt() * MU) / (ab * STD * STD + 1.0 - ab);
                    let x0_hat = (xt - (1.0 - ab).sqrt() * eps_star) / ab.sqrt();
                    let m_model = c1 * x0_hat + c2 * xt;
                    acc += if t == 0 {
                        decoder_nll(x, m_model, 0.5 * lv_model)
                    } else {
                        gauss_kl(
                            c1 * x + c2 * xt,
                            s.posterior_log_variance_clipped[t],
                            m_model,
                            lv_model,
                        )
                    };
                }
                let want = acc / n as f64 / ln2;
                let got = if t == 0 {
                    terms.decoder[i]
                } else {
                    terms.kl[t][i]
                };
                assert!(
                    (got - want).abs() < 2e-4 * (1.0 + want.abs()),
                    "{variance:?} t={t} image {i}: got {got} want {want}"
                );
            }
        }
        let total = terms.total();
        assert!(total.iter().all(|v| v.is_finite() && *v > 0.0));
    }
}

#[test]
fn expected_kl_terms_match_their_closed_form() {
    // With the exact denoiser, μ̃(x_t, x_0) − μ_θ(x_t) = c1 (x_0 − E[x_0 | x_t]), so
    // E[L_{t−1}] = ½(−1 + lv₂ − lv₁ + e^{lv₁−lv₂}) + ½ e^{−lv₂} c1² Var(x_0 | x_t),
    // Var(x_0 | x_t) = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ).
    let (big_t, b, n) = (10usize, 16usize, 256usize);
    let (s, den) = setup(big_t);
    let dev = Device::flex();
    let mut r = Rng::new(5);
    let x0v: Vec<f32> = r
        .normals(b * n)
        .into_iter()
        .map(|z| (MU + STD * z as f64) as f32)
        .collect();
    let x0 = Tensor::<4>::from_data(TensorData::new(x0v, [b, 1, 16, 16]), &dev);
    let terms = elbo_bpd(
        &den,
        &s,
        x0,
        ModelVariance::Small,
        false,
        &mut Rng::new(9),
        |_| {},
    );
    for t in 1..big_t {
        let (ab, abp, beta) = (s.alphas_cumprod[t], s.alphas_cumprod_prev[t], s.betas[t]);
        let c1 = beta * abp.sqrt() / (1.0 - ab);
        let lv = s.posterior_log_variance_clipped[t];
        let var_post = STD * STD * (1.0 - ab) / (ab * STD * STD + 1.0 - ab);
        let want = 0.5 * (-lv).exp() * c1 * c1 * var_post / std::f64::consts::LN_2;
        let got = terms.kl[t].iter().sum::<f64>() / b as f64;
        // 4096 draws of a scaled χ²₁: relative standard error √(2/4096) ≈ 2.2 %; allow 4.5 σ.
        assert!(
            (got - want).abs() < 0.1 * want,
            "t={t}: got {got} want {want}"
        );
    }
}
