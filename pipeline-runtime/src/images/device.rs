//! A batch of images for the GPU transfer stage (features `images` and `cuda`): the batch's
//! one buffer is one array to copy, and its shape travels beside the device copy. A batch
//! of `u8` is what should cross (a quarter of the bytes of `f32`); normalising belongs on
//! the device.

use super::batch::{ImageBatch, Layout};
use crate::cuda::cudarc::driver::CudaSlice;
use crate::cuda::{Element, HostBatch, Stager, TransferError};

/// An [`ImageBatch`] on the device: its values and its shape.
#[derive(Debug)]
pub struct DeviceImages<T> {
    /// Images in the batch (`N`).
    pub images: usize,
    /// Height of every image.
    pub height: u32,
    /// Width of every image.
    pub width: u32,
    /// How each image's values are laid out.
    pub layout: Layout,
    /// `images * 3 * height * width` values, as on the host.
    pub data: CudaSlice<T>,
}

impl<T: Element> HostBatch for ImageBatch<T> {
    type Device = DeviceImages<T>;

    fn layout(&self, layout: &mut crate::cuda::Layout) {
        self.data.layout(layout);
    }

    fn upload(&self, stager: &mut Stager<'_>) -> Result<DeviceImages<T>, TransferError> {
        Ok(DeviceImages {
            images: self.images,
            height: self.height,
            width: self.width,
            layout: self.layout,
            data: self.data.upload(stager)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{collate_u8, Image};

    #[test]
    fn a_batch_is_one_array_of_its_values() {
        let image = Image {
            width: 4,
            height: 2,
            pixels: vec![7; 4 * 2 * 3],
        };
        let batch = collate_u8(&[image.clone(), image], Layout::Chw).unwrap();
        let mut layout = crate::cuda::Layout::new();
        batch.layout(&mut layout);
        assert_eq!(layout.arrays(), 1);
        assert_eq!(layout.bytes(), 2 * 3 * 4 * 2, "u8: one byte per value");
    }
}
