//! What people look at: sample grids as PNG, and samples as a NumPy `.npy` array (uint8, N×H×W×C).

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;

/// Images in [−1, 1] `[N, C, H, W]` → uint8 NHWC bytes (round((x + 1)·127.5), clamped).
pub fn to_u8_nhwc(x: Tensor<4>) -> (Vec<u8>, [usize; 4]) {
    let dims = x.dims();
    u8_nhwc(&tweedie_core::host_values(x), dims)
}

/// [`to_u8_nhwc`] of host values `[N, C, H, W]`.
pub fn u8_nhwc(v: &[f32], [n, c, h, w]: [usize; 4]) -> (Vec<u8>, [usize; 4]) {
    let mut out = vec![0u8; n * h * w * c];
    for i in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let val = v[((i * c + ch) * h + y) * w + xx];
                    out[((i * h + y) * w + xx) * c + ch] =
                        ((val + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    (out, [n, h, w, c])
}

/// The bytes of a version-1.0 `.npy` file holding `data` as uint8 of `shape`.
pub fn npy_bytes(data: &[u8], shape: &[usize]) -> Vec<u8> {
    npy::encode("|u1", data, shape)
}

/// The bytes of a `.npy` file holding `data` as little-endian float32 of `shape`.
pub fn npy_bytes_f32(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy::encode("<f4", &bytes, shape)
}

/// The bytes of a `.npy` file holding `data` as little-endian float64 of `shape`.
pub fn npy_bytes_f64(data: &[f64], shape: &[usize]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy::encode("<f8", &bytes, shape)
}

/// The bytes of a `.npy` file holding `data` as little-endian int64 of `shape`.
pub fn npy_bytes_i64(data: &[i64], shape: &[usize]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy::encode("<i8", &bytes, shape)
}

/// Images of a `.npy` file on the [−1, 1] scale as `(values, [n, c, h, w])`: float32 N×C×H×W
/// as given (every value finite), or uint8 N×H×W×C (what `sample` writes) by [`nchw_from_u8`].
pub fn read_images(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let bad = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    if let Ok((values, dims)) = parse_npy_f32(&bytes) {
        let [n, c, h, w] = <[usize; 4]>::try_from(dims.as_slice()).map_err(|_| {
            bad(format!(
                "expected N×C×H×W float32 images, shape is {dims:?}"
            ))
        })?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            anyhow::bail!("{}: value {i} is {}", path.display(), values[i]);
        }
        return Ok((values, [n, c, h, w]));
    }
    let (data, shape) = parse_npy_u8(&bytes).map_err(|e| {
        bad(format!(
            "{e} (images are float32 N×C×H×W on [−1, 1] or uint8 N×H×W×C)"
        ))
    })?;
    Ok(nchw_from_u8(&data, shape))
}

/// The inverse of [`u8_nhwc`] up to rounding: uint8 NHWC bytes → `[N, C, H, W]` values
/// v / 127.5 − 1 on [−1, 1].
pub fn nchw_from_u8(data: &[u8], [n, h, w, c]: [usize; 4]) -> (Vec<f32>, [usize; 4]) {
    let mut out = vec![0.0f32; n * c * h * w];
    for i in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((i * c + ch) * h + y) * w + xx] =
                        data[((i * h + y) * w + xx) * c + ch] as f32 / 127.5 - 1.0;
                }
            }
        }
    }
    (out, [n, c, h, w])
}

/// Parses a `.npy` file of uint8 images written by [`npy_bytes`] (N×H×W×C, C-order, version 1 or
/// 2); the error says what does not fit.
pub fn parse_npy_u8(b: &[u8]) -> std::result::Result<(Vec<u8>, [usize; 4]), String> {
    let (data, dims) = npy::decode(b, &["|u1", "u1"], 1)?;
    let shape = match dims.as_slice() {
        [n, h, w, c] => [*n, *h, *w, *c],
        [n, h, w] => [*n, *h, *w, 1],
        _ => return Err(format!("expected N×H×W×C images, shape is {dims:?}")),
    };
    Ok((data.to_vec(), shape))
}

/// Parses a `.npy` file of float32 values (little-endian, C-order), any shape.
pub fn parse_npy_f32(b: &[u8]) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    let (data, dims) = npy::decode(b, &["<f4", "f4"], 4)?;
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((values, dims))
}

/// Parses a `.npy` file of float64 or float32 values (little-endian, C-order, any shape) as f64:
/// what numpy's `mean` and `cov` of float32 features give (pytorch-fid's statistics).
pub fn parse_npy_f64(b: &[u8]) -> std::result::Result<(Vec<f64>, Vec<usize>), String> {
    if let Ok((v, dims)) = parse_npy_f32(b) {
        return Ok((v.into_iter().map(f64::from).collect(), dims));
    }
    let (data, dims) = npy::decode(b, &["<f8", "f8"], 8)?;
    let values = data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((values, dims))
}

/// Parses a `.npy` file of little-endian int64 values, any shape.
pub fn parse_npy_i64(b: &[u8]) -> std::result::Result<(Vec<i64>, Vec<usize>), String> {
    let (data, dims) = npy::decode(b, &["<i8", "i8"], 8)?;
    let values = data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((values, dims))
}

