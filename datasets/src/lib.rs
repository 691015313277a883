//! # tweedie-datasets
//!
//! Readers for the original dataset formats (IDX for MNIST and Fashion-MNIST, the CIFAR-10 binary
//! batches; plain or gzipped), validated so that a damaged file is an error naming the file, never
//! a panic; and a burn [`Dataset`](burn::data::dataset::Dataset) + [`Batcher`](burn::data::dataloader::batcher::Batcher)
//! that yields images scaled to [−1, 1].

pub mod batcher;
pub mod cifar;
pub mod download;
pub mod error;
pub mod folder;
pub mod idx;
pub mod read;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use batcher::{ImageBatch, ImageBatcher, ImageItem, to_model_scale};
pub use error::DataError;

/// The datasets Tweedie reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
    Cifar10,
    /// A folder of PNG images (see [`folder`]), converted to `channels` channels.
    Folder {
        channels: usize,
    },
}

impl DatasetKind {
    /// The name used in configs and as the sub-directory of a data directory.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Folder { .. } => "folder",
        }
    }

    /// (channels, height, width) of one image, where the format fixes it.
    pub fn shape(self) -> Option<[usize; 3]> {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => Some([1, 28, 28]),
            DatasetKind::Cifar10 => Some([3, 32, 32]),
            DatasetKind::Folder { .. } => None,
        }
    }
}

/// A dataset as experiment files and flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST handwritten digits: 28×28, grey (bundled in `data/mnist`).
    Mnist,
    /// Fashion-MNIST: 28×28, grey.
    #[serde(alias = "fashion_mnist")]
    FashionMnist,
    /// CIFAR-10: 32×32, colour (the binary batches).
    #[serde(alias = "cifar-10")]
    Cifar10,
    /// A folder of PNG images (sub-folders are classes); needs `channels` and `resolution`.
    Folder,
}

impl DatasetName {
    /// The dataset; a folder is read with `channels` channels (default 3).
    pub fn kind(self, channels: Option<usize>) -> DatasetKind {
        match self {
            DatasetName::Mnist => DatasetKind::Mnist,
            DatasetName::FashionMnist => DatasetKind::FashionMnist,
            DatasetName::Cifar10 => DatasetKind::Cifar10,
            DatasetName::Folder => DatasetKind::Folder {
                channels: channels.unwrap_or(3),
            },
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    /// A dataset by its [`DatasetName`] (a folder with 3 channels).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        tweedie_core::choice::parse::<DatasetName>(s).map(|n| n.kind(None))
    }
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        tweedie_core::choice::parse(s)
    }
}

/// Images as bytes, CHW per image, with their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// [channels, height, width].
    pub shape: [usize; 3],
    /// `len() × C × H × W` bytes.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }
    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
    /// Keeps the first `n` images (all if `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.pixels.truncate(n * self.image_len());
        self.labels.truncate(n);
    }
}

/// Where a dataset's files are looked for, in order: the `explicit` directory (from a config or
/// flag) if given, else `$TWEEDIE_DATA/<name>`, else the copy bundled in this repository
/// (`data/<name>`, MNIST only).
pub fn resolve_dir(kind: DatasetKind, explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    let mut tried = Vec::new();
    if let (DatasetKind::Folder { .. }, None) = (kind, explicit) {
        return Err(DataError::NotFound {
            what: "a folder dataset needs `[data] dir`".into(),
            tried: "-".into(),
        });
    }
    if let Some(dir) = explicit {
        if dir.is_dir() {
            return Ok(dir.to_path_buf());
        }
        return Err(DataError::NotFound {
            what: format!("{} data directory", kind.name()),
            tried: dir.display().to_string(),
        });
    }
    if let Some(root) = std::env::var_os("TWEEDIE_DATA") {
        let d = Path::new(&root).join(kind.name());
        if d.is_dir() {
            return Ok(d);
        }
        tried.push(d.display().to_string());
    }
    for base in [
        PathBuf::from("data"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"),
    ] {
        let d = base.join(kind.name());
        if d.is_dir() {
            return Ok(d);
        }
        tried.push(d.display().to_string());
    }
    Err(DataError::NotFound {
        what: format!(
            "{} data (set `data.dir` in the config or TWEEDIE_DATA)",
            kind.name()
        ),
        tried: tried.join(", "),
    })
}

/// Writes `bytes` to `path` through a temporary sibling and a rename (no half-written files).
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| DataError::Io {
        path: tmp.clone(),
        error: e,
    })?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::Io {
        path: path.into(),
        error: e,
    })
}

