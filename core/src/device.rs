//! Picking a backend at run time. burn 0.22 has no backend generic: a [`Device`] value chooses
//! the backend, and autodiff is a property of the device (`device.autodiff()`).

use burn::prelude::*;

use crate::error::CoreError;

/// The backends a Tweedie binary can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// burn-flex: pure-Rust CPU backend (SIMD + rayon). The default: on the DDPM U-Net it trains
    /// many times faster than ndarray (see README).
    #[default]
    Flex,
    /// burn-ndarray: the older CPU backend (deprecated upstream in burn 0.22).
    Ndarray,
    /// burn-wgpu: GPUs through Vulkan/Metal/DX12/GL. Needs the `wgpu` cargo feature.
    Wgpu,
}

impl BackendKind {
    pub const NAMES: [&'static str; 3] = ["flex", "ndarray", "wgpu"];

    /// The plain (inference) device of this backend. Errors if the binary was built without it.
    pub fn device(self) -> Result<Device, CoreError> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            BackendKind::Wgpu => wgpu_device(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        }
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

impl std::str::FromStr for BackendKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flex" | "cpu" => Ok(BackendKind::Flex),
            "ndarray" => Ok(BackendKind::Ndarray),
            "wgpu" | "gpu" => Ok(BackendKind::Wgpu),
            _ => Err(CoreError::Backend {
                name: s.into(),
                why: format!(
                    "unknown backend (expected one of {})",
                    Self::NAMES.join(", ")
                ),
            }),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
