//! When a read loop reads its own pending entries again: entries Redis
//! delivered to this consumer whose reply never reached it.
//!
//! A read (or a claim) that times out is not undone in Redis: the command
//! may still run, later, and move entries into this consumer's pending
//! list with nobody left to read the reply. Redis frozen for a second
//! (SIGSTOP, a stalled disk, a long fork) does exactly that: the timed-out
//! `XREADGROUP` waits in the dropped connection's buffer and runs when
//! Redis wakes, possibly after the pass that was meant to recover it.
//! Nothing else would find those entries before `--claim-idle` (the
//! consumer is alive, so no takeover), so a run stalls for 30 s.
//!
//! The policy: a pass is due at start and after any failure; a pass that
//! fails stays due; and once a read succeeds after a failure (Redis
//! answers again, so every command sent before has run: a dropped
//! connection's command was read in an earlier event-loop turn than a
//! reply that came after it), one more pass is due, which finds what the
//! late commands delivered.

/// The recovery state of one partition's read loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recovery {
    /// A pass over the own pending entries is due now.
    due: bool,
    /// A pass is due after the next successful read.
    after_success: bool,
}

impl Recovery {
    /// At start: a restart under the same name resumes its pending entries.
    pub(super) fn at_start() -> Self {
        Self {
            due: true,
            after_success: false,
        }
    }

    /// Whether a pass is due now (and it is no longer, until told again).
    pub(super) fn take_due(&mut self) -> bool {
        std::mem::take(&mut self.due)
    }

    /// A read, claim or pass failed: its entries may be ours unseen, now
    /// or when the command runs late.
    pub(super) fn failed(&mut self) {
        self.due = true;
        self.after_success = true;
    }

    /// A read succeeded: Redis answers again.
    pub(super) fn read_succeeded(&mut self) {
        if std::mem::take(&mut self.after_success) {
            self.due = true;
        }
    }

    /// A pass read a full batch of entries: more may be waiting.
    pub(super) fn more_pending(&mut self) {
        self.due = true;
    }
}

#[cfg(test)]
mod tests {
    use super::Recovery;

    /// A pass is due at start, once.
    #[test]
    fn a_pass_is_due_at_start_once() {
        let mut r = Recovery::at_start();
        assert!(r.take_due());
        assert!(!r.take_due());
        r.read_succeeded();
        assert!(!r.take_due(), "success alone schedules nothing");
    }

    /// After a failure: a pass at once, and another after the next
    /// successful read (what a late command delivered), then none.
    #[test]
    fn a_failure_makes_a_pass_due_now_and_after_the_next_success() {
        let mut r = Recovery::at_start();
        r.take_due();
        r.failed();
        assert!(r.take_due());
        assert!(!r.take_due());
        r.read_succeeded();
        assert!(r.take_due(), "no pass after Redis answered again");
        r.read_succeeded();
        assert!(!r.take_due());
    }

    /// A pass that fails stays due, and still owes one after success.
    #[test]
    fn a_failed_pass_stays_due() {
        let mut r = Recovery::at_start();
        assert!(r.take_due());
        r.failed();
        assert!(r.take_due());
        r.failed();
        assert!(r.take_due());
        r.read_succeeded();
        assert!(r.take_due());
        assert!(!r.take_due());
    }
}