/// The first of `names` (each also tried with `.gz`) that exists in `dir`.
fn find_file(dir: &Path, names: &[&str]) -> Result<PathBuf, DataError> {
    let mut tried = Vec::new();
    for n in names {
        for cand in [n.to_string(), format!("{n}.gz")] {
            let p = dir.join(&cand);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(DataError::NotFound {
        what: names.join(" or "),
        tried: tried.join(", "),
    })
}

/// Loads a split of a dataset from `dir` (see [`resolve_dir`]). A folder dataset has one split:
/// `dir` itself for training, `dir/test` (if present, else `dir`) for testing.
pub fn load(kind: DatasetKind, split: Split, dir: &Path) -> Result<ImageSet, DataError> {
    match kind {
        DatasetKind::Folder { channels } => {
            let test = dir.join("test");
            let d = if split == Split::Test && test.is_dir() {
                test
            } else {
                dir.to_path_buf()
            };
            folder::load_folder(&d, channels)
        }
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let prefix = if split == Split::Train {
                "train"
            } else {
                "t10k"
            };
            let ip = find_file(
                dir,
                &[
                    &format!("{prefix}-images-idx3-ubyte"),
                    &format!("{prefix}-images.idx3-ubyte"),
                ],
            )?;
            let lp = find_file(
                dir,
                &[
                    &format!("{prefix}-labels-idx1-ubyte"),
                    &format!("{prefix}-labels.idx1-ubyte"),
                ],
            )?;
            load_idx_pair(&ip, &lp)
        }
        DatasetKind::Cifar10 => load_cifar_dir(dir, split),
    }
}

/// An IDX image file (N×H×W) with its IDX label file (N).
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    let im = idx::parse_idx(&read::read_maybe_gz(images)?, images)?;
    let lb = idx::parse_idx(&read::read_maybe_gz(labels)?, labels)?;
    if im.dims.len() != 3 {
        return Err(DataError::format(
            images,
            format!("expected 3 dimensions (N×H×W), found {:?}", im.dims),
        ));
    }
    if lb.dims.len() != 1 {
        return Err(DataError::format(
            labels,
            format!("expected 1 dimension (N), found {:?}", lb.dims),
        ));
    }
    if im.dims[0] != lb.dims[0] {
        return Err(DataError::format(
            labels,
            format!(
                "{} labels for {} images in {}",
                lb.dims[0],
                im.dims[0],
                images.display()
            ),
        ));
    }
    Ok(ImageSet {
        shape: [1, im.dims[1], im.dims[2]],
        pixels: im.data,
        labels: lb.data,
    })
}

/// Every CIFAR-10 batch of a split in `dir`: `data_batch_*.bin[.gz]` (train) or
/// `test_batch*.bin[.gz]` (test), in name order.
pub fn load_cifar_dir(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
    let prefix = if split == Split::Train {
        "data_batch"
    } else {
        "test_batch"
    };
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::Io {
        path: dir.into(),
        error: e,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with(prefix) && (n.ends_with(".bin") || n.ends_with(".bin.gz"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::NotFound {
            what: format!("CIFAR-10 {prefix}*.bin files"),
            tried: dir.display().to_string(),
        });
    }
    let mut set = ImageSet {
        shape: [3, 32, 32],
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for f in files {
        let (px, lb) = cifar::parse_cifar(&read::read_maybe_gz(&f)?, &f)?;
        set.pixels.extend(px);
        set.labels.extend(lb);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_gzipped_idx_pair_and_reports_mismatch() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("tweedie-ds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut im = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        im.extend([0, 64, 128, 255, 1, 2, 3, 4]);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&im).unwrap();
            e.finish().unwrap()
        };
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), &gz).unwrap();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 2, 7, 3],
        )
        .unwrap();
        let set = load(DatasetKind::Mnist, Split::Train, &dir).unwrap();
        assert_eq!(set.shape, [1, 2, 2]);
        assert_eq!(set.labels, vec![7, 3]);
        assert_eq!(set.image(1), &[1, 2, 3, 4]);
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 1, 7],
        )
        .unwrap();
        let e = load(DatasetKind::Mnist, Split::Train, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 labels for 2 images"), "{e}");
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), &gz[..gz.len() / 2]).unwrap();
        let e = load(DatasetKind::Mnist, Split::Train, &dir)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train-images-idx3-ubyte.gz") && e.contains("gzip"),
            "{e}"
        );
        assert!(
            load(DatasetKind::Mnist, Split::Test, &dir)
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
