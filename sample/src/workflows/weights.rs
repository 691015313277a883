//! The published weight files of the field's metrics, downloaded only when asked
//! (`sample download inception|lpips`), verified, and put where the metrics look for them:
//! pytorch-fid's FID Inception (torch hub's SHA-256 prefix in its name), and LPIPS's two files,
//! torchvision's AlexNet and the `lpips` package's v0.1 linear layers. Uses the datasets' `curl`
//! fetch (as `--download` does for datasets).

use std::path::PathBuf;

use anyhow::{Context, Result};
use tweedie_core::lpips::{LINEAR_FILE, LpipsFiles, TRUNK_FILE};
use tweedie_datasets::download::{Checksum, Remote, ensure_file};

/// pytorch-fid's release of TTUR's "2015-12-05" Inception, checked as torch hub checks it.
const INCEPTION: Remote = Remote {
    file: tweedie_core::inception::WEIGHTS_FILE,
    urls: &["https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"],
    checksum: Checksum::Sha256Prefix("6726825d"),
};

/// torchvision's AlexNet (the LPIPS trunk).
const ALEXNET: Remote = Remote {
    file: TRUNK_FILE,
    urls: &["https://download.pytorch.org/models/"],
    checksum: Checksum::Sha256Prefix("7be5be79"),
};

/// The `lpips` package's v0.1 AlexNet linear layers, from its repository; the digest is that of
/// the file in its PyPI release 0.1.4 (a later change upstream is a one-line checksum error).
const LPIPS_LINEAR: Remote = Remote {
    file: LINEAR_FILE,
    urls: &[
        "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/",
    ],
    checksum: Checksum::Sha256("df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
};

/// The metrics whose weights can be downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// FID and KID's Inception-v3 (pytorch-fid's file).
    Inception,
    /// LPIPS: AlexNet and the linear layers.
    Lpips,
}

/// Where `what`'s files go, one per remote file.
pub fn destinations(what: Published) -> Result<Vec<(Remote, PathBuf)>> {
    let no_home = || anyhow::anyhow!("HOME is not set: no cache folder for the weights");
    Ok(match what {
        Published::Inception => {
            let dir = tweedie_core::inception::cache_dir().ok_or_else(no_home)?;
            vec![(INCEPTION, dir.join(INCEPTION.file))]
        }
        Published::Lpips => {
            let files = LpipsFiles::in_dir(&LpipsFiles::cache_dir().ok_or_else(no_home)?);
            vec![(ALEXNET, files.trunk), (LPIPS_LINEAR, files.linear)]
        }
    })
}

/// The files the metric reads now (`$TWEEDIE_INCEPTION`, `$TWEEDIE_LPIPS`, Tweedie's cache or the
/// torch hub cache), when it finds them.
fn found(what: Published) -> Option<Vec<PathBuf>> {
    match what {
        Published::Inception => tweedie_core::inception::locate().map(|p| vec![p]),
        Published::Lpips => LpipsFiles::locate().map(|f| vec![f.trunk, f.linear]),
    }
}

/// The paths of `what`'s files: those the metric already finds, else the downloads, each
/// verified, of whatever is not already in Tweedie's cache.
pub fn download(what: Published) -> Result<Vec<PathBuf>> {
    if let Some(paths) = found(what) {
        return Ok(paths);
    }
    destinations(what)?
        .into_iter()
        .map(|(remote, dest)| {
            ensure_file(&remote, &dest).with_context(|| format!("{}'s weights", remote.file))?;
            Ok(dest)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_land_where_the_metrics_look() {
        let inception = destinations(Published::Inception).unwrap();
        assert_eq!(
            inception[0].1.file_name().unwrap(),
            tweedie_core::inception::WEIGHTS_FILE
        );
        let lpips = destinations(Published::Lpips).unwrap();
        let dir = lpips[0].1.parent().unwrap();
        let files = LpipsFiles::in_dir(dir);
        assert_eq!((&lpips[0].1, &lpips[1].1), (&files.trunk, &files.linear));
    }
}
