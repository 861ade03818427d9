// Shared build script (each crate's build.rs includes this file): embeds libtorch's library folder as the
// run-time search path of this package's binaries, tests, examples and benches, so they start without
// LD_LIBRARY_PATH. torch-sys (`links = "tch"`) reports the folder to direct dependents as DEP_TCH_LIBTORCH_LIB.
// On another machine LD_LIBRARY_PATH still takes precedence (the linker writes RUNPATH, not RPATH).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=DIFFUSE_LIBTORCH_BUILD_LIB={lib}");
    }
}
