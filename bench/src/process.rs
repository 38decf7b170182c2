//! Child processes that cannot outlive the harness.
//!
//! Every process the harness starts is a [`Proc`]: [`Proc::terminate`] is
//! the normal end of a step (SIGTERM, a grace period, then SIGKILL), and
//! `Drop` does the same synchronously, so an error, a panic or a signal
//! that unwinds the harness stops everything it started. Where util-linux's
//! `setpriv` exists, children are also started with `--pdeathsig SIGKILL`,
//! so even a harness killed with SIGKILL takes them along: the kernel sends
//! the signal when the *thread* that forked the child exits, which is why
//! the harness runs on a current-thread runtime (every spawn happens on the
//! main thread).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::error::{Context as _, Error, Result};

/// How long `Drop` waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(3);

/// A running child process, stopped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<std::process::Child>,
    pid: u32,
    log: PathBuf,
}

/// Whether `setpriv --pdeathsig` can wrap children (checked once).
fn setpriv() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .as_deref()
}

impl Proc {
    /// Starts `program args…` with `env` added and the `remove`d variables
    /// taken out of the inherited environment; stdout and stderr go to
    /// `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        remove: &[String],
        log: &Path,
    ) -> Result<Self> {
        let out = File::create(log).context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .context(|| format!("duplicating {}", log.display()))?;
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "SIGKILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for key in remove {
            command.env_remove(key);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .context(|| format!("starting {name} ({})", program.display()))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            name: name.to_owned(),
            pid: child.id(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The process id (also the id of its `/proc` entry).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .context(|| format!("waiting for {}", self.name)),
            None => Err(Error::Process(format!("{} was already reaped", self.name))),
        }
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM (the services' graceful shutdown path).
    pub fn signal_term(&self) {
        signal(self.pid, Signal::TERM);
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns how it ended
    /// and whether it needed the SIGKILL.
    pub async fn terminate(mut self, grace: Duration) -> Result<Stopped> {
        if let Some(status) = self.try_exit()? {
            self.child = None;
            return Ok(Stopped {
                status,
                killed: false,
            });
        }
        self.signal_term();
        let graceful = self.wait(grace).await?;
        let (status, killed) = match graceful {
            Some(status) => (status, false),
            None => {
                tracing::warn!(name = self.name, grace = ?grace, "did not stop on SIGTERM; killing");
                signal(self.pid, Signal::KILL);
                let status = self
                    .wait(Duration::from_secs(5))
                    .await?
                    .ok_or_else(|| Error::Process(format!("{} survived SIGKILL", self.name)))?;
                (status, true)
            }
        };
        self.child = None;
        Ok(Stopped { status, killed })
    }

    /// SIGKILL at once, with no grace (a crash, an OOM kill or a lost node
    /// as the others see it), then reaps it. The recovery step's fault.
    pub async fn kill(mut self) -> Result<ExitStatus> {
        signal(self.pid, Signal::KILL);
        let status = self
            .wait(Duration::from_secs(5))
            .await?
            .ok_or_else(|| Error::Process(format!("{} survived SIGKILL", self.name)))?;
        self.child = None;
        Ok(status)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether SIGKILL was needed.
    pub killed: bool,
}

fn signal(pid: u32, sig: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    // ESRCH (already gone) is the only expected failure; nothing to do.
    let _ = kill_process(pid, sig);
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(self.pid, Signal::TERM);
        let deadline = Instant::now() + DROP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = self.name, "still running at drop; killing");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Environment variables a child must not inherit: the harness passes
/// every setting as a flag, so a stray `TESTBED_*`, `OTEL_*` or `RUST_LOG`
/// in the caller's environment cannot change what is measured.
pub fn inherited_settings() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            k.starts_with("TESTBED_")
                || k.starts_with("OTEL_")
                || k == "REDIS_URL"
                || k == "REDIS_CLUSTER"
                || k == "RUST_LOG"
        })
        .collect()
}

/// The last line of a log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(empty log)");
    format!("{last} (log: {})", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path) -> Proc {
        Proc::spawn(
            "sleep",
            Path::new("sleep"),
            &["30".to_owned()],
            &[],
            &[],
            &dir.join("sleep.log"),
        )
        .unwrap()
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    /// Dropping a guard stops its process (SIGTERM is enough for sleep).
    #[test]
    fn drop_stops_the_process() {
        let dir = std::env::temp_dir();
        let proc = sleeper(&dir);
        let pid = proc.pid();
        assert!(alive(pid));
        drop(proc);
        assert!(!alive(pid));
    }

    /// `terminate` reports a signal death without needing SIGKILL.
    #[tokio::test(flavor = "current_thread")]
    async fn terminate_uses_sigterm_first() {
        let dir = std::env::temp_dir();
        let proc = sleeper(&dir);
        let pid = proc.pid();
        let stopped = proc.terminate(Duration::from_secs(5)).await.unwrap();
        assert!(!stopped.killed);
        assert!(!stopped.status.success());
        assert!(!alive(pid));
    }

    /// `kill` ends it by SIGKILL, with no SIGTERM first, and reaps it.
    #[tokio::test(flavor = "current_thread")]
    async fn kill_is_sigkill() {
        use std::os::unix::process::ExitStatusExt as _;
        let dir = std::env::temp_dir();
        let proc = sleeper(&dir);
        let pid = proc.pid();
        let status = proc.kill().await.unwrap();
        assert_eq!(status.signal(), Some(9));
        assert!(!alive(pid));
    }
}
