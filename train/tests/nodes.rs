//! Training across node servers (burn's remote backend) on loopback: the same steps as one
//! device, a node that is not there at the start, and a node killed mid-run.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use tweedie_core::checkpoint;
use tweedie_core::device::{BackendKind, DeviceSpec, NODE_CONNECT_TIMEOUT};
use tweedie_core::rng::Rng;
use tweedie_datasets::ImageSet;
use tweedie_sample::experiment::ExperimentFile;
use tweedie_train::config::TrainFile;
use tweedie_train::trainer::{self, RunOptions};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-nodes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// 64 random 1×8×8 "images".
fn data() -> ImageSet {
    let mut r = Rng::new(3);
    ImageSet {
        shape: [1, 8, 8],
        pixels: (0..64 * 64).map(|_| r.below(256) as u8).collect(),
        labels: vec![0; 64],
    }
}

fn plan(run_dir: &std::path::Path, steps: usize) -> tweedie_train::config::Plan {
    let text = format!(
        "kind = \"diffusion-training\"\nseed = 5\nrun_dir = \"{}\"\n[data]\ndataset = \"mnist\"\n\
         [model]\npreset = \"tiny\"\nch_mult = [1, 2]\ndropout = 0.0\n[diffusion]\ntimesteps = 50\n\
         [train]\nsteps = {steps}\nbatch_size = 4\nlr = 1e-3\nwarmup_steps = 3\nema_decay = 0.9\n\
         grad_clip = 1.0\ncheckpoint_every = 2\nkeep_last = 2\nlog_every = 1\nsample_every = 0\n",
        run_dir.display()
    );
    let mut p = TrainFile::parse(&text).unwrap().resolve("t").unwrap();
    p.unet.resolution = 8;
    p
}

fn opts(devices: &str, resume: Option<PathBuf>) -> RunOptions {
    RunOptions {
        backend: BackendKind::Flex,
        devices: if devices.is_empty() {
            Vec::new()
        } else {
            DeviceSpec::parse_list(devices).unwrap()
        },
        node_timeout: NODE_CONNECT_TIMEOUT,
        time_limit: None,
        resume,
        restart: false,
        progress: false,
        eval_data: None,
        score_fid: false,
        fid_cache: None,
    }
}

struct Collect(Vec<f32>);
impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.extend(
            p.val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap(),
        );
    }
}

fn weights<M: Module>(m: &M) -> Vec<f32> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// A node server on a free loopback port, in this process; its address.
fn node_in_process() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || tweedie_train::node::serve(listener, BackendKind::Flex));
    format!("remote:{addr}")
}

#[test]
fn training_across_two_loopback_nodes_follows_one_device() {
    let (a, b) = (tmp("one"), tmp("three"));
    let devices = format!("flex,{},{}", node_in_process(), node_in_process());
    let one = trainer::train(&plan(&a, 3), &data(), &opts("", None)).unwrap();
    let three = trainer::train(&plan(&b, 3), &data(), &opts(&devices, None)).unwrap();
    assert_eq!(one.losses.len(), 3);
    for (x, y) in one.losses.iter().zip(&three.losses) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "losses {x} vs {y}");
    }
    let (wa, wb) = (weights(&one.model), weights(&three.model));
    let err = wa
        .iter()
        .zip(&wb)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err < 1e-3, "weights differ by {err}");
    // A node that is not there: one line naming it, within the timeout.
    let c = tmp("absent");
    let mut o = opts("flex,remote:127.0.0.1:1", None);
    o.node_timeout = Duration::from_secs(2);
    let clock = Instant::now();
    let e = format!(
        "{:#}",
        trainer::train(&plan(&c, 3), &data(), &o).err().unwrap()
    );
    assert!(
        e.contains("node remote:127.0.0.1:1") && !e.contains('\n'),
        "{e}"
    );
    assert!(clock.elapsed() < Duration::from_secs(10));
    assert!(!c.exists(), "nothing is written before the devices answer");
    // The first device holds the model: it must be local.
    let e = format!(
        "{:#}",
        trainer::train(
            &plan(&c, 3),
            &data(),
            &opts("remote:127.0.0.1:1,flex", None)
        )
        .err()
        .unwrap()
    );
    assert!(e.contains("must be local"), "{e}");
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_node_killed_mid_run_stops_it_with_its_checkpoint_intact_and_the_run_resumes_without_it() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["node", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "node: serving flex on 127.0.0.1:PORT (…"
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let dir = tmp("killed");
    let run = {
        let (dir, devices) = (dir.clone(), format!("flex,remote:{addr}"));
        std::thread::spawn(move || {
            trainer::train(&plan(&dir, 10_000), &data(), &opts(&devices, None)).map(|_| ())
        })
    };
    // Kill the node once two checkpoints are written.
    let clock = Instant::now();
    while checkpoint::list_steps(&dir).map_or(0, |s| s.len()) < 2 {
        assert!(clock.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let e = format!("{:#}", run.join().unwrap().expect_err("the run stops"));
    eprintln!("{e}");
    assert!(
        e.contains(&format!("node remote:{addr}")) && e.contains("is intact") && !e.contains('\n'),
        "{e}"
    );
    // The newest checkpoint reads back, and the run goes on from it on the local device alone.
    let steps = checkpoint::list_steps(&dir).unwrap();
    let last = *steps.last().unwrap();
    let resumed = trainer::train(&plan(&dir, last + 2), &data(), &opts("", Some(dir.clone())));
    assert_eq!(resumed.unwrap().losses.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}
