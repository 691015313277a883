//! The loss curve as a PNG (plotters, through `tweedie_sample::plot::render_png`).

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use tweedie_sample::plot::render_png;

/// Plots `points` (step, loss) and their trailing rolling mean (over ~2 % of the points) on a
/// log-scale y axis.
pub fn loss_curve_png(points: &[(f64, f64)], title: &str) -> Result<Vec<u8>> {
    render_png(800, 480, |root| {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(_, l)| l.is_finite() && *l > 0.0)
            .collect();
        let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max);
        let y_min = pts
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .min(1.0)
            * 0.9;
        let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(y_min * 2.0) * 1.1;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            // log10(loss) on a linear axis, labelled with the loss itself: evenly spaced labels.
            .build_cartesian_2d(0.0..x_max, y_min.log10()..y_max.log10())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("L_simple")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{:.3}", 10f64.powf(*y)))
            .y_labels(8)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                RGBColor(160, 190, 230).stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label("loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(160, 190, 230)));
        let window = (pts.len() / 50).max(1);
        let smooth: Vec<(f64, f64)> = (0..pts.len())
            .map(|i| {
                let lo = (i + 1).saturating_sub(window);
                let mean = pts[lo..=i].iter().map(|p| p.1).sum::<f64>() / (i + 1 - lo) as f64;
                (pts[i].0, mean.log10())
            })
            .collect();
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label("rolling mean")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// Plots FID against the training step, one dot per score, on a linear y axis from 0.
pub fn fid_curve_png(points: &[(f64, f64)], title: &str) -> Result<Vec<u8>> {
    render_png(800, 480, |root| {
        let pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
        let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
        let y_max = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("FID (lower is better)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_decodable_png() {
        // A noisy decay like a real run's, logged every 10 steps.
        let mut r = tweedie_core::rng::Rng::new(1);
        let pts: Vec<(f64, f64)> = (1..80)
            .map(|i| {
                (
                    10.0 * i as f64,
                    0.03 + 0.9 * (-(i as f64) / 4.0).exp() + 0.01 * r.uniform(),
                )
            })
            .collect();
        let png = super::loss_curve_png(&pts, "test").unwrap();
        std::fs::write(
            std::env::temp_dir().join("tweedie-loss-curve-test.png"),
            &png,
        )
        .unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (800, 480));
        // Something other than white was drawn (axes, curves, text).
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().all(|c| *c < 100))
            .count();
        assert!(dark > 1000, "{dark}");
    }
}
