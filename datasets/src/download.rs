//! Opt-in download of a dataset's original files from its canonical source, verified by checksum.
//! Uses the system `curl` (no TLS stack is compiled into Tweedie). Tests never download: they
//! exercise the verification and the "already there" path only.

use std::path::{Path, PathBuf};
use std::process::Command;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::DatasetKind;
use crate::error::DataError;

/// The expected digest of a downloaded file.
#[derive(Debug, Clone, Copy)]
pub enum Checksum {
    Sha256(&'static str),
    Md5(&'static str),
    /// The first hex digits of the SHA-256, as torch hub names its files (`…-6726825d.pth`) and
    /// checks them.
    Sha256Prefix(&'static str),
}

/// One file to fetch.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    pub file: &'static str,
    pub urls: &'static [&'static str],
    pub checksum: Checksum,
}

const MNIST_URLS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
];
const FASHION_URLS: &[&str] = &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"];

/// The files of `kind` with their sources and checksums (MNIST and Fashion-MNIST: the published
/// gzipped IDX files, SHA-256; CIFAR-10: the binary tarball, MD5 as listed on its home page).
pub fn remotes(kind: DatasetKind) -> Vec<Remote> {
    use Checksum::*;
    let idx = |urls, names: [(&'static str, &'static str); 4]| {
        names
            .into_iter()
            .map(|(file, h)| Remote {
                file,
                urls,
                checksum: Sha256(h),
            })
            .collect()
    };
    match kind {
        DatasetKind::Mnist => idx(
            MNIST_URLS,
            [
                (
                    "train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
            ],
        ),
        DatasetKind::FashionMnist => idx(
            FASHION_URLS,
            [
                (
                    "train-images-idx3-ubyte.gz",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            ],
        ),
        DatasetKind::Cifar10 => vec![Remote {
            file: "cifar-10-binary.tar.gz",
            urls: &["https://www.cs.toronto.edu/~kriz/"],
            checksum: Md5("c32a1d4ab5d03f1284b67883e8d87530"),
        }],
        DatasetKind::Folder { .. } => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `bytes` against `sum`; the error names `path` and both digests.
pub fn verify(bytes: &[u8], sum: Checksum, path: &Path) -> Result<(), DataError> {
    let (got, want) = match sum {
        Checksum::Sha256(w) => (hex(&Sha256::digest(bytes)), w),
        Checksum::Md5(w) => (hex(&Md5::digest(bytes)), w),
        Checksum::Sha256Prefix(w) => {
            let got = hex(&Sha256::digest(bytes));
            (got.get(..w.len()).unwrap_or(&got).to_string(), w)
        }
    };
    if got == want {
        Ok(())
    } else {
        Err(DataError::format(
            path,
            format!("checksum mismatch: got {got}, expected {want}"),
        ))
    }
}

/// Downloads whatever of `kind`'s files is missing from `dir` (creating it), verifying each
/// before it is moved into place. Files already present are left alone.
pub fn ensure(kind: DatasetKind, dir: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
        path: dir.into(),
        error: e,
    })?;
    for r in remotes(kind) {
        if kind == DatasetKind::Cifar10 && crate::load_cifar_dir(dir, crate::Split::Train).is_ok() {
            continue;
        }
        let dest = dir.join(r.file);
        if dest.is_file() {
            continue;
        }
        let bytes = fetch(&r, &dest)?;
        verify(&bytes, r.checksum, &dest)?;
        if kind == DatasetKind::Cifar10 {
            unpack_cifar(&bytes, dir, &dest)?;
        } else {
            crate::write_replacing(&dest, &bytes)?;
        }
    }
    Ok(())
}

/// `r` at `dest` (its folder created): left alone when already there, else downloaded and
/// verified before it is moved into place, so a failed or corrupt download leaves nothing behind.
/// For published weight files, which are not datasets but are fetched the same way.
pub fn ensure_file(r: &Remote, dest: &Path) -> Result<(), DataError> {
    if dest.is_file() {
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
            path: dir.into(),
            error: e,
        })?;
    }
    let bytes = fetch(r, dest)?;
    verify(&bytes, r.checksum, dest)?;
    crate::write_replacing(dest, &bytes)
}

fn fetch(r: &Remote, dest: &Path) -> Result<Vec<u8>, DataError> {
    let tmp: PathBuf = dest.with_extension("part");
    let mut errors = Vec::new();
    for base in r.urls {
        let url = format!("{base}{}", r.file);
        eprintln!("downloading {url}");
        let status = Command::new("curl")
            .args(["-fL", "--retry", "2", "-o"])
            .arg(&tmp)
            .arg(&url)
            .status();
        match status {
            Ok(s) if s.success() => {
                let bytes = std::fs::read(&tmp).map_err(|e| DataError::Io {
                    path: tmp.clone(),
                    error: e,
                })?;
                let _ = std::fs::remove_file(&tmp);
                return Ok(bytes);
            }
            Ok(s) => errors.push(format!("{url}: curl exited with {s}")),
            Err(e) => errors.push(format!(
                "cannot run curl ({e}); place the files in {} by hand",
                dest.parent().unwrap_or(dest).display()
            )),
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Err(DataError::format(
        dest,
        format!("download failed: {}", errors.join("; ")),
    ))
}

/// Extracts `cifar-10-batches-bin/*.bin` from the tarball into `dir`.
fn unpack_cifar(tar_gz: &[u8], dir: &Path, src: &Path) -> Result<(), DataError> {
    let bad = |e: std::io::Error| DataError::format(src, format!("cannot unpack: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        if name.ends_with(".bin") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(bad)?;
            crate::write_replacing(&dir.join(name), &bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_accepts_the_right_digest_and_names_the_file_otherwise() {
        let p = Path::new("x.gz");
        // SHA-256 and MD5 of "abc" (FIPS 180-2 and RFC 1321 test vectors).
        verify(
            b"abc",
            Checksum::Sha256("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            p,
        )
        .unwrap();
        verify(b"abc", Checksum::Md5("900150983cd24fb0d6963f7d28e17f72"), p).unwrap();
        let e = verify(b"abd", Checksum::Md5("900150983cd24fb0d6963f7d28e17f72"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.gz") && e.contains("checksum mismatch"), "{e}");
        // torch hub's file-name prefix: the first digits of the SHA-256.
        verify(b"abc", Checksum::Sha256Prefix("ba7816bf"), p).unwrap();
        let e = verify(b"abd", Checksum::Sha256Prefix("ba7816bf"), p).unwrap_err();
        assert!(e.to_string().contains("expected ba7816bf"), "{e}");
    }

    #[test]
    fn a_weight_file_already_there_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("tweedie-ensure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("w.pth");
        std::fs::write(&dest, b"kept").unwrap();
        let r = Remote {
            file: "w.pth",
            urls: &["http://127.0.0.1:1/"],
            checksum: Checksum::Sha256Prefix("00000000"),
        };
        ensure_file(&r, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"kept");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_bundled_mnist_matches_the_published_checksums_and_needs_no_download() {
        let root = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let dir = Path::new(&root).join("../data/mnist");
        for r in remotes(DatasetKind::Mnist) {
            let p = dir.join(r.file);
            verify(&std::fs::read(&p).unwrap(), r.checksum, &p).unwrap();
        }
        ensure(DatasetKind::Mnist, &dir).unwrap(); // every file present: nothing fetched
    }
}
