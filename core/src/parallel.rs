//! Data parallelism across a CPU's cores inside one process. A batch of B images is split into
//! `k` contiguous shards; each shard runs on its own OS thread with the backend confined to one
//! core (more generally, an equal share of the cores).
//!
//! - Training ([`loss_and_grads`]): each shard's forward and backward pass runs against its own
//!   fork of the model (fresh autodiff leaves, the same parameter ids, so burn keeps k independent
//!   graphs and runs the k backward passes concurrently); the gradients are summed. Shard j's
//!   loss is scaled by |shard j| / B, so for a loss that is a mean of per-sample terms (L_simple,
//!   the weighted losses; GroupNorm and everything else in the U-Net act per sample) the sum is
//!   the gradient of the full-batch loss, up to the floating-point summation order.
//! - Sampling ([`Sharded`]): a [`Denoiser`] wrapper that evaluates the shards concurrently and
//!   concatenates them; every sampler works through it unchanged.
//!
//! - Several devices ([`loss_and_grads_across`]): shard j's forward and backward pass runs on
//!   device j, on a fork of the model there, from a thread of its own; the per-device gradients
//!   are summed on the first device in device order, where the optimiser steps (burn-train's
//!   `OptimMainDevice` strategy).
//!
//! Why: at batch 32 on 2 cores, burn-flex parallelises each kernel over both cores and scales
//! only 1.65× from one core; k independent one-core passes scale nearly k× because they share
//! nothing but memory bandwidth (BENCHMARKS.md, "Data parallelism across cores").

use std::ops::Range;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use crate::denoiser::Denoiser;
use crate::device::BackendKind;

