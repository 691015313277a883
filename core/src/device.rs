//! Picking a backend at run time. burn 0.22 has no backend generic: a [`Device`] value chooses
//! the backend, and autodiff is a property of the device (`device.autodiff()`).

use burn::prelude::*;

use crate::error::CoreError;

/// The backends a Tweedie binary can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex: pure-Rust CPU backend (SIMD + rayon). The default unless the binary was built
    /// with `tch`: on the DDPM U-Net it trains many times faster than ndarray (see README).
    #[serde(alias = "cpu")]
    Flex,
    /// burn-ndarray: the older CPU backend (deprecated upstream in burn 0.22).
    Ndarray,
    /// burn-wgpu: GPUs through Vulkan/Metal/DX12/GL. Needs the `wgpu` cargo feature.
    #[serde(alias = "gpu")]
    Wgpu,
    /// burn-tch: libtorch's CPU kernels (oneDNN convolutions, OpenMP threads). Needs the `tch`
    /// cargo feature and a libtorch at build and run time (see BENCHMARKS.md).
    #[serde(alias = "libtorch")]
    Tch,
}

/// The fastest correct backend this binary has: libtorch's CPU kernels where it was built with
/// them (`tch`: 0.85–1.12× PyTorch against flex's 0.5–0.6×, BENCHMARKS.md), else flex. A GPU is
/// never the default: it is asked for (`--backend wgpu`), as its first call compiles shaders.
impl Default for BackendKind {
    fn default() -> Self {
        if cfg!(feature = "tch") {
            BackendKind::Tch
        } else {
            BackendKind::Flex
        }
    }
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Tch];

    /// The plain (inference) device of this backend. Errors if the binary was built without it.
    pub fn device(self) -> Result<Device, CoreError> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            BackendKind::Wgpu => wgpu_device(DeviceKind::DefaultDevice),
            BackendKind::Tch => tch_device(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Tch => "tch",
        }
    }
}

impl BackendKind {
    /// Whether the backend computes on the CPU's cores (and so can be split across them).
    pub fn is_cpu(self) -> bool {
        !matches!(self, BackendKind::Wgpu)
    }

    /// The threads this backend's kernels use from the calling thread: libtorch's intra-op
    /// threads (`OMP_NUM_THREADS`, else the cores), or the size of the rayon pool the caller runs
    /// in (`RAYON_NUM_THREADS`, else the cores).
    pub fn cpu_threads(self) -> usize {
        #[cfg(feature = "tch")]
        if self == BackendKind::Tch {
            return tch::get_num_threads().max(1) as usize;
        }
        rayon::current_num_threads()
    }

    /// Whether the backend's kernels get their threads from the rayon pool they are called from
    /// (flex, ndarray), rather than from a thread pool of their own (libtorch's OpenMP).
    pub fn uses_rayon(self) -> bool {
        matches!(self, BackendKind::Flex | BackendKind::Ndarray)
    }

    /// Sets libtorch's intra-op threads for kernels called from the current thread (OpenMP's
    /// setting is per thread); nothing for the other backends, whose width is the rayon pool's.
    pub fn limit_threads_here(self, n: usize) {
        #[cfg(feature = "tch")]
        if self == BackendKind::Tch {
            tch::set_num_threads(n.max(1) as i32);
        }
        let _ = n;
    }
}

/// One device of a multi-device run (`train --devices flex,ndarray`, `--devices wgpu:0,wgpu:1`,
/// `--devices flex,remote:10.0.0.2:7000`): a local backend and, for wgpu, which discrete GPU
/// (`wgpu` alone is the adapter wgpu picks); or a device of a node server on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Local {
        backend: BackendKind,
        index: Option<usize>,
    },
    Remote(Node),
}

/// A node server's address (`train node --bind HOST:PORT`) and the index of one of its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
    pub index: usize,
}

/// How long connecting to a node may take by default (`train --node-timeout`).
pub const NODE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a training step with nodes may take by default (`train --step-timeout`): ten
/// minutes, torch.distributed's default for NCCL collectives.
pub const NODE_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long the nodes of a run may take to answer: when it connects to them, and in a step
/// (a node that hangs with its connection open is otherwise waited on for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimeouts {
    pub connect: std::time::Duration,
    pub step: std::time::Duration,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        NodeTimeouts {
            connect: NODE_CONNECT_TIMEOUT,
            step: NODE_STEP_TIMEOUT,
        }
    }
}

