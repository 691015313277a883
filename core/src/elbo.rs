//! The variational bound in bits per dimension (DDPM eq. 5; iDDPM §2, `calc_bpd_loop`):
//! L = L_T + Σ_{t>0} L_{t−1} + L_0 with
//! - L_T = KL(q(x_T | x_0) ‖ N(0, I)),
//! - L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) at one sampled x_t per step,
//! - L_0 = −log p_θ(x_0 | x_1), the discretized Gaussian decoder for 8-bit data.

use burn::prelude::*;

use crate::denoiser::Denoiser;
use crate::diffusion::{Transition, predict_x0, q_sample};
use crate::loss::{discretized_gaussian_log_likelihood, mean_per_sample, normal_kl};
use crate::rng::Rng;
use crate::schedule::NoiseSchedule;

/// The fixed variance of p_θ(x_{t−1} | x_t) (DDPM §3.2); `small` or `large` in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelVariance {
    /// σ_t² = β̃_t (the posterior variance; "fixedsmall").
    Small,
    /// σ_t² = β_t ("fixedlarge"; β̃_1 at t = 0 as in iDDPM).
    Large,
}

impl ModelVariance {
    /// log σ_t².
    pub fn log_variance(self, s: &NoiseSchedule, t: usize) -> f64 {
        match (self, t) {
            (ModelVariance::Small, _) | (ModelVariance::Large, 0) => {
                s.posterior_log_variance_clipped[t]
            }
            (ModelVariance::Large, _) => s.betas[t].ln(),
        }
    }
}

impl std::str::FromStr for ModelVariance {
    type Err = crate::CoreError;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        crate::choice::parse(v)
            .map_err(|e| crate::CoreError::InvalidConfig(format!("variance: {e}")))
    }
}

/// Every term of the bound, in bits per dimension, per image.
#[derive(Debug, Clone, PartialEq)]
pub struct ElboTerms {
    /// L_T per image.
    pub prior: Vec<f64>,
    /// `kl[t]` = L_{t−1} per image for t = 1..T (index 0 is unused and empty).
    pub kl: Vec<Vec<f64>>,
    /// L_0 per image.
    pub decoder: Vec<f64>,
}

impl ElboTerms {
    /// The total bound per image, in bits/dim.
    pub fn total(&self) -> Vec<f64> {
        (0..self.prior.len())
            .map(|i| {
                self.prior[i] + self.decoder[i] + self.kl.iter().skip(1).map(|k| k[i]).sum::<f64>()
            })
            .collect()
    }
}

fn to_vec(x: Tensor<1>) -> Vec<f64> {
    crate::host_values(x).into_iter().map(f64::from).collect()
}

/// Evaluates the bound for a batch `x_0` (values in [−1, 1]). The noise of step t is drawn from
/// `rng` in the order t = T−1, …, 0, `numel(x_0)` normals each. `clip` clamps x̂_0 to [−1, 1]
/// before forming the model mean (iDDPM's `clip_denoised`). `on_step` is called after each t.
pub fn elbo_bpd(
    model: &dyn Denoiser,
    s: &NoiseSchedule,
    x0: Tensor<4>,
    variance: ModelVariance,
    clip: bool,
    rng: &mut Rng,
    mut on_step: impl FnMut(usize),
) -> ElboTerms {
    let device = x0.device();
    let [b, c, h, w] = x0.dims();
    let ln2 = std::f64::consts::LN_2;
    let big_t = s.len();

    // L_T: q(x_T | x_0) = N(√ᾱ_T x_0, (1 − ᾱ_T) I) against N(0, I).
    let ab_last = s.alphas_cumprod[big_t - 1];
    let prior_mean = x0.clone().mul_scalar(ab_last.sqrt());
    let prior = normal_kl(
        prior_mean.clone(),
        (1.0 - ab_last).ln(),
        prior_mean.zeros_like(),
        0.0,
    );
    let prior = to_vec(mean_per_sample(prior).div_scalar(ln2));

    let mut kl = vec![Vec::new(); big_t];
    let mut decoder = Vec::new();
    for t in (0..big_t).rev() {
        let ts = vec![t; b];
        let eps = rng.normal_tensor([b, c, h, w], &device);
        let x_t = q_sample(s, x0.clone(), &ts, eps);
        let eps_hat = model.eps(x_t.clone(), &ts);
        let mut x0_hat = predict_x0(x_t.clone(), eps_hat, &vec![s.alphas_cumprod[t]; b]);
        if clip {
            x0_hat = x0_hat.clamp(-1.0, 1.0);
        }
        let tr = Transition::new(s, t, t.checked_sub(1));
        let model_mean = tr.posterior_mean(x_t.clone(), x0_hat).detach();
        let model_logvar = variance.log_variance(s, t);
        if t == 0 {
            let ll =
                discretized_gaussian_log_likelihood(x0.clone(), model_mean, 0.5 * model_logvar);
            decoder = to_vec(mean_per_sample(ll).div_scalar(-ln2));
        } else {
            let true_mean = tr.posterior_mean(x_t, x0.clone());
            let term = normal_kl(
                true_mean,
                s.posterior_log_variance_clipped[t],
                model_mean,
                model_logvar,
            );
            kl[t] = to_vec(mean_per_sample(term).div_scalar(ln2));
        }
        on_step(t);
    }
    ElboTerms { prior, kl, decoder }
}
