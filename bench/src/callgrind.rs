//! Counting a process's instructions with Valgrind's callgrind: the command
//! line that runs a program under it, the request for a dump (through
//! `callgrind_control`, which reaches the running process by `vgdb`), and
//! reading a dump's total instruction count (`Ir`).
//!
//! A dump writes the counts since the previous dump (or the start) and
//! resets them, so dumps at chosen moments split one run into parts whose
//! counts add up to the whole run's (checked here on a deterministic
//! program: three parts summed to the undumped run's total within 4
//! instructions). It does not own which moments those are: that is
//! [`crate::instructions`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context as _, Error, Result};

/// Where Valgrind's tools are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `valgrind`.
    pub valgrind: PathBuf,
    /// `callgrind_control`.
    pub control: PathBuf,
}

impl Tools {
    /// The arguments that run `program args…` under callgrind, writing
    /// its dumps to `out` (`out.1`, `out.2`… per requested dump, `out`
    /// itself at exit). Valgrind's own messages go to the program's log.
    pub fn wrap(&self, out: &Path, program: &Path, args: &[String]) -> Vec<String> {
        let mut all = vec![
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
            // Per-line costs are not read; per-function ones keep the
            // dump small enough to write in a moment.
            "--dump-line=no".to_owned(),
            program.display().to_string(),
        ];
        all.extend(args.iter().cloned());
        all
    }