/// The contiguous ranges of `0..batch` of `k` shards, sizes differing by at most one; never an
/// empty shard (fewer shards when `batch < k`; `k = 0` counts as 1).
pub fn shard_ranges(batch: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, batch.max(1));
    let (base, extra) = (batch / k, batch % k);
    let mut start = 0;
    (0..k)
        .map(|j| {
            let len = base + usize::from(j < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// The rayon pools the shards run on, `threads` threads each, created on first use and kept for
/// the process (rebuilt only when `threads` changes): a persistent thread keeps its per-thread
/// state warm between steps (libtorch's oneDNN primitive caches are per thread; a fresh thread
/// per step made the `tch` split slower than no split).
fn worker_pools(k: usize, threads: usize) -> Vec<Arc<rayon::ThreadPool>> {
    type Pools = (usize, Vec<Arc<rayon::ThreadPool>>);
    static POOLS: Mutex<Pools> = Mutex::new((0, Vec::new()));
    let mut guard = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let (width, pools) = &mut *guard;
    if *width != threads {
        pools.clear();
        *width = threads;
    }
    while pools.len() < k {
        let j = pools.len();
        match rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("tweedie-shard-{j}-{i}"))
            .build()
        {
            Ok(pool) => pools.push(Arc::new(pool)),
            // No thread to be had: the shards that have a pool share them.
            Err(_) => break,
        }
    }
    pools.iter().take(k).cloned().collect()
}

/// Rows `r` of a batch (dimension 0): the tensor itself when `r` covers it all, so the one-shard
/// path runs exactly the operations of an unsharded one.
pub fn rows<const D: usize>(x: &Tensor<D>, r: &Range<usize>) -> Tensor<D> {
    if r.start == 0 && r.end == x.dims()[0] {
        x.clone()
    } else {
        x.clone().slice([r.clone()])
    }
}

/// Runs `f(j, range_j)` for every shard, concurrently when there is more than one, each with
/// an equal part of the backend's threads (one core each when there are as many shards as
/// cores); results in shard order. A panic in a shard is re-raised here.
pub fn run_shards<R, F>(backend: BackendKind, ranges: Vec<Range<usize>>, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize, Range<usize>) -> R + Sync,
{
    let k = ranges.len();
    let share = (backend.cpu_threads() / k.max(1)).max(1);
    // rayon backends take their width from the pool; libtorch from its own per-thread setting.
    let pools = if k > 1 {
        worker_pools(k, if backend.uses_rayon() { share } else { 1 })
    } else {
        Vec::new()
    };
    if pools.is_empty() {
        return ranges
            .into_iter()
            .enumerate()
            .map(|(j, r)| f(j, r))
            .collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .into_iter()
            .enumerate()
            .map(|(j, r)| {
                let pool = pools[j % pools.len()].clone();
                s.spawn(move || {
                    pool.install(move || {
                        backend.limit_threads_here(share);
                        f(j, r)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The full-batch loss value and its gradients with respect to `model`'s parameters, computed in
/// `k` shards run concurrently, one core each. `loss(model, j, range)` must return the mean of
/// per-sample terms over the samples in `range` (shard `j`). With `k = 1` or a GPU backend it is
/// the plain single pass: the same operations as `loss(model, 0, 0..batch).backward()`.
pub fn loss_and_grads<M, F>(
    backend: BackendKind,
    k: usize,
    model: &M,
    batch: usize,
    loss: F,
) -> (f64, GradientsParams)
where
    M: Module + Sync,
    F: Fn(&M, usize, Range<usize>) -> Tensor<1> + Sync,
{
    let ranges = shard_ranges(batch, if backend.is_cpu() { k } else { 1 });
    if ranges.len() == 1 {
        let l = loss(model, 0, 0..batch);
        let value = l.clone().into_scalar::<f32>() as f64;
        return (value, GradientsParams::from_grads(l.backward(), model));
    }
    let device = model
        .devices()
        .into_iter()
        .next()
        .expect("a model with parameters");
    let parts = run_shards(backend, ranges, |j, r| {
        let (value, grads, _) = shard_pass(model, &device, j, r, batch, &loss);
        (value, grads)
    });
    sum_shards(model, parts)
}

/// Shard `j`'s pass: `loss` on a fork of `model` on `device` (fresh autodiff leaves, the same
/// parameter ids), weighted by |r| / `batch` so that the shards' losses sum to the full batch's
/// mean; its value, gradients and times. Reading the value waits for the forward pass (on a node,
/// for the weights and the shard to arrive first).
fn shard_pass<M, F>(
    model: &M,
    device: &Device,
    j: usize,
    r: Range<usize>,
    batch: usize,
    loss: &F,
) -> (f64, GradientsParams, ShardTime)
where
    M: Module,
    F: Fn(&M, usize, Range<usize>) -> Tensor<1>,
{
    let start = Instant::now();
    let fork = model.clone().fork(device);
    let weight = r.len() as f64 / batch as f64;
    let l = loss(&fork, j, r).mul_scalar(weight);
    let value = l.clone().into_scalar::<f32>() as f64;
    let forward = start.elapsed().as_secs_f64();
    let grads = GradientsParams::from_grads(l.backward(), &fork);
    let backward = start.elapsed().as_secs_f64() - forward;
    (value, grads, ShardTime { forward, backward })
}

/// The shards' loss values and gradients (all on the model's device) summed, in shard order.
fn sum_shards<M: Module>(model: &M, parts: Vec<(f64, GradientsParams)>) -> (f64, GradientsParams) {
    let mut total = 0.0;
    let mut acc = GradientsAccumulator::<M>::new();
    for (value, grads) in parts {
        total += value;
        acc.accumulate(model, grads);
    }
    (total, acc.grads())
}

/// Rows `r` of `x` on `device` (a transfer only when `x` lives elsewhere).
pub fn rows_on<const D: usize>(x: &Tensor<D>, r: &Range<usize>, device: &Device) -> Tensor<D> {
    let part = rows(x, r);
    if &part.device() == device {
        part
    } else {
        part.to_device(device)
    }
}

/// The full-batch loss and the gradients of `model`'s parameters with the batch split across
/// `devices` (autodiff devices), one contiguous shard each, all passes running at once, each
/// from a thread of its own on a fork of the model on its device. `loss(fork, j, range)` gets
/// shard `j`'s fork and must return the mean of per-sample terms over `range`, computed on the
/// fork's device ([`rows_on`]).
///
/// The gradients are moved to the first device and summed there in device order, for one
/// optimiser step there (burn-train's `MultiDeviceOptim::OptimMainDevice`). Not `step_multi`:
/// it sums and updates each parameter on a device picked from its `ParamId`, which burn draws at
/// random in every process, so with devices of different backends the same seed would not give
/// the same weights twice (a resumed flex + ndarray run differed from the straight one in its
/// last digits).
///
/// A device that fails mid-step (a node server that died: burn's remote client panics on a
/// read that gets no answer) is an error naming its shard, not a panic; so is a device that has
/// not answered within `timeout` (a node that hangs with its connection open, which burn would
/// wait on for ever). Either way the caller's model and optimiser are untouched, since the step
/// had not been applied yet. The threads are not scoped, so that a hung one can be left behind:
/// it holds its own clones of the model and of `loss`, and ends when its connection does.
///
/// # Panics
/// When `devices` is empty.
pub fn loss_and_grads_across<M, F>(
    devices: &[Device],
    model: &M,
    batch: usize,
    timeout: Duration,
    loss: F,
) -> Result<Across, ShardFailure>
where
    M: Module + Send + 'static,
    F: Fn(&M, usize, Range<usize>) -> Tensor<1> + Send + Sync + 'static,
{
    let ranges = shard_ranges(batch, devices.len());
    let shards = ranges.len();
    let first = devices.first().expect("at least one device").clone();
    let loss = Arc::new(loss);
    let (tx, rx) = mpsc::channel();
    for (j, r) in ranges.into_iter().enumerate() {
        let (model, device, first) = (model.clone(), devices[j].clone(), first.clone());
        let (loss, tx) = (Arc::clone(&loss), tx.clone());
        std::thread::spawn(move || {
            // Moving the gradients off the device reads them: a device lost by then fails here.
            let part = quiet_panics(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let (value, grads, mut time) = shard_pass(&model, &device, j, r, batch, &*loss);
                    let moving = Instant::now();
                    let grads = grads.to_device(&first, &model);
                    time.backward += moving.elapsed().as_secs_f64();
                    (value, grads, time)
                }))
            });
            // Before answering: the step's optimiser then holds the only handles on the weights.
            drop((model, loss));
            // The receiver is gone only when the step already failed.
            let _ = tx.send((j, part.map_err(|p| panic_text(&*p))));
        });
    }
    drop(tx);
    // `recv_timeout` waits for ever when the deadline is past `Instant`'s range.
    let deadline = Instant::now().checked_add(timeout);
    let left = || {
        deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    };
    let mut parts: Vec<Option<(f64, GradientsParams, ShardTime)>> =
        (0..shards).map(|_| None).collect();
    for _ in 0..shards {
        match rx.recv_timeout(left()) {
            Ok((j, Ok(part))) => parts[j] = Some(part),
            Ok((j, Err(why))) => {
                return Err(ShardFailure {
                    shards: vec![j],
                    why,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let shards = (0..shards).filter(|&j| parts[j].is_none()).collect();
                let why = format!("no answer within {} s", timeout.as_secs_f64());
                return Err(ShardFailure { shards, why });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                unreachable!("every shard's thread sends once before it ends")
            }
        }
    }
    let (mut sums, mut times) = (Vec::with_capacity(shards), Vec::with_capacity(shards));
    for (value, grads, time) in parts.into_iter().map(|p| p.expect("every shard answered")) {
        sums.push((value, grads));
        times.push(time);
    }
    let (loss, grads) = sum_shards(model, sums);
    Ok(Across { loss, grads, times })
}

/// A step's loss and gradients across devices ([`loss_and_grads_across`]), and each device's
/// share of its time.
pub struct Across {
    pub loss: f64,
    pub grads: GradientsParams,
    pub times: Vec<ShardTime>,
}

/// Seconds of one device's shard in a step across devices, as seen from the training process:
/// `forward` until its loss value arrives (on a node: the weights and the shard sent, the forward
/// pass), `backward` from there until its gradients are on the first device (on a node: the
/// backward pass and the gradients' way back).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShardTime {
    pub forward: f64,
    pub backward: f64,
}

/// The shards whose devices failed during a step (the one that failed first, or every one that
/// had not answered by the step's deadline), and why.
#[derive(Debug, Clone)]
pub struct ShardFailure {
    pub shards: Vec<usize>,
    pub why: String,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let text = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the device failed".into());
    // burn's read errors carry advice for its API's callers before the cause,
    // `Execution(WHAT\nCaused by:\n  WHY)`: keep WHAT and WHY.
    let Some(i) = text.find("Execution(") else {
        return text.lines().next().unwrap_or_default().to_string();
    };
    let rest = &text[i + "Execution(".len()..];
    let mut lines = rest.lines().map(str::trim).filter(|l| !l.is_empty());
    let what = lines.next().unwrap_or_default();
    let why = match lines.next() {
        Some("Caused by:") => lines.next(),
        _ => None,
    };
    let text = match why {
        Some(why) => format!("burn: {what}: {why}"),
        None => format!("burn: {what}"),
    };
    // The `Execution(` opened above closes at the end of the text.
    text.strip_suffix(')').map(str::to_string).unwrap_or(text)
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's panics kept off stderr (their message becomes a
/// [`ShardFailure`], printed once as a one-line error), other threads' panics printed as before.
fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = f();
    QUIET.with(|q| q.set(false));
    out
}

/// A [`Denoiser`] evaluated in `k` shards of the batch, concurrently, one core each (CPU
/// backends); the outputs are concatenated in order. Same values as the inner denoiser up to the
/// kernels' summation order (each sample's ε̂ depends on that sample only).
pub struct Sharded<'a, D: ?Sized> {
    pub inner: &'a D,
    pub backend: BackendKind,
    pub shards: usize,
}

impl<D: Denoiser + Sync + ?Sized> Denoiser for Sharded<'_, D> {
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        let batch = x_t.dims()[0];
        let k = if self.backend.is_cpu() {
            self.shards
        } else {
            1
        };
        let ranges = shard_ranges(batch, k);
        if ranges.len() == 1 {
            return self.inner.eps(x_t, t);
        }
        let parts = run_shards(self.backend, ranges, |_, r| {
            self.inner.eps(rows(&x_t, &r), &t[r])
        });
        Tensor::cat(parts, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::l_simple;
    use crate::rng::Rng;
    use crate::schedule::{BetaSchedule, NoiseSchedule};
    use crate::unet::{UNet, UNetConfig};
    use burn::module::{ModuleVisitor, Param};

    #[test]
    fn a_failed_read_keeps_burns_cause_on_one_line() {
        let burn = "Can't read the data, the tensor might be on another device: \
                    Execution(An error happened during execution\nCaused by:\n  Failed to read \
                    tensor: connection closed (Io(reset)))";
        let text = panic_text(&burn.to_string());
        assert_eq!(
            text,
            "burn: An error happened during execution: Failed to read tensor: connection \
             closed (Io(reset))"
        );
        assert_eq!(panic_text(&"Execution(Io(x))"), "burn: Io(x)");
        assert_eq!(panic_text(&"plain\nsecond"), "plain");
    }

    /// Every parameter's gradient in `a` and `b`, side by side.
    struct Pairs<'a>(
        &'a GradientsParams,
        &'a GradientsParams,
        Vec<(Vec<f32>, Vec<f32>)>,
    );
    impl ModuleVisitor for Pairs<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let get = |g: &GradientsParams| {
                crate::host_values(g.get::<D>(p.id).expect("a gradient for every parameter"))
            };
            self.2.push((get(self.0), get(self.1)));
        }
    }

    fn net(device: &Device) -> UNet {
        UNetConfig::new(1, 8, 32, vec![1, 2], 1, vec![4], 0.0).init_seeded(device, 3)
    }

    #[test]
    fn shards_sum_to_the_gradient_of_the_whole_batch() {
        let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        for backend in [BackendKind::Flex, BackendKind::Ndarray] {
            let device = backend.device().unwrap().autodiff();
            let model = net(&device);
            let mut rng = Rng::new(9);
            // Batch 5 in 2 shards (3 + 2) and 3 shards (2 + 2 + 1): unequal shards need the
            // |shard| / B weights, not 1/k.
            let x0 = rng.normal_tensor([5, 1, 8, 8], &device);
            let eps = rng.normal_tensor([5, 1, 8, 8], &device);
            let t = [3, 999, 500, 42, 700];
            let run = |k| {
                loss_and_grads(backend, k, &model, 5, |m, _, r| {
                    l_simple(m, &schedule, rows(&x0, &r), &t[r.clone()], rows(&eps, &r))
                })
            };
            let (v1, g1) = run(1);
            for k in [2, 3] {
                let (vk, gk) = run(k);
                assert!(
                    (v1 - vk).abs() <= 1e-5 * v1.abs(),
                    "{backend}: loss {v1} vs {vk}"
                );
                let mut pairs = Pairs(&g1, &gk, Vec::new());
                model.visit(&mut pairs);
                let n: usize = pairs.2.iter().map(|(a, _)| a.len()).sum();
                assert_eq!(
                    n,
                    model.num_params(),
                    "{backend}: every parameter has a gradient"
                );
                // Relative to each tensor's largest gradient, with a floor for the tensors whose
                // gradients are all near zero (the zero-initialised output convolutions).
                let max_abs = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let global = pairs.2.iter().fold(0f32, |m, (a, _)| m.max(max_abs(a)));
                for (a, b) in &pairs.2 {
                    let tol = 1e-4 * max_abs(a) + 1e-7 * global;
                    let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(err <= tol, "{backend}, {k} shards: {err} > {tol}");
                }
            }
        }
    }

    #[test]
    fn a_sharded_denoiser_gives_the_same_eps() {
        let device = Device::flex();
        let model = net(&device);
        let x = Rng::new(4).normal_tensor([5, 1, 8, 8], &device);
        let t = [1, 2, 3, 4, 5];
        let whole = crate::host_values(model.eps(x.clone(), &t));
        for shards in [2, 3, 7] {
            let sharded = Sharded {
                inner: &model,
                backend: BackendKind::Flex,
                shards,
            };
            let parts = crate::host_values(sharded.eps(x.clone(), &t));
            assert_eq!(parts.len(), whole.len());
            let err = whole
                .iter()
                .zip(&parts)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-5, "{shards} shards: {err}");
        }
    }

    #[test]
    fn shards_cover_the_batch_in_order_without_empty_parts() {
        assert_eq!(shard_ranges(32, 2), vec![0..16, 16..32]);
        assert_eq!(shard_ranges(7, 3), vec![0..3, 3..5, 5..7]);
        assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
        assert_eq!(shard_ranges(5, 0), vec![0..5]);
        assert_eq!(shard_ranges(5, 1), vec![0..5]);
    }
}
