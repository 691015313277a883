//! Figures as PNG (plotters into a buffer, encoded with `image`; `render_png`, which the loss
//! curve of `tweedie-train` uses too): the GMM benchmark's error against the number of particles
//! per method and, for d = 2, each method's samples over the exact posterior density; FID against
//! NFE.

use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use tweedie_core::gmm::GmmPosterior;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // DejaVu Sans (Bitstream Vera licence, assets/DejaVuSans-LICENSE.txt): no system fonts needed.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Draws a `w`×`h` figure with `draw` on a white background (the bundled font registered) and
/// encodes it as PNG: every figure of the project goes through here.
pub fn render_png(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    register_font();
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("plot buffer")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// The distinct names, in the order they first appear (one line and colour per name).
fn first_seen<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for n in names {
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    seen
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One series: a line through `pts` with a dot on each point, in the legend as `label`.
fn line_with_dots(chart: &mut Chart, pts: &[(f64, f64)], c: RGBColor, label: &str) -> Result<()> {
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// One method's error at one K, for [`error_vs_k_png`].
#[derive(Debug, Clone)]
pub struct ErrorAtK {
    pub method: String,
    pub particles: usize,
    /// Sliced-Wasserstein distance to the exact posterior, and its Monte Carlo floor.
    pub sw: f64,
    pub sw_floor: f64,
}

/// Sliced-Wasserstein error against K (log–log), one line per method (a flat line for methods
/// without particles) and the Monte Carlo floor.
pub fn error_vs_k_png(rows: &[ErrorAtK], title: &str) -> Result<Vec<u8>> {
    render_png(800, 520, |root| {
        let kmax = rows.iter().map(|r| r.particles).max().unwrap_or(1).max(2) as f64;
        let vals: Vec<f64> = rows
            .iter()
            .flat_map(|r| [r.sw, r.sw_floor])
            .filter(|v| *v > 0.0)
            .collect();
        let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min) * 0.8;
        let hi = vals.iter().cloned().fold(0.0, f64::max) * 1.25;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..kmax.log2(), lo.log10()..hi.log10())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("particles K")
            .y_desc("sliced Wasserstein to the exact posterior")
            .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(*x)))
            .y_label_formatter(&|y| format!("{:.3}", 10f64.powf(*y)))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let methods = first_seen(rows.iter().map(|r| r.method.as_str()));
        for (i, m) in methods.iter().enumerate() {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.method == *m)
                .map(|r| ((r.particles as f64).log2(), r.sw.log10()))
                .collect();
            if pts.len() == 1 {
                pts.push((kmax.log2(), pts[0].1));
            }
            line_with_dots(&mut chart, &pts, COLORS[i % COLORS.len()], m)?;
        }
        let floor = rows.iter().map(|r| r.sw_floor).sum::<f64>() / rows.len().max(1) as f64;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, floor.log10()), (kmax.log2(), floor.log10())],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label("Monte Carlo floor")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// Classifier-FID against network evaluations per image (log x axis), one line per sampler:
/// `points` are (sampler, NFE, FID) in any order.
pub fn fid_vs_nfe_png(points: &[(String, usize, f64)], title: &str) -> Result<Vec<u8>> {
    render_png(800, 520, |root| {
        let lx = |n: usize| (n.max(1) as f64).log10();
        let xmin = points.iter().map(|p| lx(p.1)).fold(f64::INFINITY, f64::min);
        let xmax = points
            .iter()
            .map(|p| lx(p.1))
            .fold(f64::NEG_INFINITY, f64::max);
        let (xmin, xmax) = if xmin.is_finite() {
            (xmin - 0.1, xmax.max(xmin + 0.5) + 0.1)
        } else {
            (0.0, 3.0)
        };
        let lo = points.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() {
            let pad = ((hi - lo) * 0.1).max(1.0);
            ((lo - pad).max(0.0), hi + pad)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(xmin..xmax, lo..hi)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("network evaluations per image (NFE)")
            .y_desc("classifier-FID (lower is better)")
            .x_label_formatter(&|x| {
                // Two significant figures: 16, 25, 40, 63, 100, 160…
                let v = 10f64.powf(*x);
                let unit = 10f64.powf(v.log10().floor() - 1.0).max(1.0);
                format!("{:.0}", (v / unit).round() * unit)
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let samplers = first_seen(points.iter().map(|p| p.0.as_str()));
        for (i, name) in samplers.iter().enumerate() {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.0 == *name)
                .map(|p| (lx(p.1), p.2))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            line_with_dots(&mut chart, &pts, COLORS[i % COLORS.len()], name)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// For d = 2: one panel per (method, samples `[n, 2]`) over the exact posterior density.
pub fn scatter_png(post: &GmmPosterior, sets: &[(String, Vec<f64>)]) -> Result<Vec<u8>> {
    let cols = sets.len().clamp(1, 3);
    let rows = sets.len().div_ceil(cols).max(1);
    render_png(360 * cols as u32, 360 * rows as u32, |root| {
        // The view: the exact posterior's means ± 3.5 standard deviations of the spread.
        let ex = post.sample(4000, &mut tweedie_core::rng::Rng::new(0));
        let range = |j: usize| {
            let v: Vec<f64> = ex.chunks(2).map(|x| x[j]).collect();
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let pad = 0.15 * (hi - lo).max(1e-3);
            (lo - pad, hi + pad)
        };
        let ((x0, x1), (y0, y1)) = (range(0), range(1));
        let grid = 60;
        let mut dens = Vec::with_capacity(grid * grid);
        for gy in 0..grid {
            for gx in 0..grid {
                let x = x0 + (gx as f64 + 0.5) / grid as f64 * (x1 - x0);
                let y = y0 + (gy as f64 + 0.5) / grid as f64 * (y1 - y0);
                dens.push(post.log_density(&[x, y]).exp());
            }
        }
        let dmax = dens.iter().cloned().fold(0.0, f64::max).max(1e-300);
        for (area, (name, pts)) in root.split_evenly((rows, cols)).into_iter().zip(sets) {
            let mut chart = ChartBuilder::on(&area)
                .caption(name, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(36)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            let (dx, dy) = ((x1 - x0) / grid as f64, (y1 - y0) / grid as f64);
            chart
                .draw_series((0..grid * grid).map(|i| {
                    let (gx, gy) = (i % grid, i / grid);
                    let v = (dens[i] / dmax).sqrt();
                    let shade = (255.0 - 120.0 * v) as u8;
                    let (ax, ay) = (x0 + gx as f64 * dx, y0 + gy as f64 * dy);
                    Rectangle::new(
                        [(ax, ay), (ax + dx, ay + dy)],
                        RGBColor(shade, shade, 255).filled(),
                    )
                }))
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series(
                    pts.chunks(2)
                        .filter(|p| p[0] > x0 && p[0] < x1 && p[1] > y0 && p[1] < y1)
                        .map(|p| Circle::new((p[0], p[1]), 2, RGBColor(200, 30, 30).filled())),
                )
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
}