impl DeviceSpec {
    /// The plain (inference) device; a node is connected to now, within
    /// [`NODE_CONNECT_TIMEOUT`]. Errors if the binary was built without the backend, or the node
    /// does not answer.
    pub fn device(&self) -> Result<Device, CoreError> {
        self.device_within(NODE_CONNECT_TIMEOUT)
    }

    /// As [`DeviceSpec::device`], a node given `timeout` to answer.
    pub fn device_within(&self, timeout: std::time::Duration) -> Result<Device, CoreError> {
        match self {
            DeviceSpec::Local {
                backend: BackendKind::Wgpu,
                index: Some(i),
            } => wgpu_device(DeviceKind::DiscreteGpu(*i)),
            DeviceSpec::Local { backend, .. } => backend.device(),
            DeviceSpec::Remote(node) => node.connect(timeout),
        }
    }

    /// The local backend (None for a node's device).
    pub fn backend(&self) -> Option<BackendKind> {
        match self {
            DeviceSpec::Local { backend, .. } => Some(*backend),
            DeviceSpec::Remote(_) => None,
        }
    }

    /// A local device of `backend`.
    pub fn local(backend: BackendKind) -> Self {
        DeviceSpec::Local {
            backend,
            index: None,
        }
    }

    /// A comma-separated list of devices, each named once.
    pub fn parse_list(s: &str) -> Result<Vec<DeviceSpec>, CoreError> {
        let specs = s
            .split(',')
            .map(|p| p.trim().parse())
            .collect::<Result<Vec<DeviceSpec>, _>>()?;
        for (i, a) in specs.iter().enumerate() {
            if specs[..i].contains(a) {
                return Err(CoreError::InvalidConfig(format!(
                    "`{a}` is named twice in the device list (each device takes one shard)"
                )));
            }
        }
        Ok(specs)
    }
}

impl Node {
    /// The node's WebSocket address.
    pub fn url(&self) -> String {
        format!("ws://{}:{}", self.host, self.port)
    }

    /// Connects to the node's device, giving up after `timeout` (burn's own connect has no
    /// timeout: a host that drops packets would hold it for the OS's TCP timeout, minutes).
    pub fn connect(&self, timeout: std::time::Duration) -> Result<Device, CoreError> {
        let (url, index) = (self.url(), self.index);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let host = burn::remote::RemoteHost::websocket(&url);
            let device = Device::remote_options(&host).device_index(index).init();
            let _ = tx.send(device.map_err(|e| format!("{e:?}")));
        });
        let err = |why: String| CoreError::Node {
            node: self.to_string(),
            why,
        };
        match rx.recv_timeout(timeout) {
            Ok(Ok(device)) => Ok(device),
            Ok(Err(why)) => Err(err(format!(
                "unreachable ({why}); is `train node --bind {}:{}` running there?",
                self.host, self.port
            ))),
            Err(_) => Err(err(format!(
                "no answer within {:.0} s (--node-timeout)",
                timeout.as_secs_f64()
            ))),
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "remote:{}:{}", self.host, self.port)?;
        if self.index > 0 {
            write!(f, "/{}", self.index)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("remote:") {
            let bad = |why: &str| CoreError::Backend {
                name: s.into(),
                why: format!("{why} (remote:HOST:PORT or remote:HOST:PORT/INDEX)"),
            };
            let (addr, index) = match rest.split_once('/') {
                Some((a, i)) => (a, i.parse().map_err(|_| bad("the index is not a number"))?),
                None => (rest, 0),
            };
            let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
            if host.is_empty() || port == 0 {
                return Err(bad("an empty host or port 0"));
            }
            return Ok(DeviceSpec::Remote(Node {
                host: host.into(),
                port,
                index,
            }));
        }
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (s, None),
        };
        let backend: BackendKind = name.parse()?;
        let index = match index {
            None => None,
            Some(i) if backend == BackendKind::Wgpu => {
                Some(i.parse::<usize>().map_err(|_| CoreError::Backend {
                    name: s.into(),
                    why: format!("`{i}` is not a GPU index (wgpu:0, wgpu:1, …)"),
                })?)
            }
            Some(_) => {
                return Err(CoreError::Backend {
                    name: s.into(),
                    why: format!("{name} has one device; only wgpu takes an index"),
                });
            }
        };
        Ok(DeviceSpec::Local { backend, index })
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Local {
                backend,
                index: Some(i),
            } => write!(f, "{backend}:{i}"),
            DeviceSpec::Local { backend, .. } => write!(f, "{backend}"),
            DeviceSpec::Remote(node) => write!(f, "{node}"),
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device(kind: DeviceKind) -> Result<Device, CoreError> {
    Ok(Device::wgpu(kind))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_: DeviceKind) -> Result<Device, CoreError> {
    Err(CoreError::Backend {
        name: "wgpu".into(),
        why: "this binary was built without the `wgpu` cargo feature (cargo build --release --features tweedie-core/wgpu)".into(),
    })
}

