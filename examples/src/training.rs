//! A small training run on the image pipeline (feature `candle`), shared by
//! `examples/train.rs` and its test: a convolutional classifier learns the direction of the
//! stripes in [`write_stripes_dataset`](crate::datasets::write_stripes_dataset)'s images,
//! on the CPU, fed either by the pipeline or by a plain loop that loads each batch itself
//! before the step (the data loader without workers), so the two can be compared.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{conv2d, linear, AdamW, Conv2d, Conv2dConfig, Linear, Optimizer, ParamsAdamW};
use candle_nn::{VarBuilder, VarMap};
use pipeline_runtime::images::{self, ImageError, ImageTransform};
use pipeline_runtime::stats::PipelineStats;
use pipeline_runtime::Pipeline;

use crate::datasets::STRIPE_CLASSES;
use crate::image_pipeline::{labelled_image_stages, LabelledBatch, LoaderOptions, TensorBatch};
use crate::scratch::XorShift;

/// The network: two 3×3 convolutions with ReLU and 2×2 max-pooling, then one linear layer.
#[derive(Debug)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    head: Linear,
}

impl Classifier {
    /// A fresh, randomly initialised network for `size × size` RGB images (`size` a
    /// multiple of 4) and `classes` classes; its parameters live in `vars`.
    pub fn new(
        vars: &VarMap,
        size: u32,
        classes: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let vb = VarBuilder::from_varmap(vars, DType::F32, device);
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let side = size as usize / 4;
        Ok(Self {
            conv1: conv2d(3, 8, 3, same, vb.pp("conv1"))?,
            conv2: conv2d(8, 16, 3, same, vb.pp("conv2"))?,
            head: linear(16 * side * side, classes, vb.pp("head"))?,
        })
    }
}

impl Module for Classifier {
    fn forward(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        images
            .apply(&self.conv1)?
            .relu()?
            .max_pool2d(2)?
            .apply(&self.conv2)?
            .relu()?
            .max_pool2d(2)?
            .flatten_from(1)?
            .apply(&self.head)
    }
}

/// Where the training loop's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// The image pipeline, loading ahead on its own threads while the model trains.
    Pipeline,
    /// The training thread reads, decodes and collates each batch itself, then steps: what
    /// a data loader without workers does.
    Inline,
}

/// The knobs of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Training steps (one batch each).
    pub steps: usize,
    /// The loader's options: image size, batch size, concurrency, a deliberate decode delay.
    pub loader: LoaderOptions,
    /// Pipeline threads.
    pub threads: usize,
    /// AdamW's learning rate.
    pub learning_rate: f64,
    /// Seeds the shuffle of each epoch (the network's initialisation is candle's own).
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 300,
            loader: LoaderOptions {
                // The whole picture: a flip would turn one diagonal class into the other.
                transform: ImageTransform::resize(32, 32),
                batch_size: 32,
                read_concurrency: 4,
                decode_concurrency: 2,
                decode_delay: Duration::ZERO,
            },
            threads: 3,
            learning_rate: 3e-3,
            seed: 7,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The loader used.
    pub loader: Loader,
    /// The loss of every step, in order.
    pub losses: Vec<f32>,
    /// The training loop's wall time, from asking for the first batch to the end of the
    /// last step.
    pub wall: Duration,
    /// The time the loop spent waiting for (or, inline, loading) batches.
    pub data_wait: Duration,
    /// The pipeline's statistics at the end (the pipeline loader only).
    pub stats: Option<PipelineStats>,
    /// The picture of the pipeline's run (the pipeline loader only), an SVG document.
    pub report_svg: Option<String>,
}

impl TrainReport {
    /// Training steps per second.
    pub fn steps_per_sec(&self) -> f64 {
        self.losses.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The share of the loop's time spent on data rather than on steps.
    pub fn data_wait_share(&self) -> f64 {
        (self.data_wait.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)).min(1.0)
    }

    /// The mean loss of the first and of the last `n` steps.
    pub fn loss_start_end(&self, n: usize) -> (f32, f32) {
        let n = n.clamp(1, self.losses.len().max(1));
        let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
        (
            mean(&self.losses[..n.min(self.losses.len())]),
            mean(&self.losses[self.losses.len().saturating_sub(n)..]),
        )
    }
}

