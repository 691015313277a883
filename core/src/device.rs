//! Picking a backend at run time. burn 0.22 has no backend generic: a [`Device`] value chooses
//! the backend, and autodiff is a property of the device (`device.autodiff()`).

use burn::prelude::*;

use crate::error::CoreError;

/// The backends a Tweedie binary can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex: pure-Rust CPU backend (SIMD + rayon). The default: on the DDPM U-Net it trains
    /// many times faster than ndarray (see README).
    #[default]
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

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Tch];

    /// The plain (inference) device of this backend. Errors if the binary was built without it.
    pub fn device(self) -> Result<Device, CoreError> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            BackendKind::Wgpu => wgpu_device(),
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

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, CoreError> {
    Ok(Device::wgpu(DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, CoreError> {
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
}
