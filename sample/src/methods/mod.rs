//! The methods: samplers over the reverse diffusion (DDPM, DDIM, ODE solvers, DPS, DiffPIR, ΠGDM, replacement), the particle methods (`smc`) and the amortized route (`amortized`). Imports `problems` and `files`.

pub mod amortized;
pub mod catalog;
pub mod pnpdm;
pub mod sampler;
pub mod settings;
pub mod smc;
