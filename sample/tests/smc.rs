//! Particle guidance (TDS, FK steering) is asymptotically exact: checked on Gaussian-mixture
//! priors, whose posterior under a linear-Gaussian observation and evidence p(y) are known in
//! closed form (`tweedie_core::gmm`). Small d, 100 steps, CPU: a few seconds.

use tweedie_sample::gmm_bench::{BenchRow, GmmFile, GmmMethod, GmmProblem, Nets, score};

const TWO_MODES: &str = r#"
kind = "gmm-benchmark"
[gmm]
weights = [0.5, 0.5]
means = [[-1.5, -1.0], [1.5, 1.0]]
stds = [0.35, 0.35]
[observation]
a = [[1.0, 0.5]]
sigma = 0.5
y = [0.3]
[run]
methods = ["dps", "tds", "fk"]
particles = [1, 64]
steps = 100
n_samples = 1000
seed = 3
"#;

/// MCGdiff's layout: 25 unit-variance components on a grid in d = 8, random A with d_y = 2.
fn grid_25_in_8d() -> String {
    let mut means = Vec::new();
    for i in -2i32..=2 {
        for j in -2i32..=2 {
            let m: Vec<String> = (0..8)
                .map(|k| format!("{}.0", if k % 2 == 0 { 2 * i } else { 2 * j }))
                .collect();
            means.push(format!("[{}]", m.join(", ")));
        }
    }
    format!(
        r#"
kind = "gmm-benchmark"
[gmm]
weights = [{w}]
means = [{m}]
stds = [{s}]
[observation]
random_dy = 2
seed = 4
sigma = 0.5
x_true_seed = 9
[run]
methods = ["tds"]
particles = [64]
steps = 100
n_samples = 600
seed = 5
"#,
        w = vec!["1.0"; 25].join(", "),
        m = means.join(", "),
        s = vec!["0.5"; 25].join(", ")
    )
}

fn bench(text: &str) -> (GmmFile, GmmProblem) {
    let file = GmmFile::parse(text).unwrap();
    let problem = file.build().unwrap();
    (file, problem)
}

fn row(file: &GmmFile, p: &GmmProblem, method: GmmMethod, k: usize, seed: u64) -> BenchRow {
    let draws = p
        .draw(file, method, k, file.run.n_samples, seed, &Nets::default())
        .unwrap();
    let r = score(p, file, method, k, &draws);
    eprintln!(
        "{method:?} K={k}: sw {:.4} (floor {:.4}), mode error {:.4}, log Z {:?}, ESS {:?}",
        r.sw, r.sw_floor, r.mode_weight_error, r.log_z, r.ess_mean
    );
    r
}

#[test]
fn particle_errors_fall_with_k_and_tds_reaches_the_floor_on_two_modes() {
    let (file, p) = bench(TWO_MODES);
    let tds1 = row(&file, &p, GmmMethod::Tds, 1, 1);
    let tds64 = row(&file, &p, GmmMethod::Tds, 64, 2);
    let fk4 = row(&file, &p, GmmMethod::Fk, 4, 3);
    let fk64 = row(&file, &p, GmmMethod::Fk, 64, 4);
    assert!(
        tds64.sw < tds1.sw,
        "TDS: K = 64 {} vs K = 1 {}",
        tds64.sw,
        tds1.sw
    );
    assert!(
        fk64.sw < fk4.sw,
        "FK: K = 64 {} vs K = 4 {}",
        fk64.sw,
        fk4.sw
    );
    assert!(
        tds64.sw <= 1.5 * tds64.sw_floor,
        "TDS at K = 64: {} vs floor {}",
        tds64.sw,
        tds64.sw_floor
    );
    assert!(
        tds64.mode_weight_error < 0.03,
        "{}",
        tds64.mode_weight_error
    );
    // DPS's bias on this bimodal posterior is measured (printed), not asserted away.
    let dps = row(&file, &p, GmmMethod::Dps, 1, 5);
    eprintln!(
        "DPS bias on the bimodal posterior: sw/floor {:.2}, mode weight error {:.4}",
        dps.sw / dps.sw_floor,
        dps.mode_weight_error
    );
}

#[test]
fn tds_reaches_the_floor_on_25_modes_in_8_dimensions() {
    let (file, p) = bench(&grid_25_in_8d());
    let r = row(&file, &p, GmmMethod::Tds, 64, 6);
    assert!(
        r.sw <= 1.5 * r.sw_floor,
        "TDS at K = 64: {} vs floor {}",
        r.sw,
        r.sw_floor
    );
}

#[test]
fn the_evidence_estimate_is_unbiased() {
    // E[Ẑ] = p(y) under the model's own chain: compare the mean of Ẑ over independent systems
    // with a plain Monte Carlo estimate of the same model evidence, E_model[p(y | x_0)] (the FK
    // bootstrap with one particle), within 4 combined standard errors. The chain's evidence is
    // not the exact p(y) of the mixture: a 100-step DDPM chain with the exact ε has slightly
    // different tails (measured: −14 % at 100 steps, −4.5 % at 1000 on this problem, where y sits
    // in the tails of both modes); that gap is checked loosely (< 20 %).
    let (file, p) = bench(TWO_MODES);
    let z_of = |method: GmmMethod, k: usize, n: usize, seed: u64| -> Vec<f64> {
        let d = p.draw(&file, method, k, n, seed, &Nets::default()).unwrap();
        d.log_z.unwrap().into_iter().map(f64::exp).collect()
    };
    let stats = |z: &[f64]| {
        let n = z.len() as f64;
        let m = z.iter().sum::<f64>() / n;
        let v = z.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        (m, (v / n).sqrt())
    };
    let (m_mc, se_mc) = stats(&z_of(GmmMethod::Fk, 1, 20_000, 7));
    let (m_tds, se_tds) = stats(&z_of(GmmMethod::Tds, 16, 1000, 8));
    let exact = p.posterior.log_evidence.exp();
    eprintln!(
        "p(y): exact {exact:.5}, model MC {m_mc:.5} ± {se_mc:.5}, TDS {m_tds:.5} ± {se_tds:.5}"
    );
    let se = (se_mc * se_mc + se_tds * se_tds).sqrt();
    assert!(
        (m_tds - m_mc).abs() < 4.0 * se,
        "TDS {m_tds} vs MC {m_mc} (se {se})"
    );
    assert!((m_tds / exact - 1.0).abs() < 0.2 && (m_mc / exact - 1.0).abs() < 0.2);
}
