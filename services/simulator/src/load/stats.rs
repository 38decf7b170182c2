//! Run figures: the latency histogram (HDR, microseconds) and counters,
//! overall and per phase.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency recorded: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

// The bounds are constants that hdrhistogram accepts (low >= 1, high >=
// 2 * low, 3 significant figures): this cannot fail at run time.
#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Counters of one phase or of the whole run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Batch-ack latency from each batch's intended send time, µs.
    pub latency: Histogram<u64>,
    /// Events handed to the transport (first attempts only).
    pub sent: u64,
    /// Batches handed to the transport (first attempts only).
    pub batches: u64,
    /// Events acknowledged as accepted (including duplicates of earlier attempts).
    pub accepted: u64,
    /// Events refused by validation.
    pub rejected: u64,
    /// Accepted events the server recognised as re-sent duplicates.
    pub duplicates: u64,
    /// Batches re-sent after a retryable refusal or a broken stream.
    pub retried: u64,
    /// Events in those re-sent batches.
    pub retried_events: u64,
    /// Batches given up after the retry limit or a non-retryable error.
    pub failed_batches: u64,
    /// Events in failed batches.
    pub failed: u64,
    /// Events sent per kind (gpu, tokens, metric; first attempts).
    pub sent_kinds: [u64; 3],
    /// Events the server acknowledged as accepted, per kind: the
    /// expectation `--verify` checks the pipeline against.
    pub accepted_kinds: [u64; 3],
    /// Events rejected by validation, per kind.
    pub rejected_kinds: [u64; 3],
    /// Outcomes by gRPC status code name (one per attempt).
    pub status_codes: BTreeMap<String, u64>,
    /// Answers that broke the contract: an OK acknowledgement whose
    /// accepted and rejected events do not add up to the batch, with a
    /// rejection out of range or out of order, or more duplicates than
    /// accepted events. The batch is re-sent.
    pub protocol_errors: u64,
    /// Batches re-sent, by why: the refusal's status code name
    /// (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, ...), `PROTOCOL_ERROR`, or
    /// `STREAM_BROKEN` (unacknowledged when their stream ended).
    pub resent: BTreeMap<String, u64>,
    /// Sequences of the first [`FAILED_SAMPLE`] batches given up, so a
    /// report can name them.
    pub failed_sequences: Vec<u64>,
    /// When the last batch with accepted events was acknowledged.
    pub last_accepted_at: Option<Instant>,
    /// The longest time between two acknowledgements that accepted events:
    /// how long publishing stopped at worst (a Redis failover, a restart).
    pub longest_gap: Duration,
    /// When that gap ended (the acknowledgement that closed it).
    pub longest_gap_ended: Option<Instant>,
}

/// How many given-up batch sequences a report names.
pub const FAILED_SAMPLE: usize = 10;

impl Default for Figures {
    fn default() -> Self {
        Self {
            latency: histogram(),
            sent: 0,
            batches: 0,
            accepted: 0,
            rejected: 0,
            duplicates: 0,
            retried: 0,
            retried_events: 0,
            failed_batches: 0,
            failed: 0,
            sent_kinds: [0; 3],
            accepted_kinds: [0; 3],
            rejected_kinds: [0; 3],
            status_codes: BTreeMap::new(),
            protocol_errors: 0,
            resent: BTreeMap::new(),
            failed_sequences: Vec::new(),
            last_accepted_at: None,
            longest_gap: Duration::ZERO,
            longest_gap_ended: None,
        }
    }
}

impl Figures {
    /// Records one latency (saturating at the histogram's top).
    pub fn record_latency(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let _ = self.latency.record(us);
    }

