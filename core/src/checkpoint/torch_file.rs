//! The named f32 tensors of a PyTorch pickle (a `torch.save`d state dict) on the host, taken out
//! by name and checked: what the evaluation networks (LPIPS's AlexNet, FID's Inception-v3) are
//! read from. Every error is one line naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::CoreError;

/// A PyTorch weight file's tensors, each finite.
pub struct TorchFile {
    path: PathBuf,
    /// What the file should be, for errors: "not {what}".
    what: &'static str,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TorchFile {
    /// Reads every tensor of `path` as f32; a tensor with a NaN or infinity is refused. `what`
    /// names the file's kind in errors ("torchvision's AlexNet weights").
    pub fn read(path: &Path, what: &'static str) -> Result<Self, CoreError> {
        let bad = |why: String| CoreError::checkpoint(path, why);
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let reader = burn::store::pytorch_reader::PytorchReader::new(path)
            .map_err(|e| bad(format!("not a PyTorch checkpoint: {e}")))?;
        let tensors = reader
            .into_tensors()
            .into_iter()
            .map(|(name, t)| {
                let pack = burn::store::bridge::from_pytorch(t);
                let data = burn::store::bridge::to_data(&pack)
                    .map_err(|e| bad(format!("tensor {name}: {e}")))?;
                let shape = data.shape().to_vec();
                let values: Vec<f32> = data
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| bad(format!("tensor {name}: {e:?}")))?;
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(bad(format!("tensor {name} holds {} at {i}", values[i])));
                }
                Ok((name, (shape, values)))
            })
            .collect::<Result<_, CoreError>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            what,
            tensors,
        })
    }

    /// An error about this file.
    pub fn error(&self, why: String) -> CoreError {
        CoreError::checkpoint(&self.path, why)
    }

    fn missing(&self, key: &str) -> CoreError {
        self.error(format!("no tensor {key}: not {}", self.what))
    }

    /// The shape of tensor `key`.
    pub fn shape(&self, key: &str) -> Result<&[usize], CoreError> {
        self.tensors
            .get(key)
            .map(|(s, _)| s.as_slice())
            .ok_or_else(|| self.missing(key))
    }

    /// Takes tensor `key` out, with its shape.
    pub fn take(&mut self, key: &str) -> Result<(Vec<usize>, Vec<f32>), CoreError> {
        self.tensors.remove(key).ok_or_else(|| self.missing(key))
    }

    /// Takes tensor `key` out, which must have shape `want`.
    pub fn take_shaped(&mut self, key: &str, want: &[usize]) -> Result<Vec<f32>, CoreError> {
        let (shape, values) = self.take(key)?;
        if shape != want {
            return Err(self.error(format!(
                "tensor {key} has shape {shape:?}, {} have {want:?} here",
                self.what
            )));
        }
        Ok(values)
    }
}
