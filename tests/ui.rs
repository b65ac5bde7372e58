//! Compile-time checks of the `pipeline!` macro: every case in `ui/` must fail to compile
//! with exactly the diagnostics in its `.stderr`, and every case in `ui/pass/` must compile
//! and run (each one asserts what its pipeline produces).
//!
//! The `.stderr` files depend on the compiler version, pinned in `rust-toolchain.toml`;
//! regenerate them with `TRYBUILD=overwrite cargo test -p pipeline-tests --test ui` and read
//! the diff before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}
