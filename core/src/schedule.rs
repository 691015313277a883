//! Noise schedules β_t and every quantity derived from them, in f64.
//!
//! Ho et al. 2020 (DDPM), eqs. (4), (6), (7); Nichol & Dhariwal 2021 (iDDPM), eq. (17) for the
//! cosine schedule. Index t runs over 0..T, as in the official code (the paper's t = 1..T).

use crate::error::CoreError;

/// How β_t is laid out over the T training steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// DDPM: β_t linear from `start` to `end` (paper: 1e-4 to 0.02).
    Linear { start: f64, end: f64 },
    /// iDDPM eq. (17): ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2), β clipped at `max_beta`.
    Cosine { s: f64, max_beta: f64 },
}

impl BetaSchedule {
    /// The DDPM paper's linear schedule, β from 1e-4 to 0.02.
    pub fn ddpm_linear() -> Self {
        BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        }
    }
    /// The iDDPM cosine schedule, s = 0.008, β clipped at 0.999.
    pub fn iddpm_cosine() -> Self {
        BetaSchedule::Cosine {
            s: 0.008,
            max_beta: 0.999,
        }
    }
}

/// A noise schedule of `len()` steps with its derived coefficients, all in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    pub kind: BetaSchedule,
    /// β_t.
    pub betas: Vec<f64>,
    /// ᾱ_t = Π_{s ≤ t} (1 − β_s).
    pub alphas_cumprod: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub alphas_cumprod_prev: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)   (DDPM eq. 7); 0 at t = 0.
    pub posterior_variance: Vec<f64>,
    /// log β̃_t with t = 0 replaced by β̃_1 (iDDPM's clipped log variance).
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Coefficient of x̂_0 in μ̃_t: β_t √ᾱ_{t−1} / (1 − ᾱ_t)   (DDPM eq. 7).
    pub posterior_mean_coef1: Vec<f64>,
    /// Coefficient of x_t in μ̃_t: (1 − ᾱ_{t−1}) √α_t / (1 − ᾱ_t)   (DDPM eq. 7).
    pub posterior_mean_coef2: Vec<f64>,
}

/// The most diffusion steps a schedule may have (the tables are built eagerly).
pub const MAX_TIMESTEPS: usize = 1_000_000;

