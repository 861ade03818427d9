//! Byte-level diffusion language models on libtorch: corpora ([`corpus`]), the transformer denoiser ([`net`]),
//! models with their sidecars ([`model`]), training ([`train`]), scoring in bits per byte ([`eval`]) and
//! generation with infilling templates ([`generate`]).

pub mod bench;
pub mod corpus;
pub mod eval;
pub mod generate;
pub mod model;
pub mod net;
pub mod train;

pub use model::{ModelKind, TextConfig, TextModel};
