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

    async fn prune_index(&self, index: &str, score: f64, records: &str) -> Result<u64, StoreError> {
        let Some(version) = crate::keys::version_of(index) else {
            return Err(StoreError::Protocol(format!(
                "index {index} is not a partition's key"
            )));
        };
        let mut invocation = self.inner.prune.prepare_invoke();
        invocation
            .key(index)
            .key(records)
            .key(version)
            .arg(format!("({score}"));
        self.call("prune", |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    async fn read_hashes(&self, keys: &[String]) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some((container, record)) = record_parts(key) {
                let (container, record) = (container.to_owned(), record.to_owned());
                let packed: Option<Vec<u8>> = self
                    .call("HGET record", |mut c| async move {
                        redis::cmd("HGET")
                            .arg(&container)
                            .arg(&record)
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                let fields = match packed {
                    None => Vec::new(),
                    Some(bytes) => unpack_record(&bytes).ok_or_else(|| {
                        StoreError::Protocol(format!("record {key} is not a MessagePack map"))
                    })?,
                };
                out.push(fields);
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
            out.push(fields);
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
