//! [`AggregateStore`] on Redis: hashes, sorted sets and records (one
//! field of their container hash each, MessagePack-encoded).

#[allow(clippy::wildcard_imports)]
use super::*;

impl AggregateStore for RedisLog {
    async fn read_zset(&self, key: &str) -> Result<Vec<(String, f64)>, StoreError> {
        let key = key.to_owned();
        self.call("ZRANGE", |mut c| async move {
            redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn write_hash(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(key).arg(fields).ignore();
        if let Some(ttl) = ttl {
            pipe.cmd("PEXPIRE")
                .arg(key)
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        self.call("HSET", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn delete_hash_fields(&self, key: &str, fields: &[String]) -> Result<u64, StoreError> {
        if fields.is_empty() {
            return Ok(0);
        }
        let key = key.to_owned();
        self.call("HDEL", |mut c| async move {
            redis::cmd("HDEL")
                .arg(&key)
                .arg(fields)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn zset_set(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError> {
        let (key, member) = (key.to_owned(), member.to_owned());
        self.call("ZADD", |mut c| async move {
            redis::cmd("ZADD")
                .arg(&key)
                .arg(score.to_string())
                .arg(&member)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn zset_remove_below(&self, key: &str, score: f64) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.call("ZREMRANGEBYSCORE", |mut c| async move {
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({score}"))
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn zset_range_lex(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let key = key.to_owned();
        let from = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        self.call("ZRANGEBYLEX", |mut c| async move {
            redis::cmd("ZRANGEBYLEX")
                .arg(&key)
                .arg(&from)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn zset_top(&self, key: &str, limit: usize) -> Result<Vec<(String, f64)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = key.to_owned();
        self.call("ZRANGE", |mut c| async move {
            redis::cmd("ZRANGE")
                .arg(&key)
                .arg("+inf")
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn zset_scores(
        &self,
        key: &str,
        members: &[String],
    ) -> Result<Vec<Option<f64>>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let key = key.to_owned();
        self.call("ZMSCORE", |mut c| async move {
            redis::cmd("ZMSCORE")
                .arg(&key)
                .arg(members)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn zset_len(&self, key: &str) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.call("ZCARD", |mut c| async move {
            redis::cmd("ZCARD").arg(&key).query_async(&mut c).await
        })
        .await
    }

    async fn prune_index(&self, prune: Prune<'_>) -> Result<u64, StoreError> {
        let Some(version) = crate::keys::version_of(prune.index) else {
            return Err(StoreError::Protocol(format!(
                "index {} is not a partition's key",
                prune.index
            )));
        };
        let mut invocation = self.inner.prune.prepare_invoke();
        invocation
            .key(prune.index)
            .key(prune.records)
            .key(version)
            .key(prune.ids)
            .arg(format!("({}", prune.below))
            .arg(prune.limit)
            .arg(prune.labels)
            .arg(self.inner.keys.label_prefix(prune.partition));
        self.call("prune", |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    async fn read_hashes(&self, keys: &[String]) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        let mut out: Vec<Vec<(String, String)>> = vec![Vec::new(); keys.len()];
        // Records of one container are read together, one HMGET (a page
        // of device states is a few calls, not one per device).
        let mut containers: Vec<(&str, Vec<(usize, &str)>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some((container, record)) = record_parts(key) {
                match containers.iter_mut().find(|(c, _)| *c == container) {
                    Some((_, records)) => records.push((i, record)),
                    None => containers.push((container, vec![(i, record)])),
                }
                continue;
            }
            let key = key.clone();
            let raw: Vec<(String, Vec<u8>)> = self
                .call("HGETALL", |mut c| async move {
                    redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
                })
                .await?;
            let mut fields: Vec<(String, String)> =
                raw.into_iter().map(|(f, v)| (f, stored_text(v))).collect();
            fields.sort();
            if let Some(slot) = out.get_mut(i) {
                *slot = fields;
            }
        }
        for (container, records) in containers {
            let (key, names) = (
                container.to_owned(),
                records
                    .iter()
                    .map(|(_, r)| (*r).to_owned())
                    .collect::<Vec<_>>(),
            );
            let packed: Vec<Option<Vec<u8>>> = self
                .call("HMGET records", |mut c| async move {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg(&names)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for ((i, record), bytes) in records.into_iter().zip(packed) {
                let Some(bytes) = bytes else { continue };
                let fields = unpack_record(&bytes).ok_or_else(|| {
                    StoreError::Protocol(format!(
                        "record {container}#{record} is not a MessagePack map"
                    ))
                })?;
                if let Some(slot) = out.get_mut(i) {
                    *slot = fields;
                }
            }
        }
        Ok(out)
    }

    async fn read_records(&self, container: &str) -> Result<Vec<(String, HashFields)>, StoreError> {
        let key = container.to_owned();
        let raw: Vec<(String, Vec<u8>)> = self
            .call("HGETALL records", |mut c| async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
            })
            .await?;
        let mut out = raw
            .into_iter()
            .map(|(record, bytes)| {
                let fields = unpack_record(&bytes).ok_or_else(|| {
                    StoreError::Protocol(format!(
                        "record {container}#{record} is not a MessagePack map"
                    ))
                })?;
                Ok((record, fields))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort();
        Ok(out)
    }
}
