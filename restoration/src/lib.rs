//! diffuse-restoration: Residual and mean-reverting diffusion image restoration (RDDM, Resfusion, IR-SDE).
//!
//! Built on diffuse-core; see docs/ARCHITECTURE.md.
