//! Every reader of outside bytes on random and mutated inputs: a deterministic mutation fuzzer
//! (bit flips, interesting header values, truncation, splices, and for text files token swaps
//! such as `nan` or 2⁶⁴) seeded with valid files. No input may panic, and every failure is one
//! line that names the file. `fuzz/` holds cargo-fuzz targets of the same readers for longer,
//! coverage-guided runs (RELIABILITY.md); inputs that once failed live in
//! `testdata/fuzz-regressions/<reader>/` and are replayed here.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use tweedie_core::checkpoint::{self, CheckpointMeta, FORMAT_VERSION, ScheduleSpec, diffusers};
use tweedie_core::rng::Rng;
use tweedie_core::unet::{UNet, UNetConfig};
use tweedie_datasets::{cifar, folder, idx, read};
use tweedie_sample::class_cond::ClassFile;
use tweedie_sample::experiment::ExperimentFile;
use tweedie_sample::gmm_bench::GmmFile;
use tweedie_sample::output::{npy_bytes, parse_npy_u8};
use tweedie_sample::recon::ReconFile;
use tweedie_train::classify::ClassifierFile;
use tweedie_train::config::TrainFile;

/// Mutated inputs per reader (the weights reader, which builds a model per input, runs a tenth).
const ROUNDS: usize = 20_000;

const INTERESTING_U32: [u32; 9] = [
    0,
    1,
    0x7f,
    0xff,
    0x8000,
    60_000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];
const INTERESTING_TOKENS: [&str; 14] = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e308",
    "-1e308",
    "18446744073709551615",
    "4294967296",
    "2147483648",
    "\"x\"",
    "[]",
    "{}",
    "true",
];

struct Mutator(Rng);

impl Mutator {
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.0.below(v.len())]
    }

    /// One to four random byte-level edits of `seed`, sometimes spliced with another seed.
    fn bytes(&mut self, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let mut v = seed.to_vec();
        if self.0.below(50) == 0 {
            let n = self.0.below(64);
            return (0..n).map(|_| self.0.below(256) as u8).collect();
        }
        for _ in 0..1 + self.0.below(4) {
            let len = v.len();
            match self.0.below(9) {
                0 if len > 0 => {
                    let i = self.0.below(len);
                    v[i] ^= 1 << self.0.below(8);
                }
                1 if len > 0 => {
                    let i = self.0.below(len);
                    v[i] = *self.pick(&[0u8, 1, 0x7f, 0x80, 0xff]);
                }
                2 if len >= 4 => {
                    let i = self.0.below(len - 3);
                    let x = *self.pick(&INTERESTING_U32);
                    let b = if self.0.below(2) == 0 {
                        x.to_be_bytes()
                    } else {
                        x.to_le_bytes()
                    };
                    v[i..i + 4].copy_from_slice(&b);
                }
                3 => v.truncate(self.0.below(len + 1)),
                4 if len > 0 => {
                    let a = self.0.below(len);
                    let b = (a + 1 + self.0.below(16)).min(len);
                    v.drain(a..b);
                }
                5 => {
                    let at = self.0.below(len + 1);
                    let n = 1 + self.0.below(16);
                    let ins: Vec<u8> = (0..n).map(|_| self.0.below(256) as u8).collect();
                    v.splice(at..at, ins);
                }
                6 if len > 0 => {
                    let a = self.0.below(len);
                    let b = (a + 1 + self.0.below(64)).min(len);
                    let chunk = v[a..b].to_vec();
                    let at = self.0.below(v.len() + 1);
                    v.splice(at..at, chunk);
                }
                7 if !others.is_empty() => {
                    let o = self.pick(others).clone();
                    let cut = self.0.below(v.len() + 1);
                    let from = self.0.below(o.len() + 1);
                    v.truncate(cut);
                    v.extend_from_slice(&o[from..]);
                }
                _ => {}
            }
        }
        v
    }

    /// Text edits (numbers and values swapped for interesting tokens, lines dropped or
    /// repeated), then sometimes a byte edit.
    fn text(&mut self, seed: &str, others: &[Vec<u8>]) -> Vec<u8> {
        let mut lines: Vec<String> = seed.lines().map(String::from).collect();
        for _ in 0..1 + self.0.below(3) {
            if lines.is_empty() {
                break;
            }
            let i = self.0.below(lines.len());
            match self.0.below(4) {
                0 | 1 => {
                    if let Some((k, _)) = lines[i].split_once('=') {
                        let tok = *self.pick(&INTERESTING_TOKENS);
                        lines[i] = format!("{k}= {tok}");
                    }
                }
                2 => {
                    lines.remove(i);
                }
                _ => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
            }
        }
        let text = lines.join("\n");
        if self.0.below(3) == 0 {
            self.bytes(text.as_bytes(), others)
        } else {
            text.into_bytes()
        }
    }
}

