//! A benchmark file, run end to end: every method (each particle method at every K) against the
//! exact posterior. [`run`] returns a [`GmmReport`]; [`GmmReport::write`] writes `results.json`,
//! `table.md`, `error_vs_k.png` and, in d = 2, `scatter.png`.

use std::path::Path;

use anyhow::Result;
use tweedie_core::rng::Rng;

use super::{BenchRow, GmmFile, GmmProblem, Nets, score};
use crate::amortized::{self, VectorPairs};
use crate::catalog::Method;
use crate::output::write_file;

/// How to run a benchmark file (what is not in it).
#[derive(Debug, Clone)]
pub struct GmmOptions {
    /// Names the plots: "<stem>: d = …".
    pub stem: String,
    pub quiet: bool,
}

/// What a run produced.
pub struct GmmReport {
    pub problem: GmmProblem,
    /// One row per (method, K), in the file's order; each was also printed as a JSON line.
    pub rows: Vec<BenchRow>,
    /// Samples drawn in d = 2 for the scatter plot: (label, `[n, 2]` row-major).
    pub scatter: Vec<(String, Vec<f64>)>,
    /// `{"log_evidence", "results"}`: `results.json`.
    pub record: serde_json::Value,
    pub title: String,
    n_samples: usize,
    seed: u64,
}

/// Trains what the file's amortized methods need, once: the ε-network for `amortized` and
/// `csb`, the bridge on top of it for `csb`.
fn train_nets(file: &GmmFile, problem: &GmmProblem, bar: &indicatif::ProgressBar) -> Result<Nets> {
    let mut nets = Nets::default();
    let methods = &file.run.methods;
    if !methods.iter().any(|m| m.is_amortized()) {
        return Ok(nets);
    }
    let pairs = VectorPairs {
        prior: &problem.prior,
        obs: &problem.obs,
    };
    let a = &file.amortized;
    bar.set_message(format!("training ε(x_t, t, y): {} steps", a.steps));
    let (eps, log) = amortized::train_eps(&pairs, &problem.schedule, a, &mut |_| bar.tick())?;
    nets.eps_seconds = log.seconds;
    if methods.contains(&Method::Csb) {
        let c = &file.csb;
        c.check_schedule("csb", &problem.schedule)?;
        bar.set_message(format!("bridge: {} IPF iterations", c.iterations));
        let (bridge, trace) =
            amortized::train_csb(eps.clone(), &pairs, &problem.schedule, c, &mut |_, _| {
                bar.tick()
            })?;
        nets.csb_seconds = trace.seconds;
        nets.bridge = Some(bridge);
    }
    nets.eps = Some(eps);
    Ok(nets)
}

