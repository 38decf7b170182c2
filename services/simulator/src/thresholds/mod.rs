//! Pass/fail thresholds of a run (`--threshold`, a scenario file's
//! `thresholds`, `RunSpec.thresholds`): the verdict a pipeline needs.
//!
//! - [`expr`]: the grammar, `METRIC OP VALUE[UNIT][:abort]`, checked
//!   before a run starts.
//! - [`eval`]: the figures a threshold reads ([`Observed`]) and its
//!   verdict ([`Outcome`]).
//! - [`live`]: `:abort` thresholds checked over a sliding window while
//!   the run goes, stopping it early when crossed.
//!
//! Used by both modes ([`crate::cli`] and [`crate::serve`]); it reads the
//! runner's figures ([`crate::load::stats`]) and nothing else.

pub mod eval;
pub mod expr;
pub mod live;

pub use eval::{Observed, Outcome, check_all};
pub use expr::{Threshold, parse_threshold};
pub use live::LiveSettings;