    /// Whether both tools answer (`valgrind --version`, and
    /// `callgrind_control` exists); the reason if not.
    pub fn check(&self) -> std::result::Result<String, String> {
        let version = std::process::Command::new(&self.valgrind)
            .arg("--version")
            .output()
            .map_err(|e| format!("{}: {e}", self.valgrind.display()))?;
        if !version.status.success() {
            return Err(format!(
                "{} --version exited with {}",
                self.valgrind.display(),
                version.status
            ));
        }
        let found = self.control.is_absolute() && self.control.exists()
            || std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(&self.control).exists())
            });
        if !found {
            return Err(format!("{} not found", self.control.display()));
        }
        Ok(String::from_utf8_lossy(&version.stdout).trim().to_owned())
    }

    /// Asks the callgrind run of `pid` for dump number `n`, named `hint`,
    /// and waits up to `timeout` until it is written to `out.n`; returns
    /// its instruction count. The count covers everything since the
    /// previous dump.
    pub async fn dump(
        &self,
        pid: u32,
        out: &Path,
        n: u32,
        hint: &str,
        timeout: Duration,
    ) -> Result<u64> {
        let file = dump_path(out, n);
        let deadline = Instant::now() + timeout;
        let asked = tokio::process::Command::new(&self.control)
            .arg(format!("--dump={hint}"))
            .arg(pid.to_string())
            .output();
        let asked = tokio::time::timeout(timeout, asked)
            .await
            .map_err(|_| Error::Process(format!("callgrind_control --dump {pid}: timed out")))?
            .context(|| format!("running {}", self.control.display()))?;
        if !asked.status.success() {
            return Err(Error::Process(format!(
                "callgrind_control --dump={hint} {pid} exited with {}: {}",
                asked.status,
                String::from_utf8_lossy(&asked.stderr).trim()
            )));
        }
        // The dump is written by the process itself; a complete one ends
        // with its `totals:` line, so poll until that is there.
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(dump) = parse(&text)
            {
                if dump.trigger != format!("dump {hint}") {
                    return Err(Error::parse(
                        file.display().to_string(),
                        format!("expected the dump {hint:?}, found {:?}", dump.trigger),
                    ));
                }
                return Ok(dump.ir);
            }
            if Instant::now() >= deadline {
                return Err(Error::Process(format!(
                    "no complete callgrind dump {} within {timeout:?}",
                    file.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The file of requested dump `n` (from 1) of a run writing to `out`.
pub fn dump_path(out: &Path, n: u32) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// What one callgrind dump says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// Why it was written: `dump HINT` for a requested dump, `Program
    /// termination` for the last.
    pub trigger: String,
    /// Instructions executed in the part it covers, over every thread.
    pub ir: u64,
}

/// Reads a dump in callgrind's format: the `events:` line names the
/// columns, the `totals:` line at the end sums every cost line. `totals:`
/// is read rather than the header's `summary:`, which is not the sum of
/// the part after a `--zero` (seen here: 124 394 502 against totals of
/// 127 858 716); the two agree on dumps without zeroing. A file without
/// `totals:` is incomplete (still being written) and an error.
pub fn parse(text: &str) -> Result<Dump> {
    let mut events: Option<Vec<&str>> = None;
    let mut trigger = String::new();
    let mut totals: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("events:") {
            events = Some(rest.split_whitespace().collect());
        } else if let Some(rest) = line.strip_prefix("desc: Trigger:") {
            trigger = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("totals:") {
            totals = Some(rest);
        }
    }
    let events = events.ok_or_else(|| Error::parse("callgrind dump", "no events: line"))?;
    let column = events
        .iter()
        .position(|e| *e == "Ir")
        .ok_or_else(|| Error::parse("callgrind dump", "no Ir among the events"))?;
    let totals = totals.ok_or_else(|| Error::parse("callgrind dump", "no totals: line"))?;
    let ir = totals
        .split_whitespace()
        .nth(column)
        .ok_or_else(|| Error::parse("callgrind dump", format!("totals: has no column {column}")))?
        .parse::<u64>()
        .map_err(|e| Error::parse("callgrind dump totals", e))?;
    Ok(Dump { trigger, ir })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real dump's header and tail (callgrind 3.19, `--dump=work`).
    const DUMP: &str = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\n\
        pid: 16840\ncmd:  bash -c true\npart: 1\n\n\ndesc: I1 cache: \n\
        desc: Timerange: Basic block 0 - 100789387\ndesc: Trigger: dump work\n\n\
        positions: line\nevents: Ir\nsummary: 124394502\n\n\n\
        ob=(1) /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\nfn=(0) 0x1ab70\n\
        0 124394502\n\ntotals: 127858716\n";

    /// The totals line is the count, and the trigger names the dump.
    #[test]
    fn reads_totals_and_trigger() {
        assert_eq!(
            parse(DUMP).unwrap(),
            Dump {
                trigger: "dump work".into(),
                ir: 127_858_716
            }
        );
    }

    /// With several events, Ir is found by the `events:` line's order.
    #[test]
    fn finds_ir_among_several_events() {
        let text = "events: Dr Ir Dw\ndesc: Trigger: Program termination\n\
                    fn=(1) main\n3 1 2 3\ntotals: 10 20 30\n";
        let dump = parse(text).unwrap();
        assert_eq!(dump.ir, 20);
        assert_eq!(dump.trigger, "Program termination");
    }

    /// A dump still being written (no totals yet) or without Ir is an error.
    #[test]
    fn incomplete_dumps_are_errors() {
        let cut = &DUMP[..DUMP.find("totals:").unwrap()];
        assert!(parse(cut).unwrap_err().to_string().contains("no totals"));
        let no_ir = "events: Dr\ntotals: 5\n";
        assert!(parse(no_ir).unwrap_err().to_string().contains("no Ir"));
        let garbled = "events: Ir\ntotals: many\n";
        assert!(parse(garbled).is_err());
    }

    /// Dump files are numbered after the output file; the wrapped command
    /// runs the program with its own arguments after callgrind's.
    #[test]
    fn names_dumps_and_wraps_the_command() {
        assert_eq!(
            dump_path(Path::new("/w/ingest.cg"), 2),
            PathBuf::from("/w/ingest.cg.2")
        );
        let tools = Tools {
            valgrind: "valgrind".into(),
            control: "callgrind_control".into(),
        };
        let args = tools.wrap(
            Path::new("/w/ingest.cg"),
            Path::new("/bin/testbed"),
            &[
                "ingest".to_owned(),
                "--partitions".to_owned(),
                "4".to_owned(),
            ],
        );
        assert_eq!(
            args,
            [
                "--tool=callgrind",
                "--callgrind-out-file=/w/ingest.cg",
                "--dump-line=no",
                "/bin/testbed",
                "ingest",
                "--partitions",
                "4"
            ]
        );
    }
}
