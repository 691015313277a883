//! The amortized route on images: the observation enters the U-Net as extra input channels,
//! [A⁺ŷ, v] with ŷ the noise model's estimate of A(x) from y and v = mean over channels of
//! A⁺A·1 (where the operator sees: the mask of an inpainting, constant for a blur or a
//! super-resolution), so C + 1 channels in all (Batzolis et al. 2021; Saharia et al. 2022,
//! "Image super-resolution via iterative refinement", §2, condition on the upsampled
//! observation). The same [`ConditionSpec`] describes the training pairs (`[condition]` of a
//! training file), is recorded in the checkpoint, and must match the reconstruction file that
//! uses the model.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tweedie_core::rng::Rng;

use crate::noise::NoiseModel;
use crate::operator::{ForwardOperator, pseudo_inverse};
use crate::spec::{NoiseSpec, OperatorSpec};

/// The observation model of a conditional network: `[condition]` of a training file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    pub operator: OperatorSpec,
    pub noise: NoiseSpec,
}

impl ConditionSpec {
    /// Condition channels for images of `c` channels.
    pub fn channels(c: usize) -> usize {
        c + 1
    }

    /// What the checkpoint records.
    pub fn record(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain data serialises")
    }

    /// The spec a checkpoint recorded.
    pub fn from_record(v: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(v.clone()).context("the checkpoint's observation model")
    }

    /// Builds the operator and noise model for `[c, h, w]` images on `device`.
    pub fn observer(&self, shape: [usize; 3], device: &Device) -> Result<Observer> {
        let [c, h, w] = shape;
        let op = self.operator.build(h, w)?;
        if !op.is_linear() {
            bail!(
                "{}: the amortized route conditions on A⁺y and needs a linear operator",
                op.name()
            );
        }
        let noise = self.noise.build()?;
        let ones = Tensor::<4>::ones([1, c, h, w], device);
        let seen = pseudo_inverse(op.as_ref(), op.apply(ones)).expect("linear");
        Ok(Observer {
            op,
            noise,
            visibility: seen.mean_dim(1),
        })
    }
}

/// An observation model ready to draw pairs and turn observations into condition channels.
pub struct Observer {
    pub op: Box<dyn ForwardOperator>,
    pub noise: Box<dyn NoiseModel>,
    /// `[1, 1, H, W]`.
    visibility: Tensor<4>,
}

impl Observer {
    /// "sr×4, gaussian(σ_y=0.05)".
    pub fn describe(&self) -> String {
        format!("{}, {}", self.op.name(), self.noise.name())
    }

    /// y = A(x₀) + noise.
    pub fn observe(&self, x0: Tensor<4>, rng: &mut Rng) -> Tensor<4> {
        self.noise.sample(self.op.apply(x0), rng)
    }

    /// The condition channels `[B, C + 1, H, W]` of observations `y`.
    pub fn condition(&self, y: Tensor<4>) -> Tensor<4> {
        let est = self.noise.mean_estimate(y);
        let x = pseudo_inverse(self.op.as_ref(), est).expect("a linear operator (checked)");
        let b = x.dims()[0];
        let v = self
            .visibility
            .clone()
            .to_device(&x.device())
            .repeat_dim(0, b);
        Tensor::cat(vec![x, v], 1)
    }
}

/// Training pairs of an image problem: x a random image of `set` (on the model's [−1, 1] scale),
/// y ~ p(y | x) from `observer`, returned as the condition channels the networks take.
pub struct ImagePairs<'a> {
    pub set: &'a tweedie_datasets::ImageSet,
    pub observer: &'a Observer,
    pub device: Device,
}

impl super::PairSource for ImagePairs<'_> {
    fn dim(&self) -> usize {
        self.set.shape.iter().product()
    }

    fn cond_dim(&self) -> usize {
        let [c, h, w] = self.set.shape;
        ConditionSpec::channels(c) * h * w
    }

    fn draw(&self, n: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.set.shape;
        let x: Vec<f32> = (0..n)
            .flat_map(|_| {
                let i = rng.below(self.set.len());
                self.set
                    .image(i)
                    .iter()
                    .map(|b| tweedie_datasets::to_model_scale(*b))
            })
            .collect();
        let x0 = Tensor::<4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &self.device);
        let cond = self.observer.condition(self.observer.observe(x0, rng));
        (x, tweedie_core::host_values(cond))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_carry_the_pseudo_inverse_and_where_the_operator_sees() {
        let dev = Device::flex();
        let spec: ConditionSpec = toml::from_str(
            "operator = { kind = \"inpaint-box\", top = 0, left = 0, height = 2, width = 4 }\n\
             noise = { kind = \"gaussian\", sigma_y = 0.0001 }",
        )
        .unwrap();
        let obs = spec.observer([1, 4, 4], &dev).unwrap();
        let x = Tensor::<4>::full([2, 1, 4, 4], 0.5, &dev);
        let y = obs.observe(x, &mut Rng::new(1));
        let c: Vec<f32> = obs.condition(y).into_data().iter::<f32>().collect();
        assert_eq!(c.len(), 2 * 2 * 16);
        // Channel 0: the observed half ≈ 0.5, the hidden half 0; channel 1: the mask.
        assert!(
            c[..8].iter().all(|v| v.abs() < 1e-6)
                && c[8..16].iter().all(|v| (v - 0.5).abs() < 1e-2)
        );
        assert!(c[16..24].iter().all(|v| *v == 0.0) && c[24..32].iter().all(|v| *v == 1.0));
        assert_eq!(ConditionSpec::from_record(&spec.record()).unwrap(), spec);
        let sat: ConditionSpec = toml::from_str(
            "operator = { kind = \"saturate\", gain = 2.0 }\nnoise = { kind = \"gaussian\", sigma_y = 0.1 }",
        )
        .unwrap();
        let e = sat.observer([1, 4, 4], &dev).err().unwrap().to_string();
        assert!(e.contains("linear operator"), "{e}");
    }
}
