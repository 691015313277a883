//! burn's `Dataset` over an [`ImageSet`] and a `Batcher` producing tensors in [−1, 1].

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;

use crate::{DataError, ImageSet};

/// One image (CHW bytes) and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    pub shape: [usize; 3],
    pub pixels: Vec<u8>,
    pub label: u8,
}

impl Dataset<ImageItem, DataError> for ImageSet {
    fn get(&self, index: usize) -> Result<ImageItem, DataError> {
        if index >= self.len() {
            return Err(DataError::Index {
                index,
                len: self.len(),
            });
        }
        Ok(ImageItem {
            shape: self.shape,
            pixels: self.image(index).to_vec(),
            label: self.labels[index],
        })
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// A pixel byte on the models' [−1, 1] scale: x/127.5 − 1.
pub fn to_model_scale(byte: u8) -> f32 {
    byte as f32 / 127.5 - 1.0
}

/// A batch: images `[B, C, H, W]` in [−1, 1] (x/127.5 − 1) and labels `[B]`.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    pub images: Tensor<4>,
    pub labels: Tensor<1, Int>,
}

/// Stacks [`ImageItem`]s into an [`ImageBatch`]. With `hflip`, `flips[i]` mirrors item i
/// horizontally (data augmentation decided by the caller's RNG, so runs stay reproducible).
#[derive(Debug, Clone, Default)]
pub struct ImageBatcher;

impl ImageBatcher {
    /// Like [`Batcher::batch`], mirroring the items whose `flips` entry is true.
    pub fn batch_with_flips(
        &self,
        items: Vec<ImageItem>,
        flips: &[bool],
        device: &Device,
    ) -> ImageBatch {
        let b = items.len();
        let [c, h, w] = items.first().map_or([1, 1, 1], |i| i.shape);
        let mut data = Vec::with_capacity(b * c * h * w);
        for (k, item) in items.iter().enumerate() {
            let flip = flips.get(k).copied().unwrap_or(false);
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let xx = if flip { w - 1 - x } else { x };
                        data.push(to_model_scale(item.pixels[(ch * h + y) * w + xx]));
                    }
                }
            }
        }
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ImageBatch {
            images: Tensor::<4>::from_data(TensorData::new(data, [b, c, h, w]), device),
            labels: Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), device),
        }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        self.batch_with_flips(items, &[], device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_to_unit_interval_and_flips() {
        let set = ImageSet {
            shape: [1, 1, 3],
            pixels: vec![0, 255, 51, 255, 0, 0],
            labels: vec![4, 2],
        };
        assert_eq!(set.len(), 2);
        assert!(set.get(2).is_err());
        let items = vec![set.get(0).unwrap(), set.get(1).unwrap()];
        let dev = Device::flex();
        let b = ImageBatcher.batch_with_flips(items.clone(), &[false, true], &dev);
        let v: Vec<f32> = b.images.into_data().iter::<f32>().collect();
        let want = [-1.0, 1.0, 51.0 / 127.5 - 1.0, -1.0, -1.0, 1.0];
        assert!(
            v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{v:?}"
        );
        let l: Vec<i64> = ImageBatcher
            .batch(items, &dev)
            .labels
            .into_data()
            .iter::<i64>()
            .collect();
        assert_eq!(l, vec![4, 2]);
    }
}