impl NoiseSchedule {
    /// Builds a schedule of `steps` steps. Errors on T < 2 or β outside (0, 1).
    pub fn new(kind: BetaSchedule, steps: usize) -> Result<Self, CoreError> {
        if !(2..=MAX_TIMESTEPS).contains(&steps) {
            return Err(CoreError::InvalidConfig(format!(
                "timesteps must be in 2..={MAX_TIMESTEPS}, got {steps}"
            )));
        }
        let betas: Vec<f64> = match kind {
            BetaSchedule::Linear { start, end } => (0..steps)
                .map(|i| start + (end - start) * i as f64 / (steps - 1) as f64)
                .collect(),
            BetaSchedule::Cosine { s, max_beta } => {
                // Float division: t / T must not be integer division (every β but the last would be 0).
                let f = |t: f64| {
                    (((t / steps as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..steps)
                    .map(|i| (1.0 - f((i + 1) as f64) / f(i as f64)).min(max_beta))
                    .collect()
            }
        };
        Self::from_betas(kind, betas)
    }

    fn from_betas(kind: BetaSchedule, betas: Vec<f64>) -> Result<Self, CoreError> {
        if let Some((t, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
        {
            return Err(CoreError::InvalidConfig(format!(
                "beta_{t} = {b} is outside (0, 1)"
            )));
        }
        let n = betas.len();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod[..n - 1].iter().copied())
            .collect();
        let mut posterior_variance = Vec::with_capacity(n);
        let mut coef1 = Vec::with_capacity(n);
        let mut coef2 = Vec::with_capacity(n);
        for t in 0..n {
            let (b, ab, abp) = (betas[t], alphas_cumprod[t], alphas_cumprod_prev[t]);
            posterior_variance.push(b * (1.0 - abp) / (1.0 - ab));
            coef1.push(b * abp.sqrt() / (1.0 - ab));
            coef2.push((1.0 - abp) * (1.0 - b).sqrt() / (1.0 - ab));
        }
        let posterior_log_variance_clipped = (0..n)
            .map(|t| posterior_variance[if t == 0 { 1 } else { t }].ln())
            .collect();
        Ok(Self {
            kind,
            betas,
            alphas_cumprod,
            alphas_cumprod_prev,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1: coef1,
            posterior_mean_coef2: coef2,
        })
    }

    /// T, the number of training steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least two steps.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}

/// How `n` inference steps are picked among the T training steps (Lin et al. 2024, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    /// t = (n−1)·r, …, r, 0 with r = T / n (DDIM, diffusers' default).
    Leading,
    /// t = T−1, T−1−r, … (round(T − i·T/n) − 1): always starts at the last training step.
    Trailing,
    /// n evenly spaced values from T−1 down to 0, rounded.
    Linspace,
    /// Uniform in log-SNR λ = log(√ᾱ/√(1 − ᾱ)) from t = T−1 to t = 0, each mapped to the nearest
    /// training step (DPM-Solver's "logSNR" spacing, Lu et al. 2022 §3.3): dense near the data,
    /// where few-step ODE solvers need it. Nearest-step collisions are merged, so slightly fewer
    /// than n steps may result.
    LogSnr,
}

impl std::str::FromStr for Spacing {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::choice::parse(s).map_err(|e| CoreError::InvalidConfig(format!("spacing: {e}")))
    }
}

impl NoiseSchedule {
    /// The `n` training timesteps a sampler visits, in descending order (every spacing, including
    /// [`Spacing::LogSnr`], which needs ᾱ).
    pub fn timesteps(&self, n: usize, spacing: Spacing) -> Result<Vec<usize>, CoreError> {
        if spacing != Spacing::LogSnr {
            return inference_timesteps(self.len(), n, spacing);
        }
        if n == 0 || n > self.len() {
            return Err(CoreError::InvalidConfig(format!(
                "number of sampling steps must be in 1..={}, got {n}",
                self.len()
            )));
        }
        let lam: Vec<f64> = self
            .alphas_cumprod
            .iter()
            .map(|a| 0.5 * (a / (1.0 - a)).ln())
            .collect();
        let (lo, hi) = (lam[self.len() - 1], lam[0]);
        let mut ts: Vec<usize> = (0..n)
            .map(|i| {
                let target = if n == 1 {
                    lo
                } else {
                    lo + (hi - lo) * i as f64 / (n - 1) as f64
                };
                // λ decreases in t: the nearest training step by |λ_t − target|.
                (0..self.len())
                    .min_by(|&a, &b| (lam[a] - target).abs().total_cmp(&(lam[b] - target).abs()))
                    .expect("non-empty schedule")
            })
            .collect();
        ts.dedup();
        Ok(ts)
    }
}

/// The `n` training timesteps visited by a sampler, in descending order. [`Spacing::LogSnr`]
/// depends on the schedule: use [`NoiseSchedule::timesteps`].
pub fn inference_timesteps(
    train_steps: usize,
    n: usize,
    spacing: Spacing,
) -> Result<Vec<usize>, CoreError> {
    if n == 0 || n > train_steps {
        return Err(CoreError::InvalidConfig(format!(
            "number of sampling steps must be in 1..={train_steps}, got {n}"
        )));
    }
    let t_max = train_steps as f64;
    let mut ts: Vec<usize> = match spacing {
        Spacing::Leading => {
            let r = train_steps / n;
            (0..n).map(|i| i * r).rev().collect()
        }
        Spacing::Trailing => {
            let r = t_max / n as f64;
            (0..n)
                .map(|i| ((t_max - i as f64 * r).round() as usize).saturating_sub(1))
                .collect()
        }
        Spacing::LogSnr => {
            return Err(CoreError::InvalidConfig(
                "logsnr spacing needs the schedule (NoiseSchedule::timesteps)".into(),
            ));
        }
        Spacing::Linspace => {
            if n == 1 {
                vec![train_steps - 1]
            } else {
                (0..n)
                    .map(|i| {
                        ((train_steps - 1) as f64 * i as f64 / (n - 1) as f64).round() as usize
                    })
                    .rev()
                    .collect()
            }
        }
    };
    ts.dedup();
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_endpoints_and_monotone_alpha_bar() {
        let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        assert_eq!(s.len(), 1000);
        assert!((s.betas[0] - 1e-4).abs() < 1e-15 && (s.betas[999] - 0.02).abs() < 1e-15);
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
        assert_eq!(s.posterior_variance[0], 0.0);
    }

    #[test]
    fn cosine_has_no_integer_division_bug() {
        let s = NoiseSchedule::new(BetaSchedule::iddpm_cosine(), 50).unwrap();
        assert!(
            s.betas.iter().all(|b| *b > 1e-5),
            "every beta must be positive"
        );
        assert!(
            (s.betas[49] - 0.999).abs() < 1e-12,
            "last beta is clipped at 0.999"
        );
    }

    #[test]
    fn rejects_bad_schedules() {
        assert!(NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1).is_err());
        assert!(
            NoiseSchedule::new(
                BetaSchedule::Linear {
                    start: 0.0,
                    end: 0.02
                },
                10
            )
            .is_err()
        );
        assert!(inference_timesteps(10, 11, Spacing::Leading).is_err());
        assert!(inference_timesteps(10, 0, Spacing::Leading).is_err());
    }

    #[test]
    fn spacings_match_diffusers() {
        assert_eq!(
            inference_timesteps(1000, 10, Spacing::Leading).unwrap()[..3],
            [900, 800, 700]
        );
        assert_eq!(
            inference_timesteps(1000, 10, Spacing::Trailing).unwrap()[..3],
            [999, 899, 799]
        );
        assert_eq!(
            *inference_timesteps(1000, 10, Spacing::Trailing)
                .unwrap()
                .last()
                .unwrap(),
            99
        );
        let l = inference_timesteps(1000, 4, Spacing::Linspace).unwrap();
        assert_eq!(l, [999, 666, 333, 0]);
        assert_eq!(
            inference_timesteps(20, 20, Spacing::Leading).unwrap(),
            (0..20).rev().collect::<Vec<_>>()
        );
    }

    #[test]
    fn logsnr_spacing_is_uniform_in_lambda_and_dense_near_the_data() {
        let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let ts = s.timesteps(20, Spacing::LogSnr).unwrap();
        assert_eq!((ts[0], *ts.last().unwrap()), (999, 0));
        assert!(ts.windows(2).all(|w| w[0] > w[1]), "{ts:?}");
        assert!(
            ts[ts.len() - 4] <= 10,
            "the last steps crowd near t = 0: {ts:?}"
        );
        let lam = |t: usize| 0.5 * (s.alphas_cumprod[t] / (1.0 - s.alphas_cumprod[t])).ln();
        let gaps: Vec<f64> = ts.windows(2).map(|w| lam(w[1]) - lam(w[0])).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        // Mid-range gaps are within 25 % of uniform (the ends snap to integer steps).
        assert!(
            gaps[2..gaps.len() - 3]
                .iter()
                .all(|g| (g - mean).abs() < 0.25 * mean),
            "{gaps:?}"
        );
        assert_eq!(
            s.timesteps(10, Spacing::Trailing).unwrap(),
            inference_timesteps(1000, 10, Spacing::Trailing).unwrap()
        );
    }
}
