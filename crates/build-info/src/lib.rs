//! What this binary is: version, git revision and target architecture.
//!
//! Captured at build time by `build.rs`; used by `testbed --version`, the
//! startup log line and the worker's status, so an experiment on a mixed
//! amd64/arm64/armv7 cluster can tell which build ran where.
#![forbid(unsafe_code)]

/// The crate version of the workspace (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Short git revision of the build, `-dirty` when the tree had changes,
/// `TESTBED_GIT_REVISION` when that was set at build time, else `unknown`.
pub const GIT_REVISION: &str = env!("TESTBED_GIT_REVISION");

/// The Rust target triple the binary was built for.
pub const TARGET: &str = env!("TESTBED_TARGET");

/// The architecture in Kubernetes/OCI naming (`amd64`, `arm64`, `armv7`,
/// ...), the value of a node's `kubernetes.io/arch` label (plus the ARM
/// variant, which is what users of mixed Pi clusters need to see).
pub fn arch() -> &'static str {
    oci_arch(std::env::consts::ARCH, TARGET)
}

/// Maps a Rust architecture and target triple to OCI naming.
fn oci_arch(rust_arch: &'static str, target: &str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" if target.starts_with("armv7") => "armv7",
        "arm" if target.starts_with("armv6") || target.starts_with("arm-") => "armv6",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// One line for `--version` and the startup log:
/// `0.1.0 (rev 1a2b3c4d5e6f, amd64, x86_64-unknown-linux-gnu)`.
pub fn long_version() -> String {
    format!("{VERSION} (rev {GIT_REVISION}, {}, {TARGET})", arch())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rust architecture names map to the names Kubernetes nodes carry.
    #[test]
    fn maps_rust_arch_to_oci_names() {
        assert_eq!(oci_arch("x86_64", "x86_64-unknown-linux-gnu"), "amd64");
        assert_eq!(oci_arch("aarch64", "aarch64-unknown-linux-musl"), "arm64");
        assert_eq!(oci_arch("arm", "armv7-unknown-linux-gnueabihf"), "armv7");
        assert_eq!(oci_arch("arm", "arm-unknown-linux-gnueabihf"), "armv6");
        assert_eq!(
            oci_arch("riscv64", "riscv64gc-unknown-linux-gnu"),
            "riscv64"
        );
    }

    /// The long version names version, revision, arch and target.
    #[test]
    fn long_version_has_every_part() {
        let v = long_version();
        assert!(v.starts_with(VERSION), "{v}");
        assert!(
            v.contains(GIT_REVISION) && v.contains(TARGET) && v.contains(arch()),
            "{v}"
        );
    }
}