/// What a reader said about one input.
type Outcome = Result<(), String>;

/// Runs `read` on `input` under `catch_unwind`; a panic or a multi-line error fails the test,
/// naming the reader and saving the input under `target/fuzz-failures/<reader>/`.
fn check(reader: &str, input: &[u8], must_name: Option<&str>, read: &dyn Fn(&[u8]) -> Outcome) {
    let outcome = catch_unwind(AssertUnwindSafe(|| read(input)));
    let problem = match &outcome {
        Err(_) => Some("panicked".to_string()),
        Ok(Err(msg)) if msg.contains('\n') => Some(format!("gave a multi-line error: {msg}")),
        Ok(Err(msg)) if must_name.is_some_and(|n| !msg.contains(n)) => {
            Some(format!("gave an error that does not name the file: {msg}"))
        }
        _ => None,
    };
    if let Some(p) = problem {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("fuzz-failures")
            .join(reader);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{:016x}", fxhash(input)));
        std::fs::write(&file, input).unwrap();
        panic!(
            "{reader} {p} on a {}-byte input (saved to {})",
            input.len(),
            file.display()
        );
    }
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Feeds `rounds` mutations of `seeds` (plus the seeds and every saved regression input of
/// `reader`) to `read`.
fn fuzz(
    reader: &str,
    seeds: &[Vec<u8>],
    textual: bool,
    rounds: usize,
    must_name: Option<&str>,
    read: &dyn Fn(&[u8]) -> Outcome,
) -> usize {
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fuzz-regressions")
        .join(reader);
    let mut saved: Vec<Vec<u8>> = std::fs::read_dir(&regressions)
        .map(|d| {
            d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    saved.extend(seeds.iter().cloned());
    for input in &saved {
        check(reader, input, must_name, read);
    }
    let mut m = Mutator(Rng::new(fxhash(reader.as_bytes())));
    for _ in 0..rounds {
        let seed = m.pick(seeds).clone();
        let input = match std::str::from_utf8(&seed) {
            Ok(text) if textual => m.text(text, seeds),
            _ => m.bytes(&seed, seeds),
        };
        check(reader, &input, must_name, read);
    }
    saved.len() + rounds
}

fn err_line<E: std::fmt::Display>(r: Result<impl Sized, E>) -> Outcome {
    r.map(|_| ()).map_err(|e| e.to_string())
}

fn anyhow_line(r: anyhow::Result<impl Sized>) -> Outcome {
    r.map(|_| ()).map_err(|e| format!("{e:#}"))
}

fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn binary_readers_never_panic_and_name_the_file() {
    let p = Path::new("data/f.bin");
    let images = idx_file(&[3, 4, 4], &[7; 48]);
    let labels = idx_file(&[3], &[1, 2, 3]);
    let n = fuzz(
        "idx",
        &[
            images.clone(),
            labels.clone(),
            idx_file(&[2, 2], &[1, 2, 3, 4]),
        ],
        false,
        ROUNDS,
        Some("f.bin"),
        &|b| err_line(idx::parse_idx(b, p)),
    );
    let gz = [gzip(&images), gzip(&labels)];
    let n_gz = fuzz("gzip-idx", &gz, false, ROUNDS, Some("f.bin"), &|b| {
        err_line(read::decompress_maybe_gz(b.to_vec(), p).and_then(|d| idx::parse_idx(&d, p)))
    });
    let mut rec = vec![3u8];
    rec.extend((0..cifar::RECORD - 1).map(|i| i as u8));
    let two: Vec<u8> = rec.iter().chain(rec.iter()).copied().collect();
    let n_cifar = fuzz("cifar", &[rec, two], false, ROUNDS, Some("f.bin"), &|b| {
        err_line(cifar::parse_cifar(b, p))
    });
    let png = |img: image::DynamicImage| {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let pngs = [
        png(image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 9])).into()),
        png(image::GrayImage::from_fn(4, 4, |x, _| image::Luma([x as u8 * 40])).into()),
    ];
    let n_png = fuzz("png", &pngs, false, ROUNDS / 3, Some("f.bin"), &|b| {
        err_line(folder::decode_image(b, 1 + 2 * (b.len() % 2), p))
    });
    let npys = [
        npy_bytes(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 1]),
        npy_bytes(&[9; 12], &[2, 2, 3]),
    ];
    let n_npy = fuzz("npy", &npys, false, ROUNDS, None, &|b| {
        parse_npy_u8(b).map(|_| ())
    });
    eprintln!("inputs run: idx {n}, gzip+idx {n_gz}, cifar {n_cifar}, png {n_png}, npy {n_npy}");
}

/// A U-Net small enough to load hundreds of times.
fn small_unet() -> UNetConfig {
    UNetConfig::new(1, 8, 32, vec![1], 1, vec![], 0.0)
}

/// Metadata of a small unconditional checkpoint at step 1.
fn small_meta() -> CheckpointMeta {
    CheckpointMeta {
        format: FORMAT_VERSION,
        step: 1,
        unet: small_unet(),
        schedule: ScheduleSpec::Linear {
            timesteps: 50,
            beta_start: 1e-4,
            beta_end: 0.02,
        },
        dataset: "mnist".into(),
        sampling: None,
        observation: None,
    }
}

#[test]
fn checkpoint_readers_never_panic_and_name_the_file() {
    let p = Path::new("run/step-00000001/checkpoint.json");
    let meta = small_meta();
    let json = serde_json::to_string_pretty(&meta).unwrap();
    let n_meta = fuzz(
        "checkpoint-meta",
        &[json.into_bytes()],
        true,
        ROUNDS,
        Some("checkpoint.json"),
        &|b| {
            // A header that passes must describe a model whose parameter count a real weights
            // file bounds before anything is allocated (checkpoint::check_weights_fit).
            err_line(checkpoint::parse_meta(b, p).map(|m| m.unet.num_params()))
        },
    );
    let cmeta = tweedie_core::classifier::ClassifierMeta {
        config: tweedie_core::classifier::ClassifierConfig::mnist(),
        steps: 10,
        test_accuracy: 0.5,
    };
    let n_cmeta = fuzz(
        "classifier-meta",
        &[serde_json::to_vec_pretty(&cmeta).unwrap()],
        true,
        ROUNDS,
        Some("checkpoint.json"),
        &|b| err_line(tweedie_core::classifier::parse_meta(b, p)),
    );
    let dev = Device::flex();
    let model: UNet = small_unet().init(&dev);
    let weights = checkpoint::module_bytes(model.clone()).unwrap();
    let wp = Path::new("run/step-00000001/model.bpk");
    let n_w = fuzz(
        "weights",
        &[weights],
        false,
        ROUNDS / 10,
        Some("model.bpk"),
        &|b| err_line(checkpoint::load_module_bytes(model.clone(), b.to_vec(), wp)),
    );
    eprintln!("inputs run: checkpoint meta {n_meta}, classifier meta {n_cmeta}, weights {n_w}");
}

/// diffusers folders: the UNet's and the scheduler's `config.json`, and the weights (safetensors
/// through burn-store, PyTorch pickles through burn's reader) loaded against the committed
/// fixture's config.
#[test]
fn diffusers_readers_never_panic_and_name_the_file() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let fixture = testdata.join("diffusers");
    let unet_cfg = std::fs::read(fixture.join("unet/config.json")).unwrap();
    let sched_cfg = std::fs::read(fixture.join("scheduler/scheduler_config.json")).unwrap();
    let cp = Path::new("model/unet/config.json");
    let n_cfg = fuzz(
        "diffusers-config",
        std::slice::from_ref(&unet_cfg),
        true,
        ROUNDS,
        Some("config.json"),
        &|b| {
            let v: serde_json::Value =
                serde_json::from_slice(b).map_err(|e| format!("{}: {e}", cp.display()))?;
            err_line(diffusers::unet_config(&v, cp).map(|c| c.num_params()))
        },
    );
    let sp = Path::new("model/scheduler/scheduler_config.json");
    let n_sched = fuzz(
        "diffusers-scheduler",
        &[sched_cfg],
        true,
        ROUNDS,
        Some("scheduler_config.json"),
        &|b| {
            let v: serde_json::Value =
                serde_json::from_slice(b).map_err(|e| format!("{}: {e}", sp.display()))?;
            err_line(diffusers::scheduler(&v, sp))
        },
    );
    // Weights: each input is written as the weights file of a folder with the fixture's config.
    let dir = std::env::temp_dir().join(format!("tweedie-fuzz-diffusers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), &unet_cfg).unwrap();
    let dev = Device::flex();
    let load_as = |name: &str, b: &[u8]| -> Outcome {
        let file = dir.join(name);
        std::fs::write(&file, b).unwrap();
        let r = diffusers::read(&dir).and_then(|m| diffusers::load(&m, &dev));
        std::fs::remove_file(&file).unwrap();
        err_line(r)
    };
    let safetensors =
        std::fs::read(fixture.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let n_st = fuzz(
        "safetensors",
        &[safetensors],
        false,
        ROUNDS / 10,
        Some("diffusion_pytorch_model.safetensors"),
        &|b| load_as("diffusion_pytorch_model.safetensors", b),
    );
    let pickles: Vec<Vec<u8>> = ["state-dict.bin", "state-dict-legacy.bin"]
        .iter()
        .map(|f| std::fs::read(testdata.join("torch").join(f)).unwrap())
        .collect();
    let n_bin = fuzz(
        "torch-pickle",
        &pickles,
        false,
        ROUNDS / 4,
        Some("diffusion_pytorch_model.bin"),
        &|b| load_as("diffusion_pytorch_model.bin", b),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "inputs run: diffusers config {n_cfg}, scheduler {n_sched}, safetensors {n_st}, pickle {n_bin}"
    );
}

fn preset(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../experiments")
            .join(name),
    )
    .unwrap()
}

#[test]
fn experiment_files_never_panic_and_errors_are_one_line() {
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    let train = [
        preset("mnist-tiny.toml"),
        preset("cifar10.toml"),
        preset("mnist.toml"),
    ];
    let n_train = fuzz("train-toml", &train, true, ROUNDS, None, &|b| {
        anyhow_line(TrainFile::parse(&text(b)).and_then(|f| f.resolve("fuzz")))
    });
    let recon: Vec<Vec<u8>> = [
        "mnist-sr4.toml",
        "mnist-inpaint-box.toml",
        "mnist-inpaint-random.toml",
        "mnist-deblur.toml",
        "mnist-denoise.toml",
    ]
    .iter()
    .map(|n| preset(n))
    .collect();
    let n_recon = fuzz("recon-toml", &recon, true, ROUNDS, None, &|b| {
        anyhow_line(ReconFile::parse(&text(b)).and_then(|f| {
            f.validate()?;
            f.operator(28, 28)?;
            f.noise_model()
        }))
    });
    let gmm = [preset("gmm-2mode.toml"), preset("gmm-25mode-d8.toml")];
    let n_gmm = fuzz("gmm-toml", &gmm, true, ROUNDS, None, &|b| {
        anyhow_line(GmmFile::parse(&text(b)).and_then(|f| f.build()))
    });
    let n_class = fuzz(
        "class-toml",
        &[preset("mnist-class.toml")],
        true,
        ROUNDS,
        None,
        &|b| anyhow_line(ClassFile::parse(&text(b))),
    );
    let classifier = [preset("mnist-classifier.toml")];
    let n_classifier = fuzz("classifier-toml", &classifier, true, ROUNDS, None, &|b| {
        anyhow_line(ClassifierFile::parse(&text(b)).and_then(|f| f.validate()))
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let all: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let n_kind = fuzz("experiment-kind", &all, true, ROUNDS, None, &|b| {
        anyhow_line(tweedie_sample::experiment::kind_of(&text(b)))
    });
    eprintln!(
        "inputs run: train {n_train}, reconstruction {n_recon}, gmm {n_gmm}, class {n_class}, \
         classifier {n_classifier}, kind {n_kind}"
    );
}

/// Headers that claim more than the file holds are refused before anything of that size is
/// allocated (the allocation itself is what cargo-fuzz's -malloc_limit_mb watches; here the
/// errors are checked).
#[test]
fn headers_claiming_huge_sizes_are_refused() {
    let p = Path::new("f");
    let e = idx::parse_idx(&idx_file(&[0x8000_0000, 28, 28], &[0; 100]), p).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let mut npy = npy_bytes(&[0; 4], &[1, 2, 2, 1]);
    let at = npy.windows(12).position(|w| w == b"(1, 2, 2, 1)").unwrap();
    npy.splice(at..at + 12, b"(2147483648, 28, 28, 1)".iter().copied());
    assert!(parse_npy_u8(&npy).is_err());
    let mut meta = serde_json::to_value(CheckpointMeta {
        format: FORMAT_VERSION,
        step: 1,
        unet: small_unet(),
        schedule: ScheduleSpec::Linear {
            timesteps: 1 << 40,
            beta_start: 1e-4,
            beta_end: 0.02,
        },
        dataset: "mnist".into(),
        sampling: None,
        observation: None,
    })
    .unwrap();
    let e = checkpoint::parse_meta(meta.to_string().as_bytes(), p).unwrap_err();
    assert!(e.to_string().contains("timesteps"), "{e}");
    meta["schedule"]["timesteps"] = 50.into();
    meta["unet"]["ch"] = (1u64 << 30).into();
    let e = checkpoint::parse_meta(meta.to_string().as_bytes(), p).unwrap_err();
    assert!(e.to_string().contains("implausible"), "{e}");
    // A plausible header with a weights file too small for it.
    let dir = std::env::temp_dir().join(format!("tweedie-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.bpk"), [0u8; 1000]).unwrap();
    let e =
        checkpoint::check_weights_fit(&dir.join("model.bpk"), UNetConfig::cifar10().num_params())
            .unwrap_err();
    assert!(e.to_string().contains("cannot hold"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Seeds for the cargo-fuzz targets (RELIABILITY.md): one valid input per reader, written to
/// `fuzz/corpus/<target>/`. Run by hand: `cargo test --release -p tweedie-train --test readers
/// -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let images = idx_file(&[3, 4, 4], &[7; 48]);
    put("idx", "images", &images);
    put("idx", "labels", &idx_file(&[3], &[1, 2, 3]));
    put("gzip_idx", "images.gz", &gzip(&images));
    let mut rec = vec![3u8];
    rec.extend((0..cifar::RECORD - 1).map(|i| i as u8));
    put("cifar", "one-record", &rec);
    let mut png = Vec::new();
    image::DynamicImage::from(image::RgbImage::from_fn(5, 3, |x, y| {
        image::Rgb([x as u8, y as u8, 9])
    }))
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    put("png", "rgb.png", &png);
    put(
        "npy",
        "samples.npy",
        &npy_bytes(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 1]),
    );
    for (target, file) in [
        ("train_toml", "mnist-tiny.toml"),
        ("recon_toml", "mnist-sr4.toml"),
        ("gmm_toml", "gmm-2mode.toml"),
        ("class_toml", "mnist-class.toml"),
    ] {
        put(target, file, &preset(file));
    }
    let meta = small_meta();
    put(
        "checkpoint_meta",
        "checkpoint.json",
        &serde_json::to_vec_pretty(&meta).unwrap(),
    );
    let cmeta = tweedie_core::classifier::ClassifierMeta {
        config: tweedie_core::classifier::ClassifierConfig::mnist(),
        steps: 10,
        test_accuracy: 0.5,
    };
    put(
        "classifier_meta",
        "classifier.json",
        &serde_json::to_vec_pretty(&cmeta).unwrap(),
    );
    let model: UNet = small_unet().init(&Device::flex());
    put(
        "weights",
        "model.bpk",
        &checkpoint::module_bytes(model).unwrap(),
    );
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let copy = |target: &str, file: &str| {
        let f = testdata.join(file);
        put(
            target,
            f.file_name().unwrap().to_str().unwrap(),
            &std::fs::read(&f).unwrap(),
        );
    };
    copy("diffusers_config", "diffusers/unet/config.json");
    copy(
        "diffusers_config",
        "diffusers/scheduler/scheduler_config.json",
    );
    copy(
        "safetensors",
        "diffusers/unet/diffusion_pytorch_model.safetensors",
    );
    copy("torch_pickle", "torch/state-dict.bin");
    copy("torch_pickle", "torch/state-dict-legacy.bin");
}
