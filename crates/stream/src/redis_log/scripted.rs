//! The scripted apply: an `apply.lua` invocation, its keys, and its reply.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The script's index (1-based) of the first aggregate key, after the
/// stream, the stats, the dead letters and the version.
pub(super) const FIRST_AGGREGATE_KEY: u32 = 5;

/// The aggregate keys and containers an `apply.lua` invocation names,
/// each once, in order of first use (indices from [`FIRST_AGGREGATE_KEY`]).
/// Only keys the script touches are named: a record key (`<container>#…`)
/// is written through its container, and naming the 500 records of a
/// 250-device apply cost Redis a Lua string each (about a third of the
/// script's arguments).
#[derive(Default)]
pub(super) struct ScriptKeys<'a> {
    pub(super) names: Vec<&'a str>,
    pub(super) index: foldhash::HashMap<&'a str, u32>,
}

impl<'a> ScriptKeys<'a> {
    /// The script's index of `name`, naming it if it is new.
    pub(super) fn index(&mut self, name: &'a str) -> u32 {
        *self.index.entry(name).or_insert_with(|| {
            self.names.push(name);
            self.names.len() as u32 - 1 + FIRST_AGGREGATE_KEY
        })
    }

    /// The script's index of aggregate key `i` of `ops`.
    pub(super) fn aggregate(&mut self, ops: &'a Ops, i: u16) -> u32 {
        match ops.keys.get(usize::from(i)) {
            Some(name) => self.index(name),
            // `Ops` only refers to its own keys; an index past them would
            // be a bug of the fold, and the script reports a nil key.
            None => 0,
        }
    }

    /// Names the keys, in index order, after the four fixed ones.
    pub(super) fn name_in(self, invocation: &mut redis::ScriptInvocation<'_>) {
        for name in self.names {
            invocation.key(name);
        }
    }
}

impl RedisLog {
    /// `apply.lua` writing the values of `merged` unless the version moved
    /// since (`None`).
    pub(super) async fn commit_scripted(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
        merged: &Merged<'_>,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        let (mut invocation, mut keys) = self.invocation(
            partition,
            entries,
            events,
            Disposition::Process,
            ReadAt::Version(&merged.version),
            ops,
        );
        for ((t, values), changed) in merged
            .targets
            .iter()
            .zip(&merged.values)
            .zip(&merged.changed)
        {
            let index = match t.slot {
                merge::Slot::Key(i) => keys.aggregate(ops, i),
                merge::Slot::Container(c) => keys.index(c),
            };
            for group in merge::pairs(t, values, changed) {
                invocation
                    .arg(index)
                    .arg(if t.sorted_set { "z" } else { "h" })
                    .arg(group.len())
                    .arg(t.ttl);
                for (a, b) in group {
                    invocation.arg(a).arg(b);
                }
            }
        }
        keys.name_in(&mut invocation);
        match self.run_apply(invocation, "apply").await? {
            Applied::Done(outcome) => Ok(Some(outcome)),
            Applied::Raced => Ok(None),
        }
    }

    /// An `apply.lua` invocation with its keys and arguments up to the
    /// groups, and the script's index of aggregate key `i`.
    pub(super) fn invocation<'o>(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        disposition: Disposition<'_>,
        read_at: ReadAt<'_>,
        ops: &'o Ops,
    ) -> (redis::ScriptInvocation<'_>, ScriptKeys<'o>) {
        let keys = &self.inner.keys;
        // KEYS[1] stream, KEYS[2] stats, KEYS[3] dead letters, KEYS[4] the
        // version, KEYS[5..] the aggregate keys the groups name (Lua is
        // 1-based), added by the caller once its groups are written.
        let mut invocation = self.inner.apply.prepare_invoke();
        invocation
            .key(keys.stream(partition))
            .key(keys.stats(partition))
            .key(keys.dead_letter(partition))
            .key(keys.version(partition));
        let mut aggregate = ScriptKeys::default();
        // The script's sentinels, here and nowhere else: ARGV[4] '' is a
        // normal apply (so a dead letter always has a reason), ARGV[6] '*'
        // means no value was read outside the script.
        let reason = match disposition {
            Disposition::Process => "",
            Disposition::DeadLetter("") => "unspecified",
            Disposition::DeadLetter(reason) => reason,
        };
        let version = match read_at {
            ReadAt::Unread => "*",
            ReadAt::Version(version) => version,
        };
        invocation
            .arg(self.group())
            .arg(entries.len())
            .arg(events)
            .arg(reason)
            .arg(DEAD_LETTER_MAX_LEN)
            .arg(version);
        for entry in entries {
            invocation.arg(&entry.id);
        }
        invocation.arg(ops.e2e.len());
        for &(key, entry, weight) in &ops.e2e {
            invocation
                .arg(aggregate.aggregate(ops, key))
                .arg(entry + 1)
                .arg(weight);
        }
        (invocation, aggregate)
    }

    /// Runs a prepared `apply.lua` and reads its reply.
    pub(super) async fn run_apply(
        &self,
        invocation: redis::ScriptInvocation<'_>,
        what: &'static str,
    ) -> Result<Applied, StoreError> {
        let reply: Vec<i64> = self
            .call(what, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        match reply.split_first() {
            Some((1, _)) => Ok(Applied::Done(ApplyOutcome::Applied)),
            Some((2, _)) => Ok(Applied::Raced),
            Some((0, missing)) => Ok(Applied::Done(ApplyOutcome::NotPending(
                missing
                    .iter()
                    .map(|&e| usize::try_from(e - 1).unwrap_or(0))
                    .collect(),
            ))),
            _ => Err(StoreError::Protocol(format!(
                "unexpected apply reply {reply:?}"
            ))),
        }
    }
}
