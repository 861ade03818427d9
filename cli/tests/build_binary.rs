//! Makes `cargo test --workspace` build the `diffuse` binary (an integration test of the binary's own package),
//! which the end-to-end tests in `tests/` run; also checks that it prints its version.

#[test]
fn binary_prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diffuse")).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("diffuse "));
}
