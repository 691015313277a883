//! The amortized route to p(x₀ | y) (the conditioning survey's "train with (x, y) pairs"):
//! a conditional ε-network ε_θ(x_t, t, y) trained on pairs x ~ data, y ~ p(y | x), which then
//! samples the posterior of any new y with one ordinary reverse trajectory ([`train`]); and the
//! conditional Schrödinger bridge (Shi et al. 2022), which starts from that network and refines a
//! short-horizon bridge by iterative proportional fitting ([`csb`]). Both pay once in training
//! and then one trajectory per posterior sample, against K particles × T steps for TDS; both
//! know only the observation model they were trained for.
//!
//! The pairs come from a [`PairSource`]; for vector problems (the Gaussian-mixture benchmark) the
//! networks are [`CondMlp`]s.

pub mod csb;
pub mod image;
mod pairs;
pub mod train;

pub use csb::{ConditionalBridge, CsbSettings, CsbTrace, train_csb};
pub use pairs::{PairSource, VectorPairs, observations};
pub use train::{TrainLog, TrainSettings, train_eps};

pub use tweedie_core::mlp::{CondMlp, CondMlpConfig};