/// The training items for `steps` batches: the files in a new random order every epoch
/// (Fisher-Yates from `(seed, epoch)`), as many epochs as it takes.
pub fn shuffled_epochs(
    files: Vec<(PathBuf, u32)>,
    seed: u64,
    items: usize,
) -> impl Iterator<Item = (PathBuf, u32)> + Send + 'static {
    let n = files.len();
    (0u64..)
        .take_while(move |_| n > 0)
        .flat_map(move |epoch| {
            let mut order: Vec<usize> = (0..n).collect();
            let mut rng = XorShift((seed ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(epoch + 1) | 1);
            for i in (1..n).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let files = files.clone();
            order.into_iter().map(move |i| files[i].clone())
        })
        .take(items)
}

/// Trains a fresh [`Classifier`] on `train` for `options.steps` steps with the given loader;
/// returns the trained network (for [`accuracy`]) and the run's report.
pub fn train(
    train: &[(PathBuf, u32)],
    options: &TrainOptions,
    loader: Loader,
) -> Result<(Classifier, TrainReport), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let vars = VarMap::new();
    let (size, _) = options.loader.transform.output_size();
    let model = Classifier::new(&vars, size, STRIPE_CLASSES.len(), &device)?;
    let mut optimiser = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: options.learning_rate,
            ..Default::default()
        },
    )?;
    let items = shuffled_epochs(
        train.to_vec(),
        options.seed,
        options.steps * options.loader.batch_size,
    );
    let mut losses = Vec::with_capacity(options.steps);
    let mut step = |batch: LabelledBatch| -> candle_core::Result<()> {
        let (images, labels) = batch.into_tensors(&device)?;
        let logits = model.forward(&images)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        optimiser.backward_step(&loss)?;
        losses.push(loss.to_scalar::<f32>()?);
        Ok(())
    };
    let started = Instant::now();
    let (data_wait, stats, report_svg) = match loader {
        Loader::Pipeline => {
            let mut pipeline: Pipeline<LabelledBatch> =
                labelled_image_stages(items, options.loader)
                    .sink()
                    .buffer(4)
                    .num_threads(options.threads)
                    .build()?;
            for batch in pipeline.by_ref() {
                step(batch?)?;
            }
            pipeline.stop()?;
            let stats = pipeline.stats();
            (
                stats.consumer.wait_total,
                Some(stats),
                Some(pipeline.report_svg()),
            )
        }
        Loader::Inline => {
            let mut waited = Duration::ZERO;
            let mut items = items.peekable();
            while items.peek().is_some() {
                let t = Instant::now();
                let batch = load_inline(&mut items, &options.loader)?;
                waited += t.elapsed();
                step(batch)?;
            }
            (waited, None, None)
        }
    };
    let wall = started.elapsed();
    Ok((
        model,
        TrainReport {
            loader,
            losses,
            wall,
            data_wait,
            stats,
            report_svg,
        },
    ))
}

/// One batch loaded on the calling thread: read, decode and resize, collate.
fn load_inline(
    items: &mut impl Iterator<Item = (PathBuf, u32)>,
    options: &LoaderOptions,
) -> Result<LabelledBatch, ImageError> {
    let mut decoded = Vec::with_capacity(options.batch_size);
    let mut labels = Vec::with_capacity(options.batch_size);
    for (path, label) in items.take(options.batch_size) {
        if !options.decode_delay.is_zero() {
            std::thread::sleep(options.decode_delay);
        }
        decoded.push(options.transform.apply(&images::read(path)?)?);
        labels.push(label);
    }
    Ok(LabelledBatch {
        images: TensorBatch::collate(&decoded)?,
        labels,
    })
}

/// The share of `held_out` that `model` classifies correctly, loaded through the pipeline
/// in order, 64 images a batch.
pub fn accuracy(
    model: &Classifier,
    held_out: &[(PathBuf, u32)],
    options: &TrainOptions,
) -> Result<f64, Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let loader = LoaderOptions {
        batch_size: 64,
        decode_delay: Duration::ZERO,
        ..options.loader
    };
    let pipeline = labelled_image_stages(held_out.to_vec(), loader)
        .sink()
        .buffer(2)
        .num_threads(options.threads)
        .build()?;
    let (mut right, mut total) = (0usize, 0usize);
    for batch in pipeline {
        let (images, labels) = batch?.into_tensors(&device)?;
        let predicted = model.forward(&images)?.argmax(D::Minus1)?;
        let hits = predicted.eq(&labels)?.to_dtype(DType::U32)?.sum_all()?;
        right += hits.to_scalar::<u32>()? as usize;
        total += labels.dims1()?;
    }
    Ok(if total == 0 {
        0.0
    } else {
        right as f64 / total as f64
    })
}
