//! FID and KID of generated images against a reference set on pytorch-fid's Inception-v3
//! (`sample fid --reference`, `[train] fid_every`): the numbers papers print for CIFAR-10.
//!
//! The reference is a dataset split, a folder of images, or statistics in an `.npz` file. A
//! dataset's or folder's statistics are computed once and cached as `.npz` beside pytorch-fid's
//! format: `mu` and `sigma` (what `pytorch_fid --save-stats` writes, so either program reads the
//! other's file), plus `features` (KID needs the features themselves) and `image_shape` (so a
//! sample set of another resolution is refused). The cache key hashes the weights file and the
//! reference images, so a changed file is never answered from a stale cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tweedie_core::device::BackendKind;
use tweedie_core::feature_stats::{FeatureStats, kid};
use tweedie_core::inception::Inception;
use tweedie_datasets::{DatasetKind, DatasetName, ImageSet, Split};

use crate::files::npz;
use crate::output::{npy_bytes_f32, npy_bytes_f64, npy_bytes_i64, parse_npy_f32, parse_npy_f64};

/// Where FID's reference statistics come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FidReference {
    /// The first `n` images of a dataset's split (0: all), read from `data_dir` or the default
    /// places.
    Dataset {
        kind: DatasetKind,
        split: Split,
        n: usize,
        data_dir: Option<PathBuf>,
    },
    /// Every PNG of a folder and its class sub-folders (read as RGB).
    Folder(PathBuf),
    /// Statistics already computed: an `.npz` with `mu` and `sigma` (pytorch-fid's) and, when
    /// Tweedie wrote it, `features` and `image_shape`.
    Stats(PathBuf),
}

impl FidReference {
    /// `--reference` as written: a path ending in `.npz`, an existing folder, or a dataset
    /// `NAME[:SPLIT]` (split `train` unless given: papers compare with the training set).
    pub fn parse(text: &str, n: usize, data_dir: Option<&Path>) -> Result<Self> {
        if text.ends_with(".npz") {
            return Ok(Self::Stats(PathBuf::from(text)));
        }
        if Path::new(text).is_dir() {
            return Ok(Self::Folder(PathBuf::from(text)));
        }
        let (name, split) = text.split_once(':').unwrap_or((text, "train"));
        let bad = |e: String| {
            anyhow::anyhow!(
                "--reference {text}: {e} (give a dataset NAME[:SPLIT], a folder of images or an \
                 .npz of statistics)"
            )
        };
        let name: DatasetName = tweedie_core::choice::parse(name).map_err(bad)?;
        if name == DatasetName::Folder {
            return Err(bad("a folder reference is given by its path".into()));
        }
        Ok(Self::Dataset {
            kind: name.kind(None),
            split: tweedie_core::choice::parse(split).map_err(bad)?,
            n,
            data_dir: data_dir.map(Path::to_path_buf),
        })
    }

    /// "cifar10 train (4000 images)", the folder's or the file's path.
    fn label(&self) -> String {
        match self {
            Self::Dataset { kind, split, .. } => format!("{} {}", kind.name(), split.name()),
            Self::Folder(p) | Self::Stats(p) => p.display().to_string(),
        }
    }

    /// The reference images, for a dataset or a folder (`None` for statistics).
    fn images(&self) -> Result<Option<ImageSet>> {
        Ok(match self {
            Self::Dataset {
                kind,
                split,
                n,
                data_dir,
            } => {
                let dir = tweedie_datasets::resolve_dir(*kind, data_dir.as_deref())?;
                let mut set = tweedie_datasets::load(*kind, *split, &dir)?;
                if *n > 0 {
                    set.truncate(*n);
                }
                Some(set)
            }
            Self::Folder(dir) => Some(tweedie_datasets::folder::load_folder(dir, 3)?),
            Self::Stats(_) => None,
        })
    }
}

/// A reference set's statistics.
pub struct ReferenceStats {
    pub stats: FeatureStats,
    /// The features themselves `[n, d]` (KID needs them); absent from pytorch-fid's files.
    pub features: Option<Vec<f32>>,
    /// `[C, H, W]` of the reference images, when known.
    pub image_shape: Option<[usize; 3]>,
}

