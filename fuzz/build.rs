//! Embeds the libtorch library folder as run-time search path (see support/rpath.rs).
include!("../support/rpath.rs");
