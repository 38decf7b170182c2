//! The merged-values cache: what the last merged apply of a partition
//! wrote, and reading the current values of an apply's fields (from the
//! cache where it still holds, from Redis otherwise).

#[allow(clippy::wildcard_imports)]
use super::*;

/// What one merged apply of a partition wrote, and the version it left
/// (hashed with foldhash, as the fold's maps: it is looked up once per
/// field of every apply, and std's SipHash showed in profiles):
/// the next apply of the partition takes its current values from here
/// instead of reading them, as long as the version it reads (or, when
/// every value is here, the version `apply.lua` checks) is still this one.
///
/// Only applies and prunes change aggregates, and both move the version,
/// so an unchanged version means these are still the values in Redis, with
/// two exceptions handled here: a key's time to live (a value is used only
/// until [`EXPIRY_MARGIN`] before its key can have expired; a key written
/// without an expiry is taken to have none, as the fold writes every key
/// with an expiry every time or never) and eviction under `maxmemory`,
/// which the testbed does not support anyway (evicted stream entries would
/// be lost): run Redis with `maxmemory-policy noeviction`.
#[derive(Debug)]
pub(super) struct Written {
    /// The version after the apply (the one it read, plus one).
    pub(super) version: String,
    /// By key: when it may expire (`None`: never) and its fields' values.
    pub(super) keys: foldhash::HashMap<String, WrittenKey>,
}

#[derive(Debug)]
pub(super) struct WrittenKey {
    pub(super) expires: Option<std::time::Instant>,
    pub(super) fields: foldhash::HashMap<String, Vec<u8>>,
}

/// A written value is not used within this long of its key's expiry.
pub(super) const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

impl Written {
    /// What `merged` wrote at `sent` (just before its script was sent, so
    /// every expiry here is no later than Redis' own), if its version is
    /// a counter.
    pub(super) fn after(merged: Merged<'_>, sent: std::time::Instant) -> Option<Self> {
        let version = merged.version.parse::<u64>().ok()?.checked_add(1)?;
        let keys = merged
            .targets
            .iter()
            .zip(merged.values)
            .map(|(t, values)| {
                let expires = (t.ttl > 0)
                    .then(|| sent.checked_add(Duration::from_secs(t.ttl)))
                    .flatten();
                let fields = t
                    .fields
                    .iter()
                    .map(|(name, _)| (*name).to_owned())
                    .zip(values)
                    .collect();
                (t.key.to_owned(), WrittenKey { expires, fields })
            })
            .collect();
        Some(Self {
            version: version.to_string(),
            keys,
        })
    }

    /// Takes the value of `field` of `key` out, if written here and not
    /// about to expire at `now` (moved, not copied: the cache is used by
    /// one apply, which leaves the next one).
    pub(super) fn take(
        &mut self,
        key: &str,
        field: &str,
        now: std::time::Instant,
    ) -> Option<Vec<u8>> {
        let k = self.keys.get_mut(key)?;
        if k.expires.is_some_and(|e| e <= now + EXPIRY_MARGIN) {
            return None;
        }
        k.fields.remove(field)
    }
}

impl RedisLog {
    /// [`Self::merged`] taking what `written` holds instead of reading it:
    /// no read at all when it holds every value (`apply.lua` then checks
    /// its version), else one read of the version and the missing values,
    /// and a full read if that version is not `written`'s.
    pub(super) async fn merged_with<'o>(
        &self,
        partition: u32,
        ops: &'o Ops,
        mut written: Written,
    ) -> Result<Merged<'o>, StoreError> {
        let targets = merge::targets(ops);
        let now = std::time::Instant::now();
        let known: Vec<Vec<Option<Vec<u8>>>> = targets
            .iter()
            .map(|t| {
                t.fields
                    .iter()
                    .map(|(name, _)| written.take(t.key, name, now))
                    .collect()
            })
            .collect();
        let missing = known.iter().flatten().filter(|v| v.is_none()).count();
        let (version, mut read) = if missing == 0 {
            (written.version, Vec::new().into_iter())
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("GET")
                .arg(self.inner.keys.version(partition));
            for (t, known) in targets.iter().zip(&known) {
                if known.iter().all(Option::is_some) {
                    continue;
                }
                pipe.cmd(if t.sorted_set { "ZMSCORE" } else { "HMGET" })
                    .arg(t.key);
                for ((name, _), _) in t.fields.iter().zip(known).filter(|(_, k)| k.is_none()) {
                    pipe.arg(*name);
                }
            }
            let mut replies = self.read_values(pipe).await?;
            let version = parse_version(replies.next())?;
            if version != written.version {
                // Someone else applied or pruned since: nothing here holds.
                return self.merged(partition, ops).await;
            }
            (version, replies)
        };
        let (mut merged, mut changed) = (
            Vec::with_capacity(targets.len()),
            Vec::with_capacity(targets.len()),
        );
        for (t, known) in targets.iter().zip(known) {
            let missing = known.iter().filter(|v| v.is_none()).count();
            let mut fresh = if missing > 0 {
                let values = parse::optional_values(read.next())?;
                if values.len() != missing {
                    return Err(StoreError::Protocol(format!(
                        "read {} values of {missing} for {}",
                        values.len(),
                        t.key
                    )));
                }
                values.into_iter()
            } else {
                Vec::new().into_iter()
            };
            let old = known
                .into_iter()
                .map(|k| k.or_else(|| fresh.next().flatten()))
                .collect();
            let (values, moved) = merge::merge(t, old);
            merged.push(values);
            changed.push(moved);
        }
        Ok(Merged {
            version,
            targets,
            values: merged,
            changed,
        })
    }

    /// Runs the `MULTI` of a read of current values.
    pub(super) async fn read_values(
        &self,
        read: redis::Pipeline,
    ) -> Result<std::vec::IntoIter<redis::Value>, StoreError> {
        Ok(self
            .call("apply-read", |mut c| async move {
                read.query_async::<Vec<redis::Value>>(&mut c).await
            })
            .await?
            .into_iter())
    }

    /// The first half of [`Self::apply_merged`]: the version read and the
    /// values `ops` leads to from what was read.
    pub(super) async fn merged<'o>(
        &self,
        partition: u32,
        ops: &'o Ops,
    ) -> Result<Merged<'o>, StoreError> {
        let targets = merge::targets(ops);
        let mut read = redis::pipe();
        read.atomic()
            .cmd("GET")
            .arg(self.inner.keys.version(partition));
        for t in targets.iter().filter(|t| !t.fields.is_empty()) {
            read.cmd(if t.sorted_set { "ZMSCORE" } else { "HMGET" })
                .arg(t.key);
            for (name, _) in &t.fields {
                read.arg(*name);
            }
        }
        let mut replies = self.read_values(read).await?;
        let version = parse_version(replies.next())?;
        let (mut merged, mut changed) = (
            Vec::with_capacity(targets.len()),
            Vec::with_capacity(targets.len()),
        );
        for t in &targets {
            if t.fields.is_empty() {
                merged.push(Vec::new());
                changed.push(Vec::new());
                continue;
            }
            let old = parse::optional_values(replies.next())?;
            if old.len() != t.fields.len() {
                return Err(StoreError::Protocol(format!(
                    "read {} values of {} for {}",
                    old.len(),
                    t.fields.len(),
                    t.key
                )));
            }
            let (values, moved) = merge::merge(t, old);
            merged.push(values);
            changed.push(moved);
        }
        Ok(Merged {
            version,
            targets,
            values: merged,
            changed,
        })
    }
}
