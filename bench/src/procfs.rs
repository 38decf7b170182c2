//! Footprint of a process from `/proc`: resident memory and CPU time.

use serde::{Deserialize, Serialize};

use crate::error::{Context as _, Error, Result};

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// `VmRSS`: resident set size now, bytes.
    pub rss_bytes: u64,
    /// `VmHWM`: the largest resident set size so far, bytes.
    pub peak_rss_bytes: u64,
    /// `utime + stime`, seconds.
    pub cpu_seconds: f64,
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`).
pub fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`.
pub fn sample(pid: u32) -> Result<Sample> {
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).context(|| format!("reading {status_path}"))?;
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path).context(|| format!("reading {stat_path}"))?;
    let ticks =
        parse_stat_ticks(&stat).ok_or_else(|| Error::parse(&stat_path, "no utime/stime"))?;
    Ok(Sample {
        rss_bytes: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
        cpu_seconds: ticks as f64 / clock_ticks().max(1) as f64,
    })
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`...); none once the
/// process is gone. A child that has exited stays `Z` (its CPU times still
/// readable, whole) until it is reaped.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_state(&stat)
}

fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` (fields 14 and 15) of `/proc/PID/stat`. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are found after a command name with spaces and parens.
    #[test]
    fn stat_fields_after_odd_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    123 45 0 0 20 0 1 0 100 1000 10 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(168));
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_state("1 (a) Z 0"), Some('Z'));
        assert_eq!(parse_state("garbage"), None);
    }

    /// kB figures of /proc/PID/status.
    #[test]
    fn status_lines() {
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    /// This process has a resident set and has used some CPU.
    #[test]
    fn samples_itself() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
        assert!(clock_ticks() >= 100);
    }
}