impl ReferenceStats {
    /// The statistics of `n × d` features of images of `image_shape`.
    pub fn of(features: Vec<f32>, d: usize, image_shape: [usize; 3]) -> Self {
        Self {
            stats: FeatureStats::of(&features, d),
            features: Some(features),
            image_shape: Some(image_shape),
        }
    }

    /// Images in the reference (when its features are kept).
    pub fn n(&self) -> Option<usize> {
        self.features
            .as_ref()
            .map(|f| f.len() / self.stats.mean.len())
    }

    /// Writes them to `path` as `.npz` (mu, sigma as float64, as pytorch-fid; features float32).
    pub fn write(&self, path: &Path) -> Result<()> {
        let d = self.stats.mean.len();
        let sigma = self.stats.cov_row_major();
        let mut members = vec![
            ("mu", npy_bytes_f64(&self.stats.mean, &[d])),
            ("sigma", npy_bytes_f64(&sigma, &[d, d])),
        ];
        if let Some(f) = &self.features {
            members.push(("features", npy_bytes_f32(f, &[f.len() / d, d])));
        }
        if let Some(s) = self.image_shape {
            members.push(("image_shape", npy_bytes_i64(&s.map(|v| v as i64), &[3])));
        }
        npz::write(path, &members)
    }

    /// Reads an `.npz` of statistics (pytorch-fid's or Tweedie's): `mu` (d) and `sigma` (d × d)
    /// finite, `features` and `image_shape` when present.
    pub fn read(path: &Path) -> Result<Self> {
        let members = npz::read(path)?;
        let bad = |e: String| anyhow::anyhow!("{}: {e}", path.display());
        let member = |k: &str| {
            members
                .get(k)
                .ok_or_else(|| bad(format!("no `{k}` (FID statistics hold `mu` and `sigma`)")))
        };
        let (mean, dm) = parse_npy_f64(member("mu")?).map_err(|e| bad(format!("mu: {e}")))?;
        let (sigma, ds) =
            parse_npy_f64(member("sigma")?).map_err(|e| bad(format!("sigma: {e}")))?;
        let d = mean.len();
        if dm.len() != 1 || ds != [d, d] {
            bail!(
                "{}: mu has shape {dm:?} and sigma {ds:?}; they should be (d,) and (d, d)",
                path.display()
            );
        }
        finite(&mean, "mu").map_err(bad)?;
        finite(&sigma, "sigma").map_err(bad)?;
        let features = match members.get("features") {
            Some(b) => {
                let (f, dims) = parse_npy_f32(b).map_err(|e| bad(format!("features: {e}")))?;
                if dims.len() != 2 || dims[1] != d || dims[0] < 2 {
                    bail!(
                        "{}: features have shape {dims:?}, not (n ≥ 2, {d})",
                        path.display()
                    );
                }
                finite(&f, "features").map_err(bad)?;
                Some(f)
            }
            None => None,
        };
        let image_shape = match members.get("image_shape") {
            Some(b) => {
                let (s, _) = crate::output::parse_npy_i64(b)
                    .map_err(|e| bad(format!("image_shape: {e}")))?;
                let s: [i64; 3] = s
                    .try_into()
                    .map_err(|_| bad("image_shape should hold C, H, W".into()))?;
                Some(s.map(|v| v.max(0) as usize))
            }
            None => None,
        };
        Ok(Self {
            stats: FeatureStats::from_moments(mean, &sigma),
            features,
            image_shape,
        })
    }
}

fn finite<T: Into<f64> + Copy>(v: &[T], what: &str) -> std::result::Result<(), String> {
    match v.iter().position(|x| !(*x).into().is_finite()) {
        Some(i) => Err(format!("{what}[{i}] is {}", v[i].into())),
        None => Ok(()),
    }
}

/// Inception's images per second on 2 CPU cores (BENCHMARKS.md: 10,000 CIFAR-10 images in
/// 770.8 s), for the costs said up front.
pub const CPU_IMAGES_PER_SECOND: f64 = 13.0;