    /// A latency quantile (0..1).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q))
    }

    /// Notes an acknowledgement that accepted events, at `at`: the gap since
    /// the previous one may be the longest.
    pub fn note_accepted(&mut self, at: Instant) {
        if let Some(last) = self.last_accepted_at {
            let gap = at.saturating_duration_since(last);
            if gap > self.longest_gap {
                self.longest_gap = gap;
                self.longest_gap_ended = Some(at);
            }
        }
        self.last_accepted_at = Some(at.max(self.last_accepted_at.unwrap_or(at)));
    }

    /// The longest gap between accepting acknowledgements, counting the one
    /// still open at `now` (for checks while the schedule runs).
    pub fn longest_gap_until(&self, now: Instant) -> Duration {
        let open = self
            .last_accepted_at
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.longest_gap.max(open)
    }

    /// Counts an outcome by status code name.
    pub fn count_status(&mut self, code: tonic::Code) {
        *self.status_codes.entry(code_name(code)).or_default() += 1;
    }

    /// Counts a batch of `events` events re-sent for `reason`.
    pub fn count_resent(&mut self, reason: &str, events: u64) {
        self.retried += 1;
        self.retried_events += events;
        *self.resent.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts batch `seq` of `events` events as given up.
    pub fn count_failed(&mut self, seq: u64, events: u64) {
        self.failed_batches += 1;
        self.failed += events;
        if self.failed_sequences.len() < FAILED_SAMPLE {
            self.failed_sequences.push(seq);
        }
    }

    /// Events sent that were never acknowledged, per kind: neither accepted
    /// nor rejected in an OK answer (given up after refusals, or still
    /// unanswered when the run ended).
    pub fn unacknowledged_kinds(&self) -> [u64; 3] {
        std::array::from_fn(|k| {
            self.sent_kinds[k].saturating_sub(self.accepted_kinds[k] + self.rejected_kinds[k])
        })
    }

    /// Events sent and never answered at all (not even given up): still in
    /// flight or queued when the drain timeout ended.
    pub fn unanswered(&self) -> u64 {
        self.sent
            .saturating_sub(self.accepted + self.rejected)
            .saturating_sub(self.failed)
    }
}

/// gRPC status code names as grpcurl and ghz print them (`OK`,
/// `RESOURCE_EXHAUSTED`, ...).
pub fn code_name(code: tonic::Code) -> String {
    let debug = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    match out.as_str() {
        "O_K" => "OK".to_owned(),
        _ => out,
    }
}

/// Whole-run and per-phase figures.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// The whole run.
    pub total: Figures,
    /// One per scenario phase.
    pub phases: Vec<Figures>,
    /// When these figures were made, just before the run's first batch:
    /// what the report's times are counted from.
    pub started: Option<Instant>,
}

impl RunFigures {
    /// Figures for `phases` phases, starting now.
    pub fn new(phases: usize) -> Self {
        Self {
            total: Figures::default(),
            phases: vec![Figures::default(); phases],
            started: Some(Instant::now()),
        }
    }

    /// Applies `f` to the total and to the phase's figures.
    pub fn update(&mut self, phase: usize, mut f: impl FnMut(&mut Figures)) {
        f(&mut self.total);
        if let Some(p) = self.phases.get_mut(phase) {
            f(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status names match ghz/grpcurl's.
    #[test]
    fn code_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
    }

    /// The longest gap is the widest space between accepting
    /// acknowledgements, and the open one counts only when asked for.
    #[test]
    fn longest_gap_between_accepted_acknowledgements() {
        let t0 = Instant::now();
        let mut f = Figures::default();
        assert_eq!(f.longest_gap_until(t0), Duration::ZERO);
        for ms in [0, 10, 20, 2_020, 2_030] {
            f.note_accepted(t0 + Duration::from_millis(ms));
        }
        assert_eq!(f.longest_gap, Duration::from_secs(2));
        assert_eq!(f.longest_gap_ended, Some(t0 + Duration::from_millis(2_020)));
        let later = t0 + Duration::from_millis(5_030);
        assert_eq!(f.longest_gap_until(later), Duration::from_secs(3));
        assert_eq!(f.longest_gap, Duration::from_secs(2));
    }

    /// Quantiles come back within the histogram's precision.
    #[test]
    fn quantiles() {
        let mut f = Figures::default();
        for ms in 1..=100 {
            f.record_latency(Duration::from_millis(ms));
        }
        let p50 = f.quantile(0.5).as_micros() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.01, "{p50}");
        let max = f.quantile(1.0).as_micros() as f64;
        assert!((max - 100_000.0).abs() / 100_000.0 < 0.01, "{max}");
    }
}
