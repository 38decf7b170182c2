//! An apply's writes as `apply.lua` takes them: grouped by key (records
//! gathered by container), with the op letters and arguments of each group.

#[allow(clippy::wildcard_imports)]
use super::*;

/// At most this many writes go in one group of `apply.lua` (Lua's `unpack`
/// is limited to a few thousand values).
pub(super) const MAX_GROUP_WRITES: usize = 1000;

/// The writes of one key, as `apply.lua` takes them.
pub(super) struct Group<'a> {
    pub(super) key: u16,
    pub(super) sorted_set: bool,
    pub(super) ttl: u64,
    pub(super) writes: Vec<&'a Op>,
}

impl<'a> Group<'a> {
    /// A group of `key` with no writes yet, and the fields it names.
    pub(super) fn empty(key: u16, sorted_set: bool) -> (Self, foldhash::HashSet<&'a str>) {
        let group = Self {
            key,
            sorted_set,
            ttl: 0,
            writes: Vec::new(),
        };
        (group, foldhash::HashSet::default())
    }
}

/// `ops` grouped by key (in order of first use), expiries folded into each
/// group's time to live, large groups split.
pub(super) fn groups(ops: &Ops) -> Vec<Group<'_>> {
    // Per key: its groups so far; a field written again, or a full group,
    // starts a new group of the same key (applied after, so it sees the
    // first one's result).
    let mut by_key: Vec<Vec<(Group<'_>, foldhash::HashSet<&str>)>> = Vec::new();
    by_key.resize_with(ops.keys.len(), Vec::new);
    let mut ttl = vec![0u64; ops.keys.len()];
    let mut order = Vec::new();
    for op in &ops.ops {
        let (key, sorted_set, field) = op.target();
        let Some(groups) = by_key.get_mut(usize::from(key)) else {
            continue;
        };
        if groups.is_empty() {
            order.push(key);
        }
        let Some(field) = field else {
            if let (Op::Expire(_, secs), Some(t)) = (op, ttl.get_mut(usize::from(key))) {
                *t = (*t).max(*secs);
            }
            if groups.is_empty() {
                groups.push(Group::empty(key, sorted_set));
            }
            continue;
        };
        let fresh = match groups.last() {
            None => true,
            Some((g, fields)) => g.writes.len() >= MAX_GROUP_WRITES || fields.contains(field),
        };
        if fresh {
            groups.push(Group::empty(key, sorted_set));
        }
        if let Some((group, fields)) = groups.last_mut() {
            group.sorted_set = sorted_set;
            group.writes.push(op);
            fields.insert(field);
        }
    }
    let mut out = Vec::new();
    for key in order {
        let Some(groups) = by_key.get_mut(usize::from(key)) else {
            continue;
        };
        let secs = ttl.get(usize::from(key)).copied().unwrap_or(0);
        for (mut group, _) in groups.drain(..) {
            group.ttl = secs;
            out.push(group);
        }
    }
    out
}

/// At most this many records go in one records group of `apply.lua`.
pub(super) const MAX_GROUP_RECORDS: usize = 500;

/// One group of `apply.lua`: the writes of one key, or of several records
/// of one container (see [`crate::keys`], "Records").
pub(super) enum Planned<'a> {
    Key(Group<'a>),
    Records {
        /// Index into the containers passed after the aggregate keys.
        container: usize,
        ttl: u64,
        /// (record name, its writes).
        records: Vec<(&'a str, Group<'a>)>,
    },
}

/// [`groups`], with the groups of record keys gathered into records groups
/// of their container (in order: a record split over several groups lands
/// in successive records groups, so each sees the one before), and the
/// containers named.
pub(super) fn plan(ops: &Ops) -> (Vec<Planned<'_>>, Vec<&str>) {
    let mut out: Vec<Planned<'_>> = Vec::new();
    let mut containers: Vec<&str> = Vec::new();
    // Per container: its open records group (index into `out`) and the
    // records in it.
    let mut open: foldhash::HashMap<&str, (usize, foldhash::HashSet<&str>)> =
        foldhash::HashMap::default();
    for group in groups(ops) {
        let parts = ops
            .keys
            .get(usize::from(group.key))
            .and_then(|key| record_parts(key))
            .filter(|_| !group.sorted_set);
        let Some((container, record)) = parts else {
            out.push(Planned::Key(group));
            continue;
        };
        let c = match containers.iter().position(|c| *c == container) {
            Some(c) => c,
            None => {
                containers.push(container);
                containers.len() - 1
            }
        };
        let reusable = open
            .get(container)
            .is_some_and(|(_, names)| names.len() < MAX_GROUP_RECORDS && !names.contains(record));
        if !reusable {
            out.push(Planned::Records {
                container: c,
                ttl: 0,
                records: Vec::new(),
            });
            open.insert(container, (out.len() - 1, foldhash::HashSet::default()));
        }
        let Some((at, names)) = open.get_mut(container) else {
            continue;
        };
        if let Some(Planned::Records { ttl, records, .. }) = out.get_mut(*at) {
            *ttl = (*ttl).max(group.ttl);
            // A record with no writes (an expiry only) only sets the ttl.
            if !group.writes.is_empty() {
                names.insert(record);
                records.push((record, group));
            }
        }
    }
    (out, containers)
}

/// The op letters of `writes`, as `apply.lua` reads them.
pub(super) fn letters(writes: &[&Op]) -> String {
    writes
        .iter()
        .map(|op| match op {
            Op::HashIncr(..) => 'I',
            Op::HashIncrFloat(..) => 'F',
            Op::HashMin(..) => 'm',
            Op::HashMax(..) => 'M',
            Op::HashSet(..) => 'S',
            Op::HashSummary(..) => 'U',
            Op::ZIncr(..) => 'Z',
            Op::ZMax(..) => 'X',
            // Not in a group's writes: folded into its ttl.
            Op::Expire(..) => '-',
        })
        .collect()
}

/// The fields (or members), then the values, of `writes`.
pub(super) fn push_writes(invocation: &mut redis::ScriptInvocation<'_>, writes: &[&Op]) {
    for op in writes {
        if let (_, _, Some(field)) = op.target() {
            invocation.arg(field);
        }
    }
    for op in writes {
        match op {
            Op::HashIncr(_, _, v) => invocation.arg(v),
            // Floats as Rust's shortest round-trip text (`3`, `0.25`).
            Op::HashIncrFloat(_, _, v)
            | Op::HashMin(_, _, v)
            | Op::HashMax(_, _, v)
            | Op::ZIncr(_, _, v)
            | Op::ZMax(_, _, v) => invocation.arg(v.to_string()),
            Op::HashSet(_, _, v) => invocation.arg(v),
            Op::HashSummary(_, _, v) => invocation.arg(msgpack_summary(v)),
            Op::Expire(..) => continue,
        };
    }
}
