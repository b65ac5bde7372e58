//! The training example on burn (feature `burn`), shared by `examples/train_burn.rs` and its
//! test: the stripes classifier of the candle example (`training`), written for burn's CPU
//! backend (Flex), fed either by the pipeline through [`PipelineLoader`] or by burn's own
//! `DataLoaderBuilder`, over the same burn [`Dataset`] and [`Batcher`].
//!
//! The two loaders differ in how they spend their workers. burn's runs each worker through
//! whole batches, one item after the other: `Dataset::get` (read, decode, normalise), then
//! the batcher. The pipeline runs the same `get` as a stage of its own, `workers` lanes on
//! `workers` threads, and the batcher as another stage. A deliberate decode delay
//! (`decode_delay`, a sleep: the latency of a slow store or a remote decoder, not CPU) is
//! inside `get` for burn's loader, where a worker can only block on it; the pipeline awaits
//! it in an async stage before `get`, so many of those waits overlap without holding a
//! thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, DatasetError};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use pipeline_runtime::distributed::{ItemKey, Rank, Sampler};
use pipeline_runtime::images::{self, collate_f32, ImageTransform, Layout, Normalize};
use pipeline_runtime::stats::PipelineStats;
use pipeline_runtime::PipelineBuilder;

use crate::burn_loader::PipelineLoader;
use crate::datasets::STRIPE_CLASSES;

/// One decoded image: `3 × size × size` normalised values (CHW) and its label.
#[derive(Debug, Clone)]
pub struct StripeImage {
    /// The pixels, normalised with ImageNet's statistics, channel after channel (CHW).
    pub pixels: Vec<f32>,
    /// The class, an index into [`STRIPE_CLASSES`].
    pub label: u32,
}

/// The labelled files as a burn dataset: `get` reads, decodes and resizes one.
#[derive(Debug, Clone)]
pub struct StripesDataset {
    files: Arc<Vec<(PathBuf, u32)>>,
    size: u32,
    delay: Duration,
}

impl StripesDataset {
    /// `files` decoded to `size × size`, each `get` first sleeping `delay`.
    pub fn new(files: Vec<(PathBuf, u32)>, size: u32, delay: Duration) -> Self {
        Self {
            files: Arc::new(files),
            size,
            delay,
        }
    }

    /// The same files without the delay (the pipeline waits for it in a stage of its own).
    pub fn without_delay(&self) -> Self {
        Self {
            delay: Duration::ZERO,
            ..self.clone()
        }
    }

    /// The delay each `get` sleeps.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl Dataset<StripeImage> for StripesDataset {
    fn get(&self, index: usize) -> Result<StripeImage, DatasetError> {
        let (path, label) = self.files.get(index).ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!(
                "index {index} of a dataset of {}",
                self.files.len()
            )))
        })?;
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let image = ImageTransform::resize(self.size, self.size)
            .apply(&images::read(path.clone()).map_err(DatasetError::new)?)
            .map_err(DatasetError::new)?;
        let one =
            collate_f32(&[image], Layout::Chw, &Normalize::IMAGENET).map_err(DatasetError::new)?;
        Ok(StripeImage {
            pixels: one.data,
            label: *label,
        })
    }

    fn len(&self) -> usize {
        self.files.len()
    }
}

/// A batch on a device: `N × 3 × size × size` images and `N` labels.
#[derive(Debug, Clone)]
pub struct StripesBatch {
    /// The images.
    pub images: Tensor<4>,
    /// The classes, in the same order.
    pub labels: Tensor<1, Int>,
}

/// Collates [`StripeImage`]s into a [`StripesBatch`] on the device it is given.
#[derive(Debug, Clone, Copy)]
pub struct StripesBatcher {
    /// Height and width of every image.
    pub size: u32,
}

