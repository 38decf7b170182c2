//! `--output html`: the run's report as one self-contained page, its
//! charts inline SVG and its style inline, so it opens from a file, a CI
//! artifact or a mail attachment without any network.
//!
//! - [`charts`]: line and bar charts drawn as SVG (why by hand: there).
//! - `page`: the page: verdict, summary, charts, settings.

pub mod charts;
mod page;

pub use page::render;

#[cfg(test)]
mod tests;