/// pool3 features `[n, d]` (d = 2048 for the published network) of `n` RGB images `[3, h, w]`, 32 at a time: `batch(s, e)` gives
/// images s..e on [0, 1] (N×C×H×W), `tick(k)` reports k more done.
pub fn features_of(
    net: &Inception,
    n: usize,
    [c, h, w]: [usize; 3],
    batch: impl Fn(usize, usize) -> Vec<f32>,
    mut tick: impl FnMut(usize),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * net.width());
    for s in (0..n).step_by(32) {
        let e = (s + 32).min(n);
        out.extend(tweedie_core::host_values(
            net.features(&batch(s, e), [e - s, c, h, w]),
        ));
        tick(e - s);
    }
    out
}

/// [`features_of`] `n` images on the model's [−1, 1] scale, `[n, c, h, w]` flattened in that order
/// (what `read_images` gives).
pub fn features_of_model_scale(
    net: &Inception,
    images: &[f32],
    [n, c, h, w]: [usize; 4],
    tick: impl FnMut(usize),
) -> Vec<f32> {
    let per = c * h * w;
    features_of(
        net,
        n,
        [c, h, w],
        |s, e| {
            images[s * per..e * per]
                .iter()
                .map(|v| (v + 1.0) * 0.5)
                .collect()
        },
        tick,
    )
}

/// [`features_of`] `n` uint8 images whose pixel (image i, channel ch, row y, column x) is
/// `pixel(i, ch, y, x)` (any memory layout read in place), as v / 255 (pytorch-fid's `ToTensor`).
pub fn features_of_u8(
    net: &Inception,
    n: usize,
    [c, h, w]: [usize; 3],
    pixel: impl Fn(usize, usize, usize, usize) -> u8,
    tick: impl FnMut(usize),
) -> Vec<f32> {
    features_of(
        net,
        n,
        [c, h, w],
        |s, e| {
            let mut out = Vec::with_capacity((e - s) * c * h * w);
            for i in s..e {
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            out.push(pixel(i, ch, y, x) as f32 / 255.0);
                        }
                    }
                }
            }
            out
        },
        tick,
    )
}

/// [`features_of_u8`] the images of a dataset (uint8 CHW).
pub fn features_of_set(net: &Inception, set: &ImageSet, tick: impl FnMut(usize)) -> Vec<f32> {
    let [_, h, w] = set.shape;
    features_of_u8(
        net,
        set.len(),
        set.shape,
        |i, ch, y, x| set.image(i)[(ch * h + y) * w + x],
        tick,
    )
}

/// A CRC-32 of `bytes`, as hex: the cache key's parts.
fn crc(bytes: &[u8]) -> String {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    format!("{:08x}", c.sum())
}

/// How reference statistics are computed and kept.
pub struct ReferenceOptions<'a> {
    pub net: &'a Inception,
    /// The weights file `net` was read from (part of the cache key).
    pub weights: &'a Path,
    /// Directory of cached statistics (`None`: compute every time).
    pub cache: Option<PathBuf>,
    pub quiet: bool,
}

/// The default cache of reference statistics: `~/.cache/tweedie/fid`.
pub fn default_cache() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tweedie/fid"))
}

/// The statistics of `reference`: read (statistics), from the cache, or computed from its images
/// (then cached). Returns them and whether they were read rather than computed.
pub fn reference_stats(
    reference: &FidReference,
    o: &ReferenceOptions,
) -> Result<(ReferenceStats, bool)> {
    let name = match reference {
        FidReference::Dataset { kind, split, .. } => format!("{}-{}", kind.name(), split.name()),
        FidReference::Folder(_) => "folder".into(),
        FidReference::Stats(p) => return Ok((ReferenceStats::read(p)?, true)),
    };
    let set = reference
        .images()?
        .expect("a dataset or a folder has images");
    stats_of_set(&set, &reference.label(), &name, o)
}

