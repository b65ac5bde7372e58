//! Batches as [candle](https://docs.rs/candle-core) tensors (feature `candle`).
//!
//! A [`TensorBatch`] is already one contiguous `N × 3 × H × W` buffer of `f32` in the layout
//! a convolution wants, so the conversion is a move, not a copy: [`Tensor::from_vec`] on the
//! CPU device takes the `Vec<f32>` as the tensor's storage. The only work left is checking
//! that the length matches the shape.
//!
//! ```
//! use candle_core::Device;
//! use pipeline_examples::image_pipeline::TensorBatch;
//!
//! let batch = TensorBatch { images: 2, size: 4, data: vec![0.5; 2 * 3 * 4 * 4] };
//! let tensor = batch.into_tensor(&Device::Cpu)?;
//! assert_eq!(tensor.dims(), &[2, 3, 4, 4]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! On a CUDA device `from_vec` copies the buffer from pageable host memory, synchronously;
//! the pipeline's GPU transfer stage does better (pinned buffers, its own stream), see the
//! guide's chapter "In a training loop" for whether its device buffers can be handed to
//! candle.

use candle_core::{Device, Tensor};

use crate::image_pipeline::{LabelledBatch, TensorBatch};

impl TensorBatch {
    /// The batch as an `N × 3 × size × size` `f32` tensor on `device`, its buffer moved into
    /// the tensor (no copy on the CPU).
    pub fn into_tensor(self, device: &Device) -> candle_core::Result<Tensor> {
        let side = self.size as usize;
        Tensor::from_vec(self.data, (self.images, 3, side, side), device)
    }
}

impl LabelledBatch {
    /// The images as [`TensorBatch::into_tensor`] makes them, and the labels as a `u32`
    /// tensor of length `N` (what `candle_nn::loss::cross_entropy` takes).
    pub fn into_tensors(self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let n = self.labels.len();
        let labels = Tensor::from_vec(self.labels, n, device)?;
        Ok((self.images.into_tensor(device)?, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_layout_survive_the_move() {
        let (n, side) = (3usize, 5u32);
        let data: Vec<f32> = (0..n * 3 * 25).map(|v| v as f32).collect();
        let batch = LabelledBatch {
            images: TensorBatch {
                images: n,
                size: side,
                data: data.clone(),
            },
            labels: vec![2, 0, 1],
        };
        let (images, labels) = batch.into_tensors(&Device::Cpu).unwrap();
        assert_eq!(images.dims(), &[3, 3, 5, 5]);
        assert_eq!(labels.to_vec1::<u32>().unwrap(), [2, 0, 1]);
        assert_eq!(
            images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            data
        );
        // Image 1, channel 2, row 3, column 4 is where CHW order puts it.
        let v: f32 = images
            .get(1)
            .and_then(|t| t.get(2))
            .and_then(|t| t.get(3))
            .and_then(|t| t.get(4))
            .and_then(|t| t.to_scalar())
            .unwrap();
        assert_eq!(v, data[75 + 2 * 25 + 3 * 5 + 4]);
    }

    #[test]
    fn a_short_buffer_is_an_error_not_a_panic() {
        let batch = TensorBatch {
            images: 2,
            size: 4,
            data: vec![0.0; 10],
        };
        assert!(batch.into_tensor(&Device::Cpu).is_err());
    }
}
