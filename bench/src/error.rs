//! The harness's one error type: what failed, with the context that says
//! which process, file or step it was about.
//!
//! A probe that does not sustain its rate is a *measurement*, not an error;
//! errors are the harness failing to measure at all (a binary missing, a
//! process that never became ready, a report that cannot be parsed).

use std::path::Path;

/// Why the harness could not measure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed (spawning, reading /proc, writing results).
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A gRPC call to a process under test failed.
    #[error("{context}: {source}")]
    Rpc {
        /// The call and the process.
        context: String,
        /// The status it returned.
        #[source]
        source: Box<tonic::Status>,
    },
    /// A file or output of a tool could not be read as expected.
    #[error("{context}: {detail}")]
    Parse {
        /// What was being read.
        context: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A process under test misbehaved (never ready, exited early).
    #[error("{0}")]
    Process(String),
    /// The chart could not be drawn.
    #[error("chart {path}: {detail}")]
    Chart {
        /// The PNG being drawn.
        path: String,
        /// The backend's message.
        detail: String,
    },
    /// SIGINT or SIGTERM: every process was stopped.
    #[error("interrupted by a signal; every process started was stopped")]
    Interrupted,
}

/// The harness's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A parse failure of `context`.
    pub fn parse(context: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Parse {
            context: context.into(),
            detail: detail.to_string(),
        }
    }

    /// A chart failure of `path`.
    pub fn chart(path: &Path, detail: impl std::fmt::Display) -> Self {
        Self::Chart {
            path: path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Adds context to I/O and RPC results.
pub trait Context<T> {
    /// Wraps the error with `context()`, evaluated only on failure.
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, tonic::Status> {
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Rpc {
            context: context().into(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context comes first in the message, then the cause.
    #[test]
    fn context_prefixes_the_cause() {
        let err = Err::<(), _>(std::io::Error::other("boom"))
            .context(|| "reading /proc/1/stat")
            .unwrap_err();
        assert_eq!(err.to_string(), "reading /proc/1/stat: boom");
        let err = Err::<(), _>(tonic::Status::unavailable("down"))
            .context(|| "GetPipelineStats on query")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("GetPipelineStats on query: "),
            "{err}"
        );
    }
}