/// NumPy's `.npy` format (version 1.0 written, 1–3 read): magic, a Python-dict header with the
/// dtype descriptor, order and shape, then the data in C order.
mod npy {
    pub fn encode(descr: &str, data: &[u8], shape: &[usize]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape_txt = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
        // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
        // of 64, ending in a newline.
        let total = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - total % 64) % 64));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + data.len());
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    /// The data bytes and shape of a `.npy` file whose descriptor is one of `descrs` and whose
    /// elements take `size` bytes; the length must be exactly what the shape needs.
    pub fn decode<'a>(
        b: &'a [u8],
        descrs: &[&str],
        size: usize,
    ) -> Result<(&'a [u8], Vec<usize>), String> {
        if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
            return Err("not a .npy file (bad magic)".into());
        }
        let (hl, start) = match b[6] {
            1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
            2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
            v => return Err(format!("unsupported .npy version {v}")),
        };
        let header = b
            .get(start..start + hl)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or("truncated .npy header")?;
        if !descrs.iter().any(|d| header.contains(&format!("'{d}'"))) {
            return Err(format!(
                "expected '{}' data, header is {}",
                descrs[0],
                header.trim().escape_debug()
            ));
        }
        if header.contains("'fortran_order': True") {
            return Err("Fortran-ordered arrays are not supported".into());
        }
        let shape_txt = header
            .split("'shape':")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .ok_or("no shape in the .npy header")?;
        let dims: Vec<usize> = shape_txt
            .trim()
            .trim_start_matches('(')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let need = dims
            .iter()
            .try_fold(size, |a, d| a.checked_mul(*d))
            .ok_or_else(|| format!("shape {dims:?} overflows"))?;
        let data = &b[start + hl..];
        if data.len() != need {
            return Err(format!(
                "shape {dims:?} needs {need} bytes of data, the file has {}",
                data.len()
            ));
        }
        Ok((data, dims))
    }
}

/// Writes `data` to `path` through a temporary sibling and a rename.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    Ok(tweedie_core::checkpoint::write_atomic(path, data)?)
}

/// Writes a sample set into `dir` (created if missing): `samples.npy` (uint8 NHWC) and
/// `grid.png` (a square-ish grid of all of them).
pub fn write_samples(dir: &Path, images: &[u8], shape: [usize; 4]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(&dir.join("samples.npy"), &npy_bytes(images, &shape))?;
    let cols = (shape[0] as f64).sqrt().ceil() as usize;
    write_file(&dir.join("grid.png"), &grid_png(images, shape, cols)?)
}

/// Lays out uint8 NHWC images in a grid of `cols` columns with a 2-pixel border, as a PNG.
pub fn grid_png(data: &[u8], shape: [usize; 4], cols: usize) -> Result<Vec<u8>> {
    let [n, h, w, c] = shape;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let pad = 2;
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    let mut rgb = vec![255u8; gw * gh * 3];
    for i in 0..n {
        let (r, cc) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                let gy = pad + r * (h + pad) + y;
                let gx = pad + cc * (w + pad) + x;
                for k in 0..3 {
                    let src = ((i * h + y) * w + x) * c + if c == 1 { 0 } else { k };
                    rgb[(gy * gw + gx) * 3 + k] = data[src];
                }
            }
        }
    }
    let img = image::RgbImage::from_raw(gw as u32, gh as u32, rgb).context("grid buffer size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding PNG")?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let b = npy_bytes(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 1]);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(header.contains("'shape': (1, 2, 3, 1)") && header.ends_with('\n'));
        assert_eq!(&b[10 + hl..], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            parse_npy_u8(&b).unwrap(),
            (vec![1, 2, 3, 4, 5, 6], [1, 2, 3, 1])
        );
        assert!(
            parse_npy_u8(&b[..b.len() - 1])
                .unwrap_err()
                .contains("needs 6 bytes")
        );
        assert!(parse_npy_u8(b"hello world").unwrap_err().contains("magic"));
        let f = npy_bytes_f32(&[1.5, -2.0, 3.25], &[3]);
        assert_eq!(parse_npy_f32(&f).unwrap(), (vec![1.5, -2.0, 3.25], vec![3]));
        assert!(parse_npy_u8(&f).unwrap_err().contains("'|u1'"));
        assert!(parse_npy_f32(&b).unwrap_err().contains("'<f4'"));
    }

    #[test]
    fn float_arrays_read_what_numpy_writes() {
        // np.save of np.array([[1, 2], [3, 4]], dtype='<f4'): numpy's own header, version 1.0.
        let mut b =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"
                .to_vec();
        b.resize(127, b' ');
        b.push(b'\n');
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend(v.to_le_bytes());
        }
        assert_eq!(
            parse_npy_f32(&b).unwrap(),
            (vec![1.0, 2.0, 3.0, 4.0], vec![2, 2])
        );
    }

    /// uint8 NHWC → [−1, 1] NCHW → uint8 NHWC gives back every byte, in place.
    #[test]
    fn u8_images_read_back_exactly() {
        let shape = [2, 3, 5, 3];
        let data: Vec<u8> = (0..2 * 3 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let (values, nchw) = nchw_from_u8(&data, shape);
        assert_eq!(nchw, [2, 3, 3, 5]);
        assert_eq!(u8_nhwc(&values, nchw), (data, shape));
    }

    #[test]
    fn u8_conversion_rounds_and_clamps_and_grid_decodes() {
        let dev = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![-1.0f32, 1.0, 0.0, 3.0], [1, 1, 2, 2]),
            &dev,
        );
        let (v, shape) = to_u8_nhwc(x);
        assert_eq!(v, vec![0, 255, 128, 255]);
        let png = grid_png(&v, shape, 8).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (6, 6));
    }
}
