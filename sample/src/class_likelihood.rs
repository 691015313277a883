//! A class label as the observation: log p(c | x_0) from a classifier (Dhariwal & Nichol 2021
//! §4; the TDS paper's class-conditional MNIST experiment), evaluated at the Tweedie estimate.

use burn::prelude::*;
use burn::tensor::Int;
use burn::tensor::activation::log_softmax;
use tweedie_core::classifier::Classifier;

use crate::likelihood::Likelihood;

/// log p(class_i | x_0^i) for each row i.
pub struct ClassLabel {
    pub model: Classifier,
    /// The requested class of each row of the batch.
    pub classes: Vec<usize>,
}

impl Likelihood for ClassLabel {
    fn log_prob(&self, x0: Tensor<4>) -> Tensor<1> {
        let b = x0.dims()[0];
        assert_eq!(b, self.classes.len(), "one class per row");
        let device = x0.device();
        let lp = log_softmax(self.model.forward(x0), 1);
        let ix: Vec<i64> = self.classes.iter().map(|c| *c as i64).collect();
        let ix = Tensor::<2, Int>::from_data(TensorData::new(ix, [b, 1]), &device);
        lp.gather(1, ix).reshape([b])
    }
}
