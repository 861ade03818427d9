//! Embeds the libtorch library folder as run-time search path (see the diffuse-build crate).
fn main() {
    diffuse_build::emit_rpath();
}