#[cfg(feature = "tch")]
fn tch_device() -> Result<Device, CoreError> {
    #[allow(deprecated)]
    Ok(Device::libtorch())
}

#[cfg(not(feature = "tch"))]
fn tch_device() -> Result<Device, CoreError> {
    Err(CoreError::Backend {
        name: "tch".into(),
        why: "this binary was built without the `tch` cargo feature (LIBTORCH_USE_PYTORCH=1 cargo build --release --features tweedie-core/tch)".into(),
    })
}

impl std::str::FromStr for BackendKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::choice::parse(s).map_err(|why| CoreError::Backend {
            name: s.into(),
            why,
        })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_backend() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(crate::choice::name(&kind), kind.name());
        }
        assert_eq!("libtorch".parse::<BackendKind>().unwrap(), BackendKind::Tch);
        let err = "cuda".parse::<BackendKind>().unwrap_err().to_string();
        assert!(
            err.contains("cuda")
                && ["flex", "ndarray", "wgpu", "tch"]
                    .iter()
                    .all(|n| err.contains(&format!("`{n}`"))),
            "{err}"
        );
    }

    #[test]
    fn a_backend_left_out_of_the_build_says_which_feature_it_needs() {
        #[cfg(not(feature = "tch"))]
        {
            let err = BackendKind::Tch.device().unwrap_err().to_string();
            assert!(err.contains("`tch` cargo feature"), "{err}");
        }
        #[cfg(not(feature = "wgpu"))]
        {
            let err = BackendKind::Wgpu.device().unwrap_err().to_string();
            assert!(err.contains("`wgpu` cargo feature"), "{err}");
        }
        assert!(BackendKind::Flex.device().is_ok());
    }

    #[test]
    fn device_lists_parse_with_gpu_indices_and_refuse_repeats() {
        let l = DeviceSpec::parse_list("flex, ndarray,wgpu:1").unwrap();
        assert_eq!(
            l.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["flex", "ndarray", "wgpu:1"]
        );
        assert_eq!(
            l[2],
            DeviceSpec::Local {
                backend: BackendKind::Wgpu,
                index: Some(1)
            }
        );
        let r = DeviceSpec::parse_list("flex,remote:10.0.0.2:7000,remote:10.0.0.2:7000/1").unwrap();
        assert_eq!(
            r[2],
            DeviceSpec::Remote(Node {
                host: "10.0.0.2".into(),
                port: 7000,
                index: 1
            })
        );
        assert_eq!(r[1].to_string(), "remote:10.0.0.2:7000");
        for (bad, says) in [
            ("flex,flex", "named twice"),
            ("flex:1", "only wgpu takes an index"),
            ("wgpu:x", "not a GPU index"),
            ("flex,cuda", "`ndarray`"),
            ("remote:host", "no port"),
            ("remote:host:x", "the port is not a number"),
            ("remote:host:7000/a", "the index is not a number"),
            ("remote:h:1,remote:h:1", "named twice"),
        ] {
            let e = DeviceSpec::parse_list(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
