//! The amortized route against closed forms: a Gaussian prior observed as y = A x + σ n, where
//! the optimal conditional ε-network, its least loss, the posterior and the Schrödinger bridge
//! are all known (tweedie_core::bridge).

use burn::prelude::*;
use tweedie_core::bridge::{GaussianIpf, LinearGaussianModel, Mat, Moments, Reference};
use tweedie_core::denoiser::Conditioned;
use tweedie_core::gmm::{GaussianMixture, LinearGaussian};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule, Spacing};
use tweedie_sample::amortized::{self, CsbSettings, TrainSettings, VectorPairs};
use tweedie_sample::sampler::{self, Ddpm};

const MEAN: [f64; 2] = [0.5, -1.0];
const STD: f64 = 0.8;
const Y: f64 = 0.7;

fn problem(schedule: &NoiseSchedule) -> (GaussianMixture, LinearGaussian, LinearGaussianModel) {
    let prior = GaussianMixture::new(
        vec![1.0],
        vec![MEAN.to_vec()],
        vec![STD],
        schedule.alphas_cumprod.clone(),
    )
    .unwrap();
    let obs = LinearGaussian {
        a: vec![vec![1.0, 0.5]],
        sigma: 0.4,
    };
    let model = LinearGaussianModel {
        mean: MEAN.to_vec(),
        cov: Mat::eye(2).scale(STD * STD),
        a: Mat::from_rows(&obs.a),
        sigma: obs.sigma,
    };
    (prior, obs, model)
}

