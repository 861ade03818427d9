//! diffuse-discrete: Masked and uniform discrete diffusion for token sequences.
//!
//! Built on diffuse-core; see docs/ARCHITECTURE.md.
