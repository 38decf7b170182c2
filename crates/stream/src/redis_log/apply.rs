//! The apply, the exactly-once step: how an apply is carried out (a
//! merged apply first, the script's own merge when that raced), and what
//! a merged apply commits.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Values merged outside the script, and the version they were read at.
pub(super) struct Merged<'o> {
    pub(super) version: String,
    pub(super) targets: Vec<merge::Target<'o>>,
    /// Per target, the values of its fields.
    pub(super) values: Vec<Vec<Vec<u8>>>,
    /// Per target, whether each value differs from what the field held.
    pub(super) changed: Vec<Vec<bool>>,
}

/// What `apply.lua` answered.
pub(super) enum Applied {
    Done(ApplyOutcome),
    /// The partition's version moved since the caller read it.
    Raced,
}

/// What an apply does with its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition<'r> {
    /// Counts them processed and writes their aggregates.
    Process,
    /// Copies them to the dead-letter stream with this reason (and writes
    /// the run ledgers' dead-letter counts).
    DeadLetter(&'r str),
}

/// The values an apply sends: read (and merged) here at a version of the
/// partition, or not read at all (the script merges them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadAt<'v> {
    /// Nothing was read outside the script.
    Unread,
    /// Read at this version; the script refuses the apply if it moved.
    Version(&'v str),
}

impl RedisLog {
    /// The one atomic step of `apply.lua`: ack `entries` (all of
    /// `partition`) and apply `ops`, as `disposition` says. A normal apply
    /// merges here first ([`merge`]); the script merges when that raced.
    pub(super) async fn ack_with(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        disposition: Disposition<'_>,
        ops: &Ops,
        what: &'static str,
    ) -> Result<ApplyOutcome, StoreError> {
        if entries.is_empty() {
            return Ok(ApplyOutcome::Applied);
        }
        self.ensure_settings().await?;
        if disposition == Disposition::Process {
            if let Some(outcome) = self.apply_merged(partition, entries, events, ops).await? {
                return Ok(outcome);
            }
            // Another apply or a prune of the partition wrote between the
            // read and the script: merge in the script, which cannot race.
            tracing::debug!(
                partition,
                "apply raced another writer; merging in the script"
            );
        }
        let (mut invocation, mut keys) =
            self.invocation(partition, entries, events, disposition, ReadAt::Unread, ops);
        let (plan, containers) = plan(ops);
        for planned in &plan {
            match planned {
                Planned::Key(group) => {
                    invocation
                        .arg(keys.aggregate(ops, group.key))
                        .arg(if group.sorted_set { "Z" } else { "H" })
                        .arg(group.writes.len())
                        .arg(group.ttl)
                        .arg(letters(&group.writes));
                    push_writes(&mut invocation, &group.writes);
                }
                Planned::Records {
                    container,
                    ttl,
                    records,
                } => {
                    let container = containers.get(*container).copied().unwrap_or_default();
                    invocation
                        .arg(keys.index(container))
                        .arg("R")
                        .arg(records.len())
                        .arg(*ttl);
                    for (name, group) in records {
                        invocation
                            .arg(*name)
                            .arg(group.writes.len())
                            .arg(letters(&group.writes));
                        push_writes(&mut invocation, &group.writes);
                    }
                }
            }
        }
        keys.name_in(&mut invocation);
        match self.run_apply(invocation, what).await? {
            Applied::Done(outcome) => Ok(outcome),
            Applied::Raced => Err(StoreError::Protocol(
                "apply refused a version it was not given".into(),
            )),
        }
    }

    /// A normal apply whose values are merged here ([`merge`]): one `MULTI`
    /// reads the partition's version and every field `ops` writes, then
    /// `apply.lua` writes the merged values if the version is unchanged.
    /// `None` when it was not (nothing was changed).
    pub(super) async fn apply_merged(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        // Taken out, so whatever happens below (an error, a refusal) the
        // next apply reads again unless this one succeeds.
        let written = self.written(partition).and_then(|w| match w.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        });
        let snapshot = match written {
            Some(w) => self.merged_with(partition, ops, w).await?,
            None => self.merged(partition, ops).await?,
        };
        let sent = std::time::Instant::now();
        let outcome = self
            .commit_merged(partition, entries, events, ops, &snapshot)
            .await?;
        if outcome == Some(ApplyOutcome::Applied)
            && let (Some(next), Some(slot)) =
                (Written::after(snapshot, sent), self.written(partition))
        {
            match slot.lock() {
                Ok(mut w) => *w = Some(next),
                Err(poisoned) => *poisoned.into_inner() = Some(next),
            }
        }
        Ok(outcome)
    }

    pub(super) fn written(&self, partition: u32) -> Option<&std::sync::Mutex<Option<Written>>> {
        self.inner.written.get(partition as usize)
    }

    /// The second half of [`Self::apply_merged`]: writes the values of
    /// `merged` unless the version moved since (`None`): a transaction
    /// on a single Redis ([`Self::commit_watched`]), `apply.lua` on a
    /// cluster.
    pub(super) async fn commit_merged(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
        merged: &Merged<'_>,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        if self.inner.args.redis_cluster {
            self.commit_scripted(partition, entries, events, ops, merged)
                .await
        } else {
            self.commit_watched(partition, entries, events, ops, merged)
                .await
        }
    }
}
