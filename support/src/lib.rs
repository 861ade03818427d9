//! Build-script helper shared by the diffuse crates (a build-dependency, so that each crate packages on its own).
//!
//! [`emit_rpath`] embeds libtorch's library folder as the run-time search path of the calling package's
//! binaries, tests, examples and benches, so they start without `LD_LIBRARY_PATH`. torch-sys (`links = "tch"`)
//! reports the folder to its direct dependents as `DEP_TCH_LIBTORCH_LIB`, so the calling package must depend
//! on torch-sys directly. On another machine `LD_LIBRARY_PATH` still takes precedence (the linker writes
//! RUNPATH, not RPATH).
//!
//! In the `build.rs` of a crate that depends on torch-sys:
//!
//! ```no_run
//! diffuse_build::emit_rpath();
//! ```

/// Prints the cargo instructions that embed libtorch's library folder as the run-time search path (and expose
/// it to the crate as `DIFFUSE_LIBTORCH_BUILD_LIB`); does nothing when torch-sys did not report a folder.
pub fn emit_rpath() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=DIFFUSE_LIBTORCH_BUILD_LIB={lib}");
    }
}
