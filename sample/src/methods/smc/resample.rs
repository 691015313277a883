//! Resampling of K weighted particles (Douc, Cappé & Moulines 2005, "Comparison of resampling
//! schemes for particle filtering"). Weights are kept in log space and normalised with
//! log-sum-exp, so no weight underflows however peaked the posterior.

use tweedie_core::rng::Rng;

/// log Σ exp(v), stable for any magnitudes; −∞ for an empty or all −∞ input.
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Normalised weights from log-weights.
pub fn normalise(log_w: &[f64]) -> Vec<f64> {
    let z = log_sum_exp(log_w);
    log_w.iter().map(|l| (l - z).exp()).collect()
}

/// Effective sample size 1/Σ w_i² of normalised weights, from log-weights (between 1 and K).
pub fn ess(log_w: &[f64]) -> f64 {
    1.0 / normalise(log_w).iter().map(|w| w * w).sum::<f64>()
}

/// How ancestors are drawn. All are unbiased: E[#copies of i] = K w_i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resampling {
    /// K independent draws from the weights.
    Multinomial,
    /// One uniform in each stratum [(k + u_k)/K].
    Stratified,
    /// One uniform u, points (k + u)/K: the lowest variance of the four in practice.
    Systematic,
    /// ⌊K w_i⌋ copies of each, the rest multinomial on the residual weights.
    Residual,
}

/// Inverts the CDF of `w` at sorted points `u` in [0, 1).
fn invert_sorted(w: &[f64], u: impl Iterator<Item = f64>) -> Vec<usize> {
    let mut out = Vec::with_capacity(w.len());
    // Never past the last particle with weight (rounding can leave ui past the last partial sum).
    let end = w.iter().rposition(|x| *x > 0.0).unwrap_or(w.len() - 1);
    let (mut i, mut cum) = (0usize, w[0]);
    for ui in u {
        while ui >= cum && i < end {
            i += 1;
            cum += w[i];
        }
        out.push(i);
    }
    out
}

/// `n` independent draws from the normalised weights `w`, in ascending order.
fn multinomial(w: &[f64], n: usize, rng: &mut Rng) -> Vec<usize> {
    let total: f64 = w.iter().sum();
    let mut u: Vec<f64> = (0..n).map(|_| rng.uniform() * total).collect();
    u.sort_by(f64::total_cmp);
    invert_sorted(w, u.into_iter())
}

impl Resampling {
    /// K ancestor indices for the particles with log-weights `log_w`, in ascending order.
    pub fn ancestors(self, log_w: &[f64], rng: &mut Rng) -> Vec<usize> {
        let k = log_w.len();
        assert!(k > 0, "resampling no particles");
        let w = normalise(log_w);
        let kf = k as f64;
        match self {
            Resampling::Multinomial => multinomial(&w, k, rng),
            Resampling::Stratified => {
                let u: Vec<f64> = (0..k).map(|j| (j as f64 + rng.uniform()) / kf).collect();
                invert_sorted(&w, u.into_iter())
            }
            Resampling::Systematic => {
                let u0 = rng.uniform();
                invert_sorted(&w, (0..k).map(|j| (j as f64 + u0) / kf))
            }
            Resampling::Residual => {
                let copies: Vec<usize> = w.iter().map(|wi| (kf * wi).floor() as usize).collect();
                let mut out: Vec<usize> = copies
                    .iter()
                    .enumerate()
                    .flat_map(|(i, c)| std::iter::repeat_n(i, *c))
                    .collect();
                let rest = k - out.len();
                if rest > 0 {
                    // The residuals K w_i − ⌊K w_i⌋ sum to `rest`; draw that many from them.
                    let resid: Vec<f64> = w
                        .iter()
                        .zip(&copies)
                        .map(|(wi, c)| (kf * wi - *c as f64).max(0.0))
                        .collect();
                    out.extend(multinomial(&resid, rest, rng));
                    out.sort();
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_weights_never_underflow() {
        let lw = [-1e4, -1e4 + 2f64.ln(), -2e4];
        let w = normalise(&lw);
        assert!(
            (w[0] - 1.0 / 3.0).abs() < 1e-12 && (w[1] - 2.0 / 3.0).abs() < 1e-12 && w[2] == 0.0
        );
        assert!((ess(&lw) - 1.0 / (1.0 / 9.0 + 4.0 / 9.0)).abs() < 1e-9);
        assert!((ess(&[0.0; 8]) - 8.0).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY; 2]), f64::NEG_INFINITY);
    }

    #[test]
    fn every_scheme_is_unbiased_and_systematic_beats_multinomial_in_variance() {
        let w = [0.05, 0.3, 0.15, 0.4, 0.1];
        let lw: Vec<f64> = w.iter().map(|x: &f64| x.ln()).collect();
        let k = w.len();
        let reps = 20_000;
        let mut var = Vec::new();
        for scheme in [
            Resampling::Multinomial,
            Resampling::Stratified,
            Resampling::Systematic,
            Resampling::Residual,
        ] {
            let mut rng = Rng::new(1);
            let mut sum = vec![0.0f64; k];
            let mut sq = vec![0.0f64; k];
            for _ in 0..reps {
                let a = scheme.ancestors(&lw, &mut rng);
                assert_eq!(a.len(), k);
                let mut c = vec![0.0; k];
                a.iter().for_each(|i| c[*i] += 1.0);
                for i in 0..k {
                    sum[i] += c[i];
                    sq[i] += c[i] * c[i];
                }
            }
            for i in 0..k {
                let mean = sum[i] / reps as f64;
                // E[N_i] = K w_i; the multinomial standard error is √(K w(1−w)/reps) ≤ 0.008.
                assert!(
                    (mean - k as f64 * w[i]).abs() < 0.04,
                    "{scheme:?}: E[N_{i}] = {mean}, want {}",
                    k as f64 * w[i]
                );
            }
            var.push(
                (0..k)
                    .map(|i| sq[i] / reps as f64 - (sum[i] / reps as f64).powi(2))
                    .sum::<f64>(),
            );
        }
        assert!(
            var[2] < 0.5 * var[0] && var[1] < var[0] && var[3] < var[0],
            "variances {var:?}"
        );
    }
}