/// The statistics of the images of `set` (`label` names it in messages, `name` starts its cache
/// file's name): from the cache, or computed (then cached). Returns them and whether the cache
/// answered.
pub fn stats_of_set(
    set: &ImageSet,
    label: &str,
    name: &str,
    o: &ReferenceOptions,
) -> Result<(ReferenceStats, bool)> {
    if set.shape[0] != 3 {
        bail!(
            "{label}: Inception takes RGB images, these have {} channels",
            set.shape[0]
        );
    }
    if set.len() < 2 {
        bail!("{label}: need at least 2 reference images");
    }
    let weights = std::fs::read(o.weights)
        .with_context(|| format!("{}: cannot read", o.weights.display()))?;
    let pixels: Vec<u8> = (0..set.len()).flat_map(|i| set.image(i).to_vec()).collect();
    let file = format!(
        "{name}-{}-{}-{}.npz",
        set.len(),
        crc(&pixels),
        crc(&weights)
    );
    let cached = o.cache.as_ref().map(|d| d.join(&file));
    if let Some(p) = cached.as_ref().filter(|p| p.is_file()) {
        return Ok((ReferenceStats::read(p)?, true));
    }
    let bar = crate::progress::bar(
        set.len(),
        o.quiet,
        "  reference features [{bar:30}] {pos}/{len} images ETA {eta}",
    );
    crate::progress::say(
        &bar,
        format!(
            "Inception features of the {} reference images of {label} (once; about {:.0} s at \
             {CPU_IMAGES_PER_SECOND} images/s on 2 CPU cores){}",
            set.len(),
            set.len() as f64 / CPU_IMAGES_PER_SECOND,
            match &cached {
                Some(p) => format!(", cached in {}", p.display()),
                None => String::new(),
            }
        ),
    );
    let f = features_of_set(o.net, set, |k| bar.inc(k as u64));
    bar.finish_and_clear();
    let stats = ReferenceStats::of(f, o.net.width(), set.shape);
    if let (Some(dir), Some(p)) = (&o.cache, &cached) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        stats.write(p)?;
    }
    Ok((stats, false))
}

/// FID of the sample features `f` (`[n, d]`, d the reference's) against `r`, and KID (mean and
/// standard deviation over `subsets` random subsets of `subset_size` rows drawn from `seed`)
/// when the reference keeps its features.
pub fn fid_kid(
    f: &[f32],
    r: &ReferenceStats,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> (f64, Option<(f64, f64)>) {
    let d = r.stats.mean.len();
    let fid = FeatureStats::of(f, d).frechet(&r.stats);
    let kid = r.features.as_ref().map(|rf| {
        let mut rng = tweedie_core::rng::Rng::new(seed);
        kid(f, rf, d, subsets, subset_size, &mut rng)
    });
    (fid, kid)
}

/// What `sample fid --reference` needs besides the samples and the reference.
pub struct FidOptions {
    /// pytorch-fid's weights file (else [`tweedie_core::inception::locate`]).
    pub weights: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    /// Also write the reference statistics here (`.npz`).
    pub save_stats: Option<PathBuf>,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    pub seed: u64,
    pub backend: BackendKind,
    pub quiet: bool,
}

/// The weights file: the one given, else the one found; the error says where it looked.
pub fn weights_file(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => tweedie_core::inception::locate().with_context(|| {
            format!(
                "no Inception weights: pass --weights, set TWEEDIE_INCEPTION, or put {} in \
                 ~/.cache/tweedie/inception/ or ~/.cache/torch/hub/checkpoints/ (pytorch-fid \
                 downloads it there)",
                tweedie_core::inception::WEIGHTS_FILE
            )
        }),
    }
}

