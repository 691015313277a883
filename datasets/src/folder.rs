//! A folder of PNG images as a dataset. Images directly in the folder get label 0; with
//! sub-folders, each sub-folder (in name order) is a class and its index is the label. Every image
//! is converted to `channels` (1: luma, 3: RGB) and must have the same size as the first.

use std::path::{Path, PathBuf};

use crate::ImageSet;
use crate::error::DataError;

fn pngs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::Io {
        path: dir.into(),
        error: e,
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Loads every PNG of `dir` (see the module doc).
pub fn load_folder(dir: &Path, channels: usize) -> Result<ImageSet, DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::format(
            dir,
            format!("channels must be 1 or 3, got {channels}"),
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::Io {
        path: dir.into(),
        error: e,
    })?;
    let mut classes: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut files: Vec<(PathBuf, u8)> = pngs(dir)?.into_iter().map(|p| (p, 0)).collect();
    for (label, c) in classes.iter().enumerate() {
        let label = u8::try_from(label)
            .map_err(|_| DataError::format(dir, "more than 256 class folders"))?;
        files.extend(pngs(c)?.into_iter().map(|p| (p, label)));
    }
    if files.is_empty() {
        return Err(DataError::NotFound {
            what: "PNG images".into(),
            tried: dir.display().to_string(),
        });
    }
    let mut set = ImageSet {
        shape: [channels, 0, 0],
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for (path, label) in files {
        let bytes = std::fs::read(&path).map_err(|e| DataError::Io {
            path: path.clone(),
            error: e,
        })?;
        let ([h, w], pixels) = decode_image(&bytes, channels, &path)?;
        if set.labels.is_empty() {
            set.shape = [channels, h, w];
        } else if [h, w] != [set.shape[1], set.shape[2]] {
            return Err(DataError::format(
                &path,
                format!(
                    "image is {w}×{h}, the folder's first image is {}×{}",
                    set.shape[2], set.shape[1]
                ),
            ));
        }
        set.pixels.extend(pixels);
        set.labels.push(label);
    }
    Ok(set)
}

/// The largest side and the most bytes an image may decode to: a header claiming a huge image
/// is refused before anything is allocated.
pub const MAX_SIDE: u32 = 16384;
pub const MAX_DECODED: u64 = 256 << 20;

/// Decodes one image file's bytes (PNG, or another format the `image` crate reads) into `[H, W]`
/// and `channels` planes of bytes (CHW; 1: luma, 3: RGB); `path` names the file in errors.
pub fn decode_image(
    bytes: &[u8],
    channels: usize,
    path: &Path,
) -> Result<([usize; 2], Vec<u8>), DataError> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::format(path, format!("cannot read the image: {e}")))?;
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| DataError::format(path, format!("cannot decode PNG: {e}")))?;
    let hw = [img.height() as usize, img.width() as usize];
    let pixels = if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        let rgb = img.to_rgb8().into_raw();
        (0..3)
            .flat_map(|c| rgb.iter().skip(c).step_by(3).copied().collect::<Vec<u8>>())
            .collect()
    };
    Ok((hw, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classes_converts_channels_and_rejects_odd_sizes() {
        let dir = std::env::temp_dir().join(format!("tweedie-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cats")).unwrap();
        std::fs::create_dir_all(dir.join("dogs")).unwrap();
        image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]))
            .save(dir.join("cats/a.png"))
            .unwrap();
        image::RgbImage::from_pixel(3, 2, image::Rgb([200, 0, 0]))
            .save(dir.join("dogs/b.png"))
            .unwrap();
        let set = load_folder(&dir, 3).unwrap();
        assert_eq!(set.shape, [3, 2, 3]);
        assert_eq!(set.labels, vec![0, 1]);
        assert_eq!(&set.image(0)[..6], &[10; 6]); // the R plane first (CHW)
        assert_eq!(&set.image(0)[6..12], &[20; 6]);
        assert_eq!(load_folder(&dir, 1).unwrap().shape, [1, 2, 3]);
        image::RgbImage::from_pixel(4, 2, image::Rgb([0, 0, 0]))
            .save(dir.join("dogs/c.png"))
            .unwrap();
        let e = load_folder(&dir, 3).unwrap_err().to_string();
        assert!(e.contains("c.png") && e.contains("4×2"), "{e}");
        std::fs::write(dir.join("dogs/c.png"), b"not a png").unwrap();
        assert!(
            load_folder(&dir, 3)
                .unwrap_err()
                .to_string()
                .contains("cannot decode")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
