//! Captures the git revision and the target triple at build time.
//!
//! `TESTBED_GIT_REVISION` wins when set (container builds copy the sources
//! without `.git`); otherwise `git rev-parse` is asked, and "unknown" is used
//! when neither answers. A build never fails for want of git.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TESTBED_GIT_REVISION");
    let revision = std::env::var("TESTBED_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TESTBED_GIT_REVISION={revision}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=TESTBED_TARGET={target}");

    // Re-run when HEAD moves, so the revision is never stale.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
}

fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--"])
        .status()
        .map(|status| !status.success())
        .unwrap_or(false);
    Some(if dirty {
        format!("{revision}-dirty")
    } else {
        revision
    })
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
