//! Flag defaults written once.
//!
//! A service's limits are clap `#[arg(..., default_value...)]` fields, and
//! the same struct is built in code (tests, `testbed all`, the benchmark
//! harness) through `Default`. Writing the defaults twice let them drift
//! (the tests that compared them checked only some fields). Here `Default`
//! is the flags' own defaults: [`defaults`] parses an empty command line.
//!
//! This crate owns only that; it knows no flag.
#![forbid(unsafe_code)]

use clap::{Args, Command, FromArgMatches};

/// `T` with every flag at its default, as an empty command line gives it.
///
/// Environment variables are not read (every `env = ...` is dropped for this
/// parse): a default is what the code says, not what this process's
/// environment happens to hold. Fails only if a flag of `T` is required and
/// has no default, a defect the caller's tests catch.
pub fn defaults<T: Args + FromArgMatches>() -> Result<T, clap::Error> {
    let matches = command::<T>().try_get_matches_from(["defaults"])?;
    T::from_arg_matches(&matches)
}

/// Implements `Default` for a clap `Args` struct as its flags' defaults
/// ([`defaults`]): `testbed_flags::default_from_flags!(IngestConfig);`.
/// Each such config should test that its default parses (a flag without a
/// default would make `default()` panic, which is a defect of the struct).
#[macro_export]
macro_rules! default_from_flags {
    ($ty:ty) => {
        impl ::core::default::Default for $ty {
            /// Every flag at its default: written once, in the `#[arg]`s.
            #[allow(clippy::expect_used)]
            fn default() -> Self {
                $crate::defaults().expect("every flag has a default")
            }
        }
    };
}

/// `T` parsed from `args` (the first is the program's name) as a command
/// line holding only `T`'s flags, environment variables included: what a
/// config's own tests need instead of a wrapper `Parser` struct each.
pub fn parse_from<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: Args + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let matches = T::augment_args(Command::new("flags")).try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// The command [`defaults`] parses: `T`'s flags without their env vars.
fn command<T: Args>() -> Command {
    T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, clap::Args)]
    struct Limits {
        #[arg(long, env = "TESTBED_FLAGS_TEST_BATCH", default_value_t = 7)]
        batch: u32,
        #[arg(long, default_value = "250ms", value_parser = humantime_like)]
        linger: Duration,
        #[arg(long)]
        name: Option<String>,
    }

    fn humantime_like(value: &str) -> Result<Duration, String> {
        value
            .strip_suffix("ms")
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("not N ms: {value}"))
    }

    #[derive(Debug, clap::Args)]
    struct Required {
        #[arg(long)]
        target: String,
    }

    /// Every field takes its flag's default, parsed as the flag is.
    #[test]
    fn defaults_are_the_flags_defaults() {
        let d: Limits = defaults().unwrap();
        assert_eq!(d.batch, 7);
        assert_eq!(d.linger, Duration::from_millis(250));
        assert_eq!(d.name, None);
    }

    /// The parse reads no environment variable.
    #[test]
    fn env_vars_are_not_read() {
        let command = command::<Limits>();
        assert!(command.get_arguments().all(|a| a.get_env().is_none()));
        let with_env = Limits::augment_args(Command::new("x"));
        assert!(with_env.get_arguments().any(|a| a.get_env().is_some()));
    }

    /// A command line of `T`'s flags parses into `T`, and a bad value is an
    /// error naming its flag.
    #[test]
    fn parse_from_parses_and_refuses() {
        let l: Limits = parse_from(["x", "--batch", "9", "--linger", "5ms"]).unwrap();
        assert_eq!((l.batch, l.linger), (9, Duration::from_millis(5)));
        let err = parse_from::<Limits, _, _>(["x", "--linger", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--linger"), "{err}");
    }

    default_from_flags!(Limits);

    /// The macro's `Default` is the flags' defaults.
    #[test]
    fn default_from_flags_is_the_defaults() {
        let d = Limits::default();
        assert_eq!((d.batch, d.linger), (7, Duration::from_millis(250)));
    }

    /// A required flag without a default is an error, not a panic.
    #[test]
    fn a_required_flag_is_an_error() {
        assert!(defaults::<Required>().is_err());
    }
}