impl Batcher<StripeImage, StripesBatch> for StripesBatcher {
    fn batch(&self, items: Vec<StripeImage>, device: &Device) -> StripesBatch {
        let (n, side) = (items.len(), self.size as usize);
        let mut pixels = Vec::with_capacity(n * 3 * side * side);
        let mut labels = Vec::with_capacity(n);
        for item in items {
            pixels.extend_from_slice(&item.pixels);
            labels.push(i64::from(item.label));
        }
        StripesBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, side, side]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// The network of the candle example: two 3×3 convolutions with ReLU and 2×2 max-pooling,
/// then one linear layer.
#[derive(Module, Debug)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    head: Linear,
}

impl Classifier {
    /// A fresh network for `size × size` RGB images (`size` a multiple of 4) and `classes`
    /// classes, on `device`.
    pub fn new(size: u32, classes: usize, device: &Device) -> Self {
        let conv = |from, to| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let side = size as usize / 4;
        Self {
            conv1: conv(3, 8),
            conv2: conv(8, 16),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            head: LinearConfig::new(16 * side * side, classes).init(device),
        }
    }

    /// Logits, `N × classes`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(images)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        self.head.forward(x.flatten(1, 3))
    }
}

/// Where the training loop's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurnLoader {
    /// The pipeline, through [`PipelineLoader`].
    Pipeline,
    /// burn's own `DataLoaderBuilder` with as many workers.
    Burn,
}

/// The knobs of [`train`].
#[derive(Debug, Clone)]
pub struct BurnOptions {
    /// Training steps (one batch each).
    pub steps: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Image height and width.
    pub size: u32,
    /// Loader threads: burn's workers, the pipeline's threads (and its decode lanes).
    pub workers: usize,
    /// A sleep added to every image's decode.
    pub decode_delay: Duration,
    /// Decode delays the pipeline waits out at once (an async stage: no thread each).
    pub delay_concurrency: usize,
    /// AdamW's learning rate.
    pub learning_rate: f64,
    /// Seeds both loaders' shuffles.
    pub seed: u64,
}

impl Default for BurnOptions {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 32,
            size: 32,
            workers: 2,
            decode_delay: Duration::ZERO,
            delay_concurrency: 32,
            learning_rate: 3e-3,
            seed: 7,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct BurnReport {
    /// The loader used.
    pub loader: BurnLoader,
    /// The loss of every step, in order.
    pub losses: Vec<f32>,
    /// Epochs started.
    pub epochs: usize,
    /// From asking for the first batch to the end of the last step.
    pub wall: Duration,
    /// The time the loop spent inside the loader's `next()`, measured by the loop (the same
    /// way for both loaders).
    pub data_wait: Duration,
    /// The pipeline's statistics at the end (the pipeline loader only).
    pub stats: Option<PipelineStats>,
}

impl BurnReport {
    /// Training steps per second.
    pub fn steps_per_sec(&self) -> f64 {
        self.losses.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The share of the loop's time spent waiting for batches.
    pub fn data_wait_share(&self) -> f64 {
        (self.data_wait.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)).min(1.0)
    }

    /// The mean loss of the first and of the last `n` steps.
    pub fn loss_start_end(&self, n: usize) -> (f32, f32) {
        let n = n.clamp(1, self.losses.len().max(1)).min(self.losses.len());
        let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
        (
            mean(&self.losses[..n]),
            mean(&self.losses[self.losses.len() - n..]),
        )
    }
}

/// The pipeline loader over `dataset`: keys from `sampler`, the decode delay waited out in
/// an async stage, `get` on `workers` lanes, batches of `batch_size` made by `batcher` on
/// the loader's device.
pub fn pipeline_loader(
    dataset: &StripesDataset,
    batcher: StripesBatcher,
    sampler: Sampler,
    batch_size: usize,
    options: &BurnOptions,
) -> PipelineLoader<StripesBatch> {
    let delay = dataset.delay();
    let dataset = dataset.without_delay();
    let (workers, delay_lanes) = (options.workers.max(1), options.delay_concurrency.max(1));
    PipelineLoader::new(sampler, batch_size, move |keys, device| {
        let (dataset, device) = (dataset.clone(), device.clone());
        PipelineBuilder::new()
            .continuous_source(keys)
            .async_pipe(move |key: ItemKey| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                key
            })
            .concurrency(delay_lanes)
            .name("decode delay")
            .try_pipe(move |key: ItemKey| dataset.get(key.index as usize))
            .concurrency(workers)
            .name("read+decode")
            .aggregate(batch_size)
            .pipe(move |items: Vec<StripeImage>| batcher.batch(items, &device))
            .name("batch")
            .sink()
            .buffer(4)
            .num_threads(workers)
            .build()
    })
}

