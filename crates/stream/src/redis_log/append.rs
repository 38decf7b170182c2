//! Appends: `append.lua` (event-id dedupe) and, for an idempotent
//! producer's batch, the `MULTI` of `append_producer.lua`, the `XADD` and
//! `append_finish.lua`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Redis answered NOSCRIPT: it does not have a script sent by its hash.
#[derive(Debug)]
pub(super) struct ScriptMissing;

/// The partition's settings epoch is not the one this process read from
/// the settings record: nothing was appended (see `settings.rs`).
#[derive(Debug)]
pub(super) struct EpochChanged;

impl RedisLog {
    /// [`EventLog::append`] past the settings check: the append, and when
    /// the partition's epoch changed, the record read again and (settings
    /// still agreeing) the append once more.
    pub(super) async fn append_checked(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
    ) -> Result<AppendOutcome, StoreError> {
        let once = || async {
            match meta.idempotent() {
                Some((producer, sequence)) => {
                    self.append_idempotent(partition, meta, events, producer, sequence)
                        .await
                }
                None => self.append_scripted(partition, meta, events).await,
            }
        };
        match once().await? {
            Ok(outcome) => Ok(outcome),
            Err(EpochChanged) => {
                self.reagree_settings().await?;
                once().await?.map_err(|EpochChanged| {
                    StoreError::Unavailable(
                        "the key prefix's settings were recorded again during this append (another deployment reset it); retry".to_owned(),
                    )
                })
            }
        }
    }
}

/// Every event of an append in one blob (each length-delimited, as
/// protobuf `repeated bytes`): one stream field and one command argument
/// per batch instead of one per event.
pub(super) fn blob<'a, 'b: 'a>(
    events: impl Iterator<Item = &'a AppendEvent<'b>> + Clone,
) -> Vec<u8> {
    let mut blob = Vec::with_capacity(events.clone().map(|e| e.bytes.len() + 3).sum());
    for event in events {
        prost::encoding::encode_varint(event.bytes.len() as u64, &mut blob);
        blob.extend_from_slice(&event.bytes);
    }
    blob
}

