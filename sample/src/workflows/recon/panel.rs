//! The panel PNG of one image: one row per sampling method, each
//! ground truth | observation | A⁺y | posterior samples | posterior mean | posterior std.
//! Images are on the [−1, 1] scale; the std column maps 0 → black and 0.25 ([0, 1] scale) or more
//! → white. Small images are enlarged by pixel repetition so that they stay legible.

use anyhow::{Context, Result};

use super::{MethodRun, Problem, moments};
use crate::recon::config::{Method, NoiseSpec, ReconFile};

/// The observation of image `i` drawn at the image's size: nearest-neighbour enlarged when it is
/// smaller (super-resolution), Poisson counts divided by the rate.
pub fn observation_display(file: &ReconFile, problem: &Problem, i: usize) -> Vec<f32> {
    let [c, h, w] = problem.shape;
    let [yc, yh, yw] = problem.y_shape;
    let m = yc * yh * yw;
    let y = &problem.y[i * m..(i + 1) * m];
    let to_model = |v: f32| match file.noise {
        NoiseSpec::Poisson { rate } => (v as f64 / rate * 2.0 - 1.0) as f32,
        _ => v,
    };
    let mut out = vec![0f32; c * h * w];
    for ch in 0..c {
        for r in 0..h {
            for col in 0..w {
                let (yr, ycol) = (r * yh / h, col * yw / w);
                out[(ch * h + r) * w + col] = to_model(y[(ch.min(yc - 1) * yh + yr) * yw + ycol]);
            }
        }
    }
    out
}

/// A CHW image in [−1, 1] → 8-bit.
fn to_u8(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// The panel of image `i`: rows for every method of `runs` that samples (or one row when only
/// baselines ran), `show` samples per row.
pub fn panel_png(
    file: &ReconFile,
    problem: &Problem,
    i: usize,
    runs: &[MethodRun],
    pinv: Option<&MethodRun>,
    show: usize,
) -> Result<Vec<u8>> {
    let [c, h, w] = problem.shape;
    let per = c * h * w;
    let scale = (96 / h.max(w)).max(1);
    let (ch, cw) = (h * scale, w * scale);
    let truth = problem.truth[i * per..(i + 1) * per].to_vec();
    let obs = observation_display(file, problem, i);
    let blank = vec![f32::NAN; per];
    let pinv_img = pinv.map_or(blank.clone(), |p| p.values[i * per..(i + 1) * per].to_vec());
    let mut rows: Vec<Vec<Vec<f32>>> = Vec::new();
    for run in runs.iter().filter(|r| r.method != Method::Pinv) {
        let (mean, std) = moments(run, i, per);
        let k = run.samples;
        let mut cells = vec![truth.clone(), obs.clone(), pinv_img.clone()];
        for j in 0..show {
            cells.push(if j < k {
                run.values[(i * k + j) * per..(i * k + j + 1) * per].to_vec()
            } else {
                blank.clone()
            });
        }
        cells.push(mean);
        // std on [0, 1] is std/2; 0.25 → white: v = std/2/0.25·2 − 1.
        cells.push(std.iter().map(|s| (s * 4.0 - 1.0).min(1.0)).collect());
        rows.push(cells);
    }
    if rows.is_empty() {
        rows.push(vec![truth, obs, pinv_img]);
    }
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(1);
    let pad = 2;
    let (gw, gh) = (ncols * (cw + pad) + pad, rows.len() * (ch + pad) + pad);
    let mut rgb = vec![255u8; gw * gh * 3];
    for (r, cells) in rows.iter().enumerate() {
        for (col, img) in cells.iter().enumerate() {
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = (y / scale, x / scale);
                    let (gy, gx) = (pad + r * (ch + pad) + y, pad + col * (cw + pad) + x);
                    for k in 0..3 {
                        let v = img[((if c == 1 { 0 } else { k }) * h + sy) * w + sx];
                        // A missing cell (no A⁺ for a non-linear operator) stays light grey.
                        rgb[(gy * gw + gx) * 3 + k] = if v.is_nan() { 230 } else { to_u8(v) };
                    }
                }
            }
        }
    }
    let img = image::RgbImage::from_raw(gw as u32, gh as u32, rgb).context("panel buffer size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding PNG")?;
    Ok(png)
}
