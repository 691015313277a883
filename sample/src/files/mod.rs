//! Files and the command line: experiment-file parsing and checks, outputs (`.npy`, PNG), progress bars. Imports nothing above it.

pub mod check;
pub mod cli;
pub mod experiment;
pub mod npz;
pub mod output;
pub mod progress;
pub mod toml_file;
