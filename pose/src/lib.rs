//! diffuse-pose: SE(3) diffusion point-cloud registration and object pose.
//!
//! Built on diffuse-core; see docs/ARCHITECTURE.md.
