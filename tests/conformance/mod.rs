//! Conformance vectors from `../shared/conformance` (kept there, never copied).
//! When the folder is absent the suites say they were skipped; with
//! `KILN_REQUIRE_CONFORMANCE=1` (set by `.ci/run`) a missing folder fails.

use std::path::PathBuf;

/// The conformance folder, or `None` (after saying so) when it is absent and not required.
pub fn dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"),
    };
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    if std::env::var("KILN_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1") {
        panic!(
            "conformance vectors not found at {} and KILN_REQUIRE_CONFORMANCE=1",
            dir.display()
        );
    }
    println!(
        "conformance: skipped, {} not found (set KILN_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}

/// Prints the count line every suite ends with.
pub fn report(set: &str, ran: usize, skipped: usize) {
    assert!(ran > 0, "conformance set {set} ran no case");
    println!("conformance: {set}: {ran} cases passed, {skipped} skipped");
}

pub mod image_docs;
pub mod instructions;
pub mod oci;
pub mod parser;
pub mod shell;

pub mod dockerignore;
pub mod walk;
