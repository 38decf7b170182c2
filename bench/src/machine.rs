//! The machine and revision a run measured: figures only compare between
//! runs on the same kind of machine, and a shared machine's load shows up
//! in them, so both are recorded with the numbers.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What was measured, and on what.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// Host name.
    pub host: String,
    /// CPUs available to the harness.
    pub nproc: usize,
    /// `MemTotal`, MiB.
    pub memory_mib: u64,
    /// First `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` when the run started.
    pub loadavg_start: String,
    /// `/proc/loadavg` when it ended.
    pub loadavg_end: String,
    /// Clock ticks per second used for CPU times.
    pub clk_tck: u64,
    /// `git rev-parse HEAD`, with `-dirty` when the work tree has changes.
    pub git_revision: String,
    /// `testbed --version`.
    pub testbed_version: String,
    /// The `testbed` binary measured.
    pub testbed_bin: String,
    /// `redis-server --version`.
    pub redis_version: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// First line of a command's stdout, empty when it cannot run.
pub fn output(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The `/proc/loadavg` line now.
pub fn loadavg() -> String {
    read("/proc/loadavg")
}

/// The 1, 5 and 15 minute load averages alone (no task counts).
pub fn loadavg_short() -> String {
    loadavg()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    /// Reads everything but `loadavg_end`.
    pub fn detect(testbed: &Path, redis_server: &Path) -> Self {
        let meminfo = read("/proc/meminfo");
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        let git = Path::new("git");
        let mut revision = output(git, &["rev-parse", "HEAD"]);
        let dirty = Command::new(git)
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .ok()
            .is_some_and(|o| !o.stdout.is_empty());
        if dirty && !revision.is_empty() {
            revision.push_str("-dirty");
        }
        Self {
            host: read("/proc/sys/kernel/hostname"),
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mib: memory_kib / 1024,
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            clk_tck: crate::procfs::clock_ticks(),
            git_revision: revision,
            testbed_version: output(testbed, &["--version"]),
            testbed_bin: testbed.display().to_string(),
            redis_version: output(redis_server, &["--version"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's basic facts are found on Linux.
    #[test]
    fn detects_this_machine() {
        let m = Machine::detect(Path::new("/nonexistent/testbed"), Path::new("true"));
        assert!(m.nproc >= 1);
        assert!(m.memory_mib > 0);
        assert!(!m.host.is_empty());
        assert!(m.testbed_version.is_empty());
    }
}
