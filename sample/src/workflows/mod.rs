//! Whole runs that tests and the binary call: reconstruction, the Gaussian-mixture benchmark, class-conditional generation, unconditional samples, the NFE sweep, FID, LPIPS; the prior as loaded for them, plots and scores. Imports every layer below.

pub mod class_cond;
pub mod fid;
pub mod generate;
pub mod gmm_bench;
pub mod inception;
pub mod inception_fid;
pub mod lpips;
pub mod metrics;
pub mod nfe;
pub mod plot;
pub mod prior;
pub mod recon;
pub mod weights;
