//! diffuse-restoration: Residual and mean-reverting diffusion image restoration (RDDM, Resfusion, IR-SDE).
//!
//! Built on diffuse-core (see docs/ARCHITECTURE.md): the paths (`rddm`, `resfusion`, `ir_sde`), the
//! parameterizations (RDDM's residual / noise / residual + noise, Resfusion's resnoise) and every solver come from
//! core through [`diffuse_core::path::PathSpec`]; this crate adds what is specific to images:
//!
//! - [`net`]: a conditional U-Net in tch (x_t and the degraded image in, time embedding, GroupNorm residual
//!   blocks, attention at the lowest resolution);
//! - [`model`]: native safetensors weights plus a JSON sidecar (task, path, parameterization, network, training
//!   recipe, default sampler), loaded with validation; the model is a core [`diffuse_core::Denoiser`];
//! - [`train`]: training on clean crops with a degradation callback, Adam(W), EMA, atomic checkpoints and exact
//!   resume;
//! - [`sample`]: restoring a degraded batch with any core solver on the model's path;
//! - [`image_io`]: PNG/JPEG reading and writing that keeps the file's bit depth, colour type and alpha; reflect
//!   padding, cropping and tiling with smooth blending for bounded memory.
//! - [`degrade`]: seeded degradations (noise, blur, low light) for training and for test pairs.
//! - [`known`]: non-blind inputs: the inverse of a known exposure curve, Wiener deconvolution by a known kernel.
//! - [`metrics`]: PSNR and SSIM (Wang et al., matching scikit-image); [`eval`] scores folders of images.
//!
//! Image tensors are `[B, C, H, W]` with values in [0, 1]; networks work on `2·v − 1` (values in [−1, 1]).
//!
//! ```
//! use diffuse_core::{Parameterization, path::PathSpec};
//! use diffuse_restoration::{ModelConfig, NetConfig, RestorationModel, sample};
//! use tch::{Device, Kind, Tensor};
//!
//! // A (here untrained, tiny) RDDM model predicting the residual; `RestorationModel::load` reads a trained one.
//! let config = ModelConfig::new("denoise", PathSpec::default_of("rddm")?, Parameterization::Residual, NetConfig::tiny(3, 1));
//! let model = RestorationModel::new(config, Device::Cpu)?;
//! let degraded = Tensor::rand([1, 3, 12, 10], (Kind::Float, Device::Cpu));
//! let opts = sample::SampleOptions { solver: "rddm".into(), steps: 4, ..sample::SampleOptions::defaults_of(&model) };
//! let restored = sample::restore(&model, &degraded, &opts)?;
//! assert_eq!(restored.size(), [1, 3, 12, 10]);
//! # Ok::<(), diffuse_restoration::Error>(())
//! ```

#[cfg(feature = "default-models")]
pub mod default_models;
pub mod degrade;
pub mod error;
pub mod eval;
pub mod image_io;
pub mod known;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod planes;
pub mod sample;
pub mod search;
pub mod train;

pub use error::{Error, Result};
pub use image_io::{Image, read_image, write_image};
pub use model::{ModelConfig, RestorationModel};
pub use net::{NetConfig, UNet};
pub use planes::Planes;