/// Trains a fresh [`Classifier`] on `train` for `options.steps` steps, epoch after epoch,
/// with the given loader; returns the network (for [`accuracy`]) and the run's report.
pub fn train(
    train: &[(PathBuf, u32)],
    options: &BurnOptions,
    loader: BurnLoader,
) -> Result<(Classifier, BurnReport), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    let dataset = StripesDataset::new(train.to_vec(), options.size, options.decode_delay);
    let batcher = StripesBatcher { size: options.size };
    let pipeline = (loader == BurnLoader::Pipeline).then(|| {
        let sampler = Sampler::new(train.len() as u64, Rank::single()).seed(options.seed);
        Arc::new(
            pipeline_loader(&dataset, batcher, sampler, options.batch_size, options)
                .with_device(&device),
        )
    });
    let batches: Arc<dyn DataLoader<StripesBatch>> = match &pipeline {
        Some(p) => p.clone(),
        None => DataLoaderBuilder::new(batcher)
            .batch_size(options.batch_size)
            .shuffle(options.seed)
            .num_workers(options.workers)
            .set_device(device.clone())
            .build(dataset),
    };

    let mut model = Classifier::new(options.size, STRIPE_CLASSES.len(), &device);
    let mut optimiser = AdamWConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut losses = Vec::with_capacity(options.steps);
    let (mut waited, mut epochs) = (Duration::ZERO, 0);
    let started = Instant::now();
    'training: while losses.len() < options.steps {
        epochs += 1;
        let mut epoch = batches.iter();
        let before = losses.len();
        loop {
            let t = Instant::now();
            let Some(batch) = epoch.next() else { break };
            waited += t.elapsed();
            let batch = batch?;
            let loss = loss_fn.forward(model.forward(batch.images), batch.labels);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimiser.step(options.learning_rate, model, grads);
            if losses.len() == options.steps {
                break 'training;
            }
        }
        if losses.len() == before {
            return Err("an epoch gave no batch".into());
        }
    }
    let wall = started.elapsed();
    let stats = pipeline.as_ref().and_then(|p| p.stats());
    Ok((
        model,
        BurnReport {
            loader,
            losses,
            epochs,
            wall,
            data_wait: waited,
            stats,
        },
    ))
}

/// The share of `held_out` that `model` classifies correctly, read once in order through
/// the pipeline loader (one epoch of a sampler without shuffling), 64 images a batch.
pub fn accuracy(
    model: &Classifier,
    held_out: &[(PathBuf, u32)],
    options: &BurnOptions,
) -> Result<f64, Box<dyn std::error::Error>> {
    // Without autodiff: no graph is recorded for these forwards.
    let model = model.valid();
    let device = Device::flex();
    let dataset = StripesDataset::new(held_out.to_vec(), options.size, Duration::ZERO);
    let sampler = Sampler::new(held_out.len() as u64, Rank::single()).shuffle(false);
    let batcher = StripesBatcher { size: options.size };
    let loader = pipeline_loader(&dataset, batcher, sampler, 64, options).with_device(&device);
    let (mut right, mut total) = (0i64, 0usize);
    for batch in loader.iter() {
        let batch = batch?;
        total += batch.labels.dims()[0];
        let predicted = model.forward(batch.images).argmax(1).flatten::<1>(0, 1);
        right += predicted
            .equal(batch.labels)
            .int()
            .sum()
            .into_scalar::<i64>();
    }
    Ok(if total == 0 {
        0.0
    } else {
        right as f64 / total as f64
    })
}