/// FID (and KID, when the reference keeps its features) of the images in `samples` (float32
/// N×3×H×W on [−1, 1] or uint8 N×H×W×3) against `reference`: the JSON record `sample fid`
/// prints.
pub fn score_npy(
    samples: &Path,
    reference: &FidReference,
    o: &FidOptions,
) -> Result<serde_json::Value> {
    let (values, [n, c, h, w]) = crate::output::read_images(samples)?;
    if c != 3 {
        bail!(
            "{}: Inception takes RGB images, these have {c} channels (MNIST keeps its \
             classifier-FID: `sample fid` without --reference)",
            samples.display()
        );
    }
    if n < 2 {
        bail!("{}: need at least 2 samples, found {n}", samples.display());
    }
    if o.kid_subsets == 0 || o.kid_subset_size < 2 {
        bail!("--kid-subsets must be at least 1 and --kid-subset-size at least 2");
    }
    let weights = weights_file(o.weights.as_deref())?;
    let net = Inception::read(&weights, &o.backend.device()?)?;
    let clock = std::time::Instant::now();
    let ro = ReferenceOptions {
        net: &net,
        weights: &weights,
        cache: o.cache.clone(),
        quiet: o.quiet,
    };
    let (r, cached) = reference_stats(reference, &ro)?;
    if let Some(s) = r.image_shape
        && s != [c, h, w]
    {
        bail!(
            "{}: samples are {c}×{h}×{w}, the reference {} is {}×{}×{}: FID compares images of \
             one resolution",
            samples.display(),
            reference.label(),
            s[0],
            s[1],
            s[2]
        );
    }
    if r.stats.mean.len() != net.width() {
        bail!(
            "{}: the reference has {} features per image, this Inception's pool3 has {}",
            reference.label(),
            r.stats.mean.len(),
            net.width()
        );
    }
    if let Some(p) = &o.save_stats {
        r.write(p)?;
    }
    let bar = crate::progress::bar(
        n,
        o.quiet,
        "  sample features [{bar:30}] {pos}/{len} ETA {eta}",
    );
    let f = features_of_model_scale(&net, &values, [n, c, h, w], |k| bar.inc(k as u64));
    bar.finish_and_clear();
    let (fid, kid) = fid_kid(&f, &r, o.kid_subsets, o.kid_subset_size, o.seed);
    let (kid, kid_std, kid_note) = match kid {
        Some((k, s)) => (Some(k), Some(s), None),
        None => (
            None,
            None,
            Some("not computed: the reference file holds only mu and sigma"),
        ),
    };
    Ok(serde_json::json!({
        "samples": samples.display().to_string(),
        "n_samples": n,
        "reference": reference.label(),
        "n_reference": r.n(),
        "reference_cached": cached,
        "weights": weights.display().to_string(),
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "kid_note": kid_note,
        "kid_subsets": o.kid_subsets,
        "kid_subset_size": r.n().map(|m| o.kid_subset_size.min(m).min(n)),
        "seconds": clock.elapsed().as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_weights() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/inception")
            .join(tweedie_core::inception::WEIGHTS_FILE)
    }

    fn options(cache: Option<PathBuf>) -> FidOptions {
        FidOptions {
            weights: Some(fixture_weights()),
            cache,
            save_stats: None,
            kid_subsets: 4,
            kid_subset_size: 3,
            seed: 0,
            backend: BackendKind::Flex,
            quiet: true,
        }
    }

    /// Four 32×32 RGB images as PNGs in `dir` and as the uint8 N×H×W×C `.npy` `sample` writes.
    fn images(dir: &Path, seed: u32) -> PathBuf {
        std::fs::create_dir_all(dir.join("png")).unwrap();
        let mut all = Vec::new();
        for i in 0..4u32 {
            let px: Vec<u8> = (0..32 * 32 * 3u32)
                .map(|k| ((k * (7 + i + seed) + i * 31 + k / 96 * 5) % 251) as u8)
                .collect();
            image::RgbImage::from_raw(32, 32, px.clone())
                .unwrap()
                .save(dir.join(format!("png/{i}.png")))
                .unwrap();
            all.extend(px);
        }
        let npy = dir.join("samples.npy");
        std::fs::write(&npy, crate::output::npy_bytes(&all, &[4, 32, 32, 3])).unwrap();
        npy
    }

    #[test]
    fn references_parse_as_datasets_folders_and_statistics() {
        let r = FidReference::parse("cifar10", 0, None).unwrap();
        assert!(matches!(
            r,
            FidReference::Dataset {
                kind: DatasetKind::Cifar10,
                split: Split::Train,
                ..
            }
        ));
        let r = FidReference::parse("cifar10:test", 9, None).unwrap();
        assert!(matches!(
            r,
            FidReference::Dataset {
                split: Split::Test,
                n: 9,
                ..
            }
        ));
        assert_eq!(
            FidReference::parse("x/stats.npz", 0, None).unwrap(),
            FidReference::Stats("x/stats.npz".into())
        );
        let e = format!(
            "{:#}",
            FidReference::parse("imagenet", 0, None).unwrap_err()
        );
        assert!(
            e.contains("--reference imagenet") && !e.contains('\n'),
            "{e}"
        );
    }

    /// A folder reference against the same images as samples: FID 0 up to rounding, the
    /// statistics cached and read back equal, an `.npz` with only `mu` and `sigma` (pytorch-fid's)
    /// gives the same FID and says why there is no KID; another resolution and NaN statistics are
    /// one-line errors.
    #[test]
    fn folder_reference_is_cached_and_statistics_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("tweedie-ifid-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let samples = images(&dir, 0);
        let reference = FidReference::Folder(dir.join("png"));
        let cache = dir.join("cache");
        let first = score_npy(&samples, &reference, &options(Some(cache.clone()))).unwrap();
        assert_eq!(first["reference_cached"], false);
        let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(cached.len(), 1);
        let again = score_npy(&samples, &reference, &options(Some(cache.clone()))).unwrap();
        assert_eq!(again["reference_cached"], true);
        assert_eq!(again["fid"], first["fid"]);
        let net =
            Inception::read(&fixture_weights(), &BackendKind::Flex.device().unwrap()).unwrap();
        let set = tweedie_datasets::folder::load_folder(&dir.join("png"), 3).unwrap();
        let f = features_of_set(&net, &set, |_| {});
        let tr: f64 = {
            let s = FeatureStats::of(&f, net.width());
            s.cov_row_major().iter().step_by(net.width() + 1).sum()
        };
        let fid = first["fid"].as_f64().unwrap();
        assert!(
            fid.abs() <= 1e-6 * tr,
            "FID of a set with itself {fid} (tr Σ {tr})"
        );
        assert!(first["kid"].as_f64().unwrap().is_finite(), "{first}");

        // Only mu and sigma, as pytorch-fid saves them.
        let full = ReferenceStats::of(f, net.width(), set.shape);
        let d = net.width();
        let stats = dir.join("pytorch-fid.npz");
        npz::write(
            &stats,
            &[
                ("mu", npy_bytes_f64(&full.stats.mean, &[d])),
                ("sigma", npy_bytes_f64(&full.stats.cov_row_major(), &[d, d])),
            ],
        )
        .unwrap();
        let r = score_npy(
            &samples,
            &FidReference::Stats(stats.clone()),
            &options(None),
        )
        .unwrap();
        assert_eq!(r["fid"], first["fid"]);
        assert!(r["kid"].is_null() && r["kid_note"].as_str().unwrap().contains("only mu"));

        // A written file reads back to the same statistics.
        full.write(&stats).unwrap();
        let back = ReferenceStats::read(&stats).unwrap();
        assert_eq!(back.stats.mean, full.stats.mean);
        assert_eq!(back.stats.cov_row_major(), full.stats.cov_row_major());
        assert_eq!(back.features, full.features);
        assert_eq!(back.image_shape, Some([3, 32, 32]));

        // Samples of another resolution.
        let small = dir.join("small.npy");
        std::fs::write(
            &small,
            crate::output::npy_bytes(&[9u8; 2 * 16 * 16 * 3], &[2, 16, 16, 3]),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            score_npy(&small, &FidReference::Stats(stats.clone()), &options(None)).unwrap_err()
        );
        assert!(e.contains("one resolution") && !e.contains('\n'), "{e}");
        // NaN in sigma.
        let mut sigma = full.stats.cov_row_major();
        sigma[5] = f64::NAN;
        npz::write(
            &stats,
            &[
                ("mu", npy_bytes_f64(&full.stats.mean, &[d])),
                ("sigma", npy_bytes_f64(&sigma, &[d, d])),
            ],
        )
        .unwrap();
        let e = format!("{:#}", ReferenceStats::read(&stats).err().unwrap());
        assert!(e.contains("sigma[5] is NaN") && !e.contains('\n'), "{e}");
        // Not an archive.
        std::fs::write(&stats, b"mu sigma").unwrap();
        let e = format!("{:#}", ReferenceStats::read(&stats).err().unwrap());
        assert!(
            e.contains("not a readable .npz") && !e.contains('\n'),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