impl RedisLog {
    /// [`EventLog::append`] of an idempotent producer's batch: deduplicated
    /// by `sequence` (`append_producer.lua`), repeats inside the batch
    /// dropped here.
    pub(super) async fn append_idempotent(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
        producer: &str,
        sequence: u64,
    ) -> Result<Result<AppendOutcome, EpochChanged>, StoreError> {
        let keys = &self.inner.keys;
        let window = self.inner.args.producer_window.next_multiple_of(8);
        let repeated = repeated_ids(events);
        let is_repeat = |i: usize| repeated.binary_search(&(i as u32)).is_ok();
        // Per run ledger: (run, events in the blob, repeats left out).
        let mut runs: Vec<(&str, u64, u64)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if event.run_id.is_empty() {
                continue;
            }
            let slot = match runs.iter().position(|r| r.0 == event.run_id) {
                Some(slot) => slot,
                None => {
                    runs.push((event.run_id, 0, 0));
                    runs.len() - 1
                }
            };
            if is_repeat(i) {
                runs[slot].2 += 1;
            } else {
                runs[slot].1 += 1;
            }
        }
        // One MULTI: the bookkeeping script (no events in it), the XADD,
        // and the script that undoes the XADD unless the first marked the
        // sequence. The finishing script is sent with EVAL (its source), so
        // it always runs; the first with EVALSHA, and if Redis lost it
        // (NOSCRIPT) its decision is missing, the XADD is undone, and the
        // whole is sent again once the script is loaded.
        let fresh = events.len() - repeated.len();
        let token = format!("{producer}/{sequence}");
        let decision = keys.append_decision(partition);
        let stream = keys.stream(partition);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EVALSHA")
            .arg(self.inner.append_producer.get_hash())
            .arg(4 + runs.len())
            .arg(keys.stats(partition))
            .arg(keys.producer(partition, producer))
            .arg(keys.producer_seen(partition, producer))
            .arg(&decision);
        for (run, _, _) in &runs {
            pipe.arg(keys.run(partition, run));
        }
        pipe.arg(window)
            .arg(sequence)
            .arg(&token)
            .arg(self.inner.args.retention.as_secs().max(1))
            .arg(fresh)
            .arg(repeated.len())
            .arg(self.epoch().as_deref().unwrap_or_default());
        for (k, (_, in_blob, repeats)) in runs.iter().enumerate() {
            pipe.arg(k + 5).arg(in_blob).arg(repeats);
        }
        if fresh > 0 {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("m")
                .arg(meta.encode_to_vec())
                .arg("b")
                .arg(blob(
                    events
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !is_repeat(*i))
                        .map(|(_, e)| e),
                ));
            pipe.cmd("EVAL")
                .arg(self.inner.append_finish)
                .arg(2)
                .arg(&stream)
                .arg(&decision)
                .arg(&token);
        }
        let mut replies = match self.append_transaction(&pipe).await? {
            Ok(replies) => replies,
            Err(ScriptMissing) => {
                self.load_script(&self.inner.append_producer).await?;
                self.append_transaction(&pipe)
                    .await?
                    .map_err(|ScriptMissing| {
                        StoreError::Protocol("append script missing after loading it".to_owned())
                    })?
            }
        };
        let (state, highest, backlog): (u8, String, i64) =
            next_reply(&mut replies, "append reply")?;
        let entry_id = if fresh > 0 {
            let id: Option<String> = next_reply(&mut replies, "append XADD reply")?;
            let kept: i64 = next_reply(&mut replies, "append finish reply")?;
            if (kept == 1) != (state == 0) {
                return Err(StoreError::Protocol(format!(
                    "append of {token}: state {state} but the entry was {}",
                    if kept == 1 { "kept" } else { "undone" }
                )));
            }
            id.filter(|_| kept == 1)
        } else {
            None
        };
        match state {
            0 => Ok(Ok(AppendOutcome {
                entry_id,
                duplicates: repeated,
                backlog: Some(backlog.max(0) as u64),
            })),
            1 => Ok(Ok(AppendOutcome {
                entry_id: None,
                duplicates: (0..events.len() as u32).collect(),
                backlog: Some(backlog.max(0) as u64),
            })),
            3 => Ok(Err(EpochChanged)),
            _ => Err(StoreError::StaleSequence {
                producer_id: producer.to_owned(),
                sequence,
                highest: highest.parse().unwrap_or(0),
                window,
            }),
        }
    }

    /// Runs the `MULTI` of an idempotent append: its replies, or
    /// [`ScriptMissing`] when Redis did not have the bookkeeping script (the
    /// rest of the transaction then changed nothing: see
    /// `append_finish.lua`).
    pub(super) async fn append_transaction(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Result<std::vec::IntoIter<redis::Value>, ScriptMissing>, StoreError> {
        let no_script =
            |kind: Option<redis::ServerErrorKind>| kind == Some(redis::ServerErrorKind::NoScript);
        let replies = self
            .call("append", |mut c| async move {
                match pipe.query_async::<Vec<redis::Value>>(&mut c).await {
                    Err(err)
                        if err.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        Ok(Err(ScriptMissing))
                    }
                    other => other.map(Ok),
                }
            })
            .await?;
        let Ok(replies) = replies else {
            return Ok(Err(ScriptMissing));
        };
        match replies.first() {
            Some(redis::Value::ServerError(err)) if no_script(err.kind()) => Ok(Err(ScriptMissing)),
            Some(redis::Value::ServerError(err)) => Err(StoreError::Protocol(format!(
                "append script failed: {} {}",
                err.code(),
                err.details().unwrap_or_default()
            ))),
            _ => Ok(Ok(replies.into_iter())),
        }
    }
}