/// Runs every method of `file`; each row is also printed on stderr as it finishes.
pub fn run(file: &GmmFile, opts: &GmmOptions) -> Result<GmmReport> {
    let problem = file.build()?;
    let d = problem.prior.dim();
    let mut rows = Vec::new();
    let mut scatter: Vec<(String, Vec<f64>)> = Vec::new();
    let n_runs: usize = file
        .run
        .methods
        .iter()
        .map(|m| file.settings().particles(*m).map_or(1, |ks| ks.len()))
        .sum();
    let bar = crate::progress::bar(
        n_runs * (1 + file.run.fresh_y),
        opts.quiet,
        "{spinner} {msg:16} [{bar:30}] {pos}/{len} runs ETA {eta}",
    );
    let nets = train_nets(file, &problem, &bar)?;
    let pairs = VectorPairs {
        prior: &problem.prior,
        obs: &problem.obs,
    };
    let fresh: Vec<GmmProblem> = amortized::observations(
        &pairs,
        file.run.fresh_y,
        &mut Rng::derive(file.run.seed, 13),
    )
    .into_iter()
    .map(|y| problem.with_y(y))
    .collect::<Result<_>>()?;
    for &m in &file.run.methods {
        let settings = file.settings();
        let ks = settings.particles(m).unwrap_or(&[1]);
        let kmax = ks.iter().copied().max().unwrap_or(1);
        for &k in ks {
            bar.set_message(format!("{} K={k}", m.name()));
            let seed = Rng::derive(file.run.seed, super::stream(m, k)).next_u64();
            let draws = problem.draw(file, m, k, file.run.n_samples, seed, &nets)?;
            let mut row = score(&problem, file, m, k, &draws);
            row.train_seconds = match m {
                Method::Amortized => Some(nets.eps_seconds),
                Method::Csb => Some(nets.eps_seconds + nets.csb_seconds),
                _ => None,
            };
            if !fresh.is_empty() {
                let mut total = 0.0;
                for (j, p) in fresh.iter().enumerate() {
                    let seed_j = Rng::derive(seed, 1 + j as u64).next_u64();
                    let dj = p.draw(file, m, k, file.run.n_samples, seed_j, &nets)?;
                    let r = score(p, file, m, k, &dj);
                    total += r.sw / r.sw_floor;
                    bar.inc(1);
                }
                row.sw_ratio_fresh = Some(total / fresh.len() as f64);
            }
            let line = serde_json::to_string(&row)?;
            bar.suspend(|| eprintln!("{line}"));
            bar.inc(1);
            rows.push(row);
            if d == 2 && (k == kmax || !m.is_particle()) {
                let label = if m.is_particle() {
                    format!("{} (K = {k})", m.name())
                } else {
                    m.name().to_string()
                };
                scatter.push((label, draws.samples.clone()));
            }
        }
    }
    bar.finish_and_clear();
    let record = serde_json::json!({
        "log_evidence": problem.posterior.log_evidence,
        "results": rows,
    });
    let title = format!("{}: d = {d}, d_y = {}", opts.stem, problem.obs.dy());
    Ok(GmmReport {
        problem,
        rows,
        scatter,
        record,
        title,
        n_samples: file.run.n_samples,
        seed: file.run.seed,
    })
}

impl GmmReport {
    /// The trade-off table in Markdown: error for the file's y and over fresh y, network calls
    /// per posterior sample, training and sampling seconds.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, p: usize| v.map_or("–".to_string(), |x| format!("{x:.p$}"));
        let mut t = String::from(
            "| method | K | SW ÷ floor | SW ÷ floor, fresh y | mode-weight TV | NFE / sample | train s | sample s |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            t += &format!(
                "| {} | {} | {:.2} | {} | {:.3} | {} | {} | {:.2} |\n",
                r.method,
                r.particles,
                r.sw / r.sw_floor,
                opt(r.sw_ratio_fresh, 2),
                r.mode_weight_error,
                r.nfe,
                opt(r.train_seconds, 1),
                r.seconds
            );
        }
        t
    }

    /// Writes `out/error_vs_k.png`, in d = 2 `out/scatter.png` (the samples over exact posterior
    /// draws), and `out/results.json`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))?;
        write_file(
            &out.join("error_vs_k.png"),
            &crate::plot::error_vs_k_png(
                &self
                    .rows
                    .iter()
                    .map(|r| crate::plot::ErrorAtK {
                        method: r.method.clone(),
                        particles: r.particles,
                        sw: r.sw,
                        sw_floor: r.sw_floor,
                    })
                    .collect::<Vec<_>>(),
                &self.title,
            )?,
        )?;
        if self.problem.prior.dim() == 2 {
            let exact = self
                .problem
                .posterior
                .sample(self.n_samples, &mut Rng::derive(self.seed, 11));
            let mut sets = vec![("exact posterior".to_string(), exact)];
            sets.extend(self.scatter.iter().cloned());
            write_file(
                &out.join("scatter.png"),
                &crate::plot::scatter_png(&self.problem.posterior, &sets)?,
            )?;
        }
        write_file(&out.join("table.md"), self.table().as_bytes())?;
        write_file(
            &out.join("results.json"),
            serde_json::to_string_pretty(&self.record)?.as_bytes(),
        )
    }
}