/// Sample mean and covariance of `[n, 2]` rows.
fn moments(x: &[f32]) -> Moments {
    let n = x.len() / 2;
    let mean: Vec<f64> = (0..2)
        .map(|j| {
            x.iter()
                .skip(j)
                .step_by(2)
                .map(|v| f64::from(*v))
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mut cov = Mat::zeros(2, 2);
    for r in x.chunks(2) {
        for i in 0..2 {
            for j in 0..2 {
                cov.data[i * 2 + j] +=
                    (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j]) / (n - 1) as f64;
            }
        }
    }
    Moments { mean, cov }
}

fn error(got: &Moments, want: &Moments) -> f64 {
    let m = got
        .mean
        .iter()
        .zip(&want.mean)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    m + got.cov.sub(&want.cov).max_abs()
}

fn amortized_samples(
    net: &amortized::CondMlp,
    schedule: &NoiseSchedule,
    n: usize,
    steps: usize,
) -> Moments {
    let device = Device::flex();
    let cond = Tensor::<4>::from_data(TensorData::new(vec![Y as f32; n], [n, 1, 1, 1]), &device);
    let den = Conditioned { net, cond };
    let timesteps = schedule.timesteps(steps, Spacing::Trailing).unwrap();
    let mut ddpm = Ddpm {
        variance: tweedie_core::elbo::ModelVariance::Small,
        clip: false,
    };
    let mut rng = Rng::new(9);
    let x = rng.normal_tensor([n, 2, 1, 1], &device);
    let (x0, _) = sampler::run(
        &den,
        &mut ddpm,
        schedule,
        &timesteps,
        x,
        &mut rng,
        |_, _| {},
    );
    moments(&tweedie_core::host_values(x0))
}

/// Where `got` is not within `k` Monte Carlo standard errors (of n draws from `want`) plus
/// `slack` of `want`, in one mean or covariance entry: that entry and its error.
fn outside(got: &Moments, want: &Moments, n: usize, k: f64, slack: f64) -> Option<String> {
    let c = &want.cov;
    for i in 0..2 {
        let se = (c.at(i, i) / n as f64).sqrt();
        let e = (got.mean[i] - want.mean[i]).abs();
        if e >= k * se + slack {
            return Some(format!(
                "mean[{i}] off by {e:.4} (bound {:.4})",
                k * se + slack
            ));
        }
        for j in 0..2 {
            let se = ((c.at(i, i) * c.at(j, j) + c.at(i, j).powi(2)) / n as f64).sqrt();
            let e = (got.cov.at(i, j) - c.at(i, j)).abs();
            if e >= k * se + slack {
                return Some(format!(
                    "cov[{i}{j}] off by {e:.4} (bound {:.4})",
                    k * se + slack
                ));
            }
        }
    }
    None
}

/// Within `k` Monte Carlo standard errors of `want` (n draws): each mean and covariance entry.
fn assert_close(got: &Moments, want: &Moments, n: usize, k: f64, slack: f64, what: &str) {
    if let Some(e) = outside(got, want, n, k, slack) {
        panic!("{what}: {e} ({got:?} vs {want:?})");
    }
}

/// Training reaches the closed-form least loss at every noise level; the trained network's
/// samples for a y have the exact posterior's mean and covariance; and the bridge built from it
/// on a short horizon, biased at iteration 0 (it starts from N(0, I) where the reference has not
/// forgotten the data), loses that bias to IPF as exact (linear) mean matching does.
#[test]
fn the_amortized_network_and_the_bridge_reach_the_gaussian_closed_forms() {
    let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let (prior, obs, model) = problem(&schedule);
    let pairs = VectorPairs {
        prior: &prior,
        obs: &obs,
    };
    let s = TrainSettings {
        steps: 3000,
        width: 64,
        ..TrainSettings::default()
    };
    let (net, _) = amortized::train_eps(&pairs, &schedule, &s, &mut |_| {}).unwrap();
    let mut rng = Rng::new(5);
    for t in [20, 100, 300, 600, 900] {
        let got = amortized::train::loss_at(&net, &pairs, &schedule, t, 20_000, &mut rng);
        let min = model.min_eps_loss(schedule.alphas_cumprod[t]).unwrap();
        assert!(
            got < 1.03 * min + 2e-3 && got > 0.97 * min - 2e-3,
            "t = {t}: {got} vs {min}"
        );
    }
    // 1000 ancestral steps: 100 would shrink the variance by themselves (x̂₀ plugged in).
    let post = model.posterior(&[Y]).unwrap();
    let n = 4000;
    let m = amortized_samples(&net, &schedule, n, 1000);
    assert_close(&m, &post, n, 4.0, 0.0, "amortized");

    let cs = CsbSettings {
        horizon: 0.5,
        steps: 20,
        iterations: 2,
        train_steps: 3000,
        refresh: 10,
        ..CsbSettings::default()
    };
    // Enough bridge samples that 4 standard errors (0.011 on the mean's second coordinate) tell
    // iterate 2 from iterate 3 (0.016 apart there); 4,000 could not (0.045).
    let n = 64_000;
    let y = vec![Y as f32; n];
    let b0 = amortized::ConditionalBridge::from_eps(net.clone(), &schedule, &cs).unwrap();
    let times = b0.times().to_vec();
    let mut errs = vec![error(&moments(&b0.sample(&y, n, &mut Rng::new(11))), &post)];
    let mut last = None;
    amortized::train_csb(net, &pairs, &schedule, &cs, &mut |_, b| {
        let m = moments(&b.sample(&y, n, &mut Rng::new(11)));
        errs.push(error(&m, &post));
        last = Some(m);
    })
    .unwrap();
    assert!(errs[0] > 0.2 && errs[2] < 0.5 * errs[0], "{errs:?}");
    // The exact iterates 0..=3 of the same IPF (the bridge's grid and reference, exact mean
    // matching), each as the learned sampler draws: the last step adds no noise, so the oracle's
    // covariance less v_1 I.
    let mut ipf = GaussianIpf::new(model, &times, Reference::OrnsteinUhlenbeck);
    ipf.fit_backward().unwrap();
    let mut exact = Vec::new();
    for it in 0..=3 {
        if it > 0 {
            ipf.fit_forward().unwrap();
            ipf.fit_backward().unwrap();
        }
        let mut m = ipf.backward_end(&[Y]).unwrap();
        m.cov = m.cov.sub(&Mat::eye(2).scale(ipf.var[0]));
        exact.push(m);
    }
    let target = &exact[cs.iterations];
    let last = last.unwrap();
    // Monte Carlo alone (4 SE, no slack) tells iterate 2 from iterates 1 and 3 and from the
    // posterior at n = 64,000 (each is outside that bound, asserted below), but the learned
    // iterate carries a training error beyond it: measured 0.025 from exact iterate 2 (0.0146 on
    // mean[0]) with 3,000 optimiser steps per half-iteration, 0.055 with 1,000 (nearer iterate 1
    // then). So the test asks for the nearest exact iterate, and within 4 SE + 0.02 of it.
    // (The former bound, 4 SE at n = 4,000 + 0.03, accepted iterates 1 and 3 and the posterior.)
    let (k, slack) = (4.0, 0.0);
    let d_target = error(&last, target);
    println!(
        "learned: {d_target:.4} from iterate {}: {:?}; from iterates 1, 3 and the posterior: \
         {:.4}, {:.4}, {:.4}; errors from the posterior by iteration {errs:?}",
        cs.iterations,
        outside(&last, target, n, k, slack),
        error(&last, &exact[1]),
        error(&last, &exact[3]),
        error(&last, &post),
    );
    for (what, other) in [
        ("exact iterate 1", &exact[1]),
        ("exact iterate 3", &exact[3]),
        ("posterior", &post),
    ] {
        println!(
            "{what}: {:.4} from iterate {}, outside the bound: {:?}",
            error(other, target),
            cs.iterations,
            outside(other, target, n, k, slack)
        );
        assert!(
            outside(other, target, n, k, slack).is_some(),
            "the bound accepts {what}: {other:?} vs {target:?}"
        );
        assert!(
            d_target < error(&last, other),
            "the learned bridge is nearer {what} than iterate {}: {last:?}",
            cs.iterations
        );
    }
    assert_close(&last, target, n, k, 0.02, "bridge vs exact mean matching");
}
