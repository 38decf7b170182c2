//! Reading one per-partition index of devices in id order, across
//! partitions: a merge of `ZRANGEBYLEX ... LIMIT` pages.
//!
//! Each partition keeps its devices (all of them, or those of one label
//! pair) in a sorted set whose scores are all 0, so its members read in
//! byte order of the id from any id on, a page at a time. The merge keeps
//! one buffer per partition, refilled with the next `chunk` ids only when
//! it runs dry, and hands out the smallest id of all the buffers: reading
//! the first `n` ids after a cursor costs at most about `n` ids per
//! partition, however many the indexes hold.

use std::collections::VecDeque;

use futures::future::try_join_all;

use crate::error::QueryError;
use crate::store::Reader;

/// Ids of every partition's index, merged in id order.
#[derive(Debug)]
pub struct IdMerge<'r> {
    reader: &'r Reader,
    /// Per partition: its index key, the ids read and not handed out, the
    /// last id read (where its next read resumes), whether it has no more.
    parts: Vec<Part>,
    chunk: usize,
}

#[derive(Debug)]
struct Part {
    key: String,
    buffer: VecDeque<String>,
    cursor: Option<String>,
    done: bool,
}

impl<'r> IdMerge<'r> {
    /// A merge of the sorted sets `keys` (one per partition) from after
    /// `after` (from the start when `None`), reading `chunk` ids per
    /// partition at a time.
    pub fn new(reader: &'r Reader, keys: Vec<String>, after: Option<&str>, chunk: usize) -> Self {
        let parts = keys
            .into_iter()
            .map(|key| Part {
                key,
                buffer: VecDeque::new(),
                cursor: after.map(str::to_owned),
                done: false,
            })
            .collect();
        Self {
            reader,
            parts,
            chunk: chunk.max(1),
        }
    }

    /// Whether every index has been read to its end and handed out.
    pub fn exhausted(&self) -> bool {
        self.parts.iter().all(|p| p.done && p.buffer.is_empty())
    }

    /// Reads the next chunk of every partition whose buffer ran dry (in
    /// parallel: one bounded store call each).
    async fn refill(&mut self) -> Result<(), QueryError> {
        let (reader, chunk) = (self.reader, self.chunk);
        let dry: Vec<&mut Part> = self
            .parts
            .iter_mut()
            .filter(|p| p.buffer.is_empty() && !p.done)
            .collect();
        if dry.is_empty() {
            return Ok(());
        }
        let reads = dry
            .iter()
            .map(|p| reader.ids_after(&p.key, p.cursor.as_deref(), chunk));
        let pages = try_join_all(reads).await?;
        for (part, page) in dry.into_iter().zip(pages) {
            part.done = page.len() < chunk;
            if let Some(last) = page.last() {
                part.cursor = Some(last.clone());
            }
            part.buffer.extend(page);
        }
        Ok(())
    }

    /// The next (at most) `n` ids in id order; fewer only when every
    /// index is exhausted.
    pub async fn next(&mut self, n: usize) -> Result<Vec<String>, QueryError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            self.refill().await?;
            let smallest = self
                .parts
                .iter_mut()
                .filter(|p| !p.buffer.is_empty())
                .min_by(|a, b| a.buffer.front().cmp(&b.buffer.front()));
            let Some(id) = smallest.and_then(|p| p.buffer.pop_front()) else {
                break;
            };
            out.push(id);
        }
        Ok(out)
    }
}
