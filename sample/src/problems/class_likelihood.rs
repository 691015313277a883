//! A class label as the observation: log p(c | x_0) from a classifier (Dhariwal & Nichol 2021
//! §4; the TDS paper's class-conditional MNIST experiment), evaluated at the Tweedie estimate.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::Int;
use burn::tensor::activation::log_softmax;
use tweedie_core::classifier::{self, CLASSIFIER_META, Classifier, ClassifierMeta};

use crate::likelihood::Likelihood;

/// The classifier trained into `dir`; where there is none, the error says how to make one.
pub fn load_classifier(
    dir: &Path,
    device: &Device,
) -> anyhow::Result<(Classifier, ClassifierMeta)> {
    if !dir.join(CLASSIFIER_META).is_file() {
        anyhow::bail!(
            "{}: no trained classifier there ({CLASSIFIER_META} is missing); train the MNIST one \
             with `train --config experiments/mnist-classifier.toml` (about 100 s on 2 cores), or \
             point --classifier (or the file's `classifier`) at another run",
            dir.display()
        );
    }
    Ok(classifier::load(dir, device)?)
}

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
