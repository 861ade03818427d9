//! diffuse-restoration: Residual and mean-reverting diffusion image restoration (RDDM, Resfusion, IR-SDE).
//!
//! Built on diffuse-core; see docs/ARCHITECTURE.md and docs/restoration.md.
//!
//! - [`image_io`]: PNG/JPEG reading and writing that keeps the file's bit depth, colour type and alpha; reflect
//!   padding, cropping and tiling with smooth blending for bounded memory.
//! - [`degrade`]: seeded degradations (noise, blur, low light) for training and for test pairs.
//! - [`metrics`]: PSNR and SSIM (Wang et al., matching scikit-image); [`eval`] scores folders of images.

pub mod degrade;
pub mod error;
pub mod eval;
pub mod image_io;
pub mod metrics;
pub mod planes;

pub use error::{Error, Result};
pub use image_io::{Image, read_image, write_image};
pub use planes::Planes;
