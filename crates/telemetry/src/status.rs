//! `GET /` on the metrics port: a live status page (what runs, its build,
//! the health of each service, and whatever figures the process reports),
//! and `GET /status.json`, the same as JSON.
//!
//! This crate does not know the services: the binary gives a
//! [`StatusSource`] that fills a [`StatusPage`] on each request. The page
//! is rendered on the server with a `<meta http-equiv="refresh">`, so it
//! refreshes itself without any script and fetches nothing else: it works
//! offline, in a terminal browser, and in a headless one's `--dump-dom`.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// What the status page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusPage {
    /// The process's role (`all`, `ingest`, `worker`, `query`, `sim`).
    pub role: String,
    /// Version, revision, architecture and target triple.
    pub version: String,
    /// Architecture in Kubernetes naming.
    pub arch: String,
    /// Health per service (`""` is the whole process): `SERVING`,
    /// `NOT_SERVING`, or why it could not be read.
    pub health: Vec<(String, String)>,
    /// Tables of live figures, in order.
    pub sections: Vec<StatusSection>,
}

/// One table of the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusSection {
    /// Heading; also the table's `id` (lower case, spaces as `-`).
    pub title: String,
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows, as many cells as columns.
    pub rows: Vec<Vec<String>>,
    /// A line under the table (why figures are missing, what they mean).
    pub note: Option<String>,
}

/// Fills the status page on each request to `/` or `/status.json`.
pub trait StatusSource: Send + Sync + 'static {
    /// The page as of now.
    fn snapshot(&self) -> Pin<Box<dyn Future<Output = StatusPage> + Send + '_>>;
}

/// How often the page reloads itself, seconds.
pub const REFRESH_SECONDS: u32 = 2;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn id_of(title: &str) -> String {
    title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111}h1{font-size:20px}\
h2{font-size:16px;margin-top:22px}table{border-collapse:collapse}td,th{padding:3px 14px 3px 0;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.SERVING{color:#15803d;font-weight:600}\
.bad{color:#b91c1c;font-weight:600}.note{color:#4b5563}";

/// The page as HTML (well-formed XML too).
pub fn render(page: &StatusPage) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><meta http-equiv="refresh" content="{REFRESH_SECONDS}"/><title>testbed {role}</title><style>{STYLE}</style></head><body><h1>testbed <span id="role">{role}</span></h1><table id="build"><tr><th>version</th><td id="version">{version}</td></tr><tr><th>arch</th><td id="arch">{arch}</td></tr></table><h2>Health</h2><table id="health">"#,
        role = escape(&page.role),
        version = escape(&page.version),
        arch = escape(&page.arch),
    );
    for (service, status) in &page.health {
        let class = if status == "SERVING" {
            "SERVING"
        } else {
            "bad"
        };
        let name = if service.is_empty() {
            "(process)"
        } else {
            service
        };
        let _ = write!(
            out,
            r#"<tr><th>{}</th><td class="{class}" data-service="{}">{}</td></tr>"#,
            escape(name),
            escape(service),
            escape(status)
        );
    }
    out.push_str("</table>");
    for section in &page.sections {
        let _ = write!(
            out,
            r#"<h2>{}</h2><table id="{}"><tr>"#,
            escape(&section.title),
            id_of(&section.title)
        );
        for c in &section.columns {
            let _ = write!(out, "<th>{}</th>", escape(c));
        }
        out.push_str("</tr>");
        for row in &section.rows {
            out.push_str("<tr>");
            // The first cell names the row; the others are figures.
            for (i, cell) in row.iter().enumerate() {
                let class = if i == 0 { "k" } else { "n" };
                let _ = write!(out, r#"<td class="{class}">{}</td>"#, escape(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        if let Some(note) = &section.note {
            let _ = write!(out, r#"<p class="note">{}</p>"#, escape(note));
        }
    }
    let _ = write!(
        out,
        r#"<p class="note">Refreshes every {REFRESH_SECONDS} s. The same as JSON: <a href="status.json">/status.json</a>; Prometheus metrics: <a href="metrics">/metrics</a>.</p></body></html>"#
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The page shows the role, each service's health and each section
    /// as a table named after its title, escaped.
    #[test]
    fn renders_health_and_sections() {
        let page = StatusPage {
            role: "all".into(),
            version: "0.1.0 (rev x, amd64, x86_64-unknown-linux-gnu)".into(),
            arch: "amd64".into(),
            health: vec![
                (String::new(), "SERVING".into()),
                ("testbed.v1.QueryService".into(), "NOT_SERVING".into()),
            ],
            sections: vec![StatusSection {
                title: "Backlog per partition".into(),
                columns: vec!["partition".into(), "backlog".into()],
                rows: vec![vec!["0".into(), "12".into()]],
                note: Some("a <note>".into()),
            }],
        };
        let html = render(&page);
        assert!(html.contains(r#"<span id="role">all</span>"#));
        assert!(html.contains(
            r#"<td class="bad" data-service="testbed.v1.QueryService">NOT_SERVING</td>"#
        ));
        assert!(html.contains(r#"<td class="SERVING" data-service="">SERVING</td>"#));
        assert!(html.contains(r#"<table id="backlog-per-partition"><tr><th>partition</th><th>backlog</th></tr><tr><td class="k">0</td><td class="n">12</td></tr></table>"#));
        assert!(html.contains("a &lt;note&gt;"));
        assert!(html.contains(r#"<meta http-equiv="refresh" content="2"/>"#));
    }
}
