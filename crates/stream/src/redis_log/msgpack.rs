//! The MessagePack encoding of summaries and records, as `apply.lua`'s
//! `cmsgpack` packs and unpacks them, and their text for readers.

/// A summary as a MessagePack array of four float64, what `apply.lua`
/// unpacks (`cmsgpack`, in C) to merge it.
pub(super) fn msgpack_summary(summary: &[f64; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(37);
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 4);
    for v in summary {
        let _ = rmp::encode::write_f64(&mut out, *v);
    }
    out
}

/// A stored hash value as text: a summary (a MessagePack array, which no
/// UTF-8 text starts with) as [`summary_text`], anything else as UTF-8.
pub(super) fn stored_text(bytes: Vec<u8>) -> String {
    if let Some(summary) = unpack_summary(&bytes) {
        return crate::model::summary_text(&summary);
    }
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Decodes a MessagePack array of four numbers (Lua's `cmsgpack` writes
/// whole numbers as integers and exact ones as float32).
pub(super) fn unpack_summary(bytes: &[u8]) -> Option<[f64; 4]> {
    let mut rd = bytes;
    let summary = read_summary(&mut rd)?;
    rd.is_empty().then_some(summary)
}

/// Reads a summary (an array of four numbers) off the front of `rd`.
pub(super) fn read_summary(rd: &mut &[u8]) -> Option<[f64; 4]> {
    if !matches!(rd.first(), Some(0x90..=0x9f | 0xdc)) {
        return None;
    }
    if rmp::decode::read_array_len(rd).ok()? != 4 {
        return None;
    }
    let mut out = [0.0; 4];
    for slot in &mut out {
        *slot = read_number(rd)?;
    }
    Some(out)
}

/// Reads a number (an integer, float32 or float64) off the front of `rd`.
pub(super) fn read_number(rd: &mut &[u8]) -> Option<f64> {
    Some(match rd.first()? {
        0xca => f64::from(rmp::decode::read_f32(rd).ok()?),
        0xcb => rmp::decode::read_f64(rd).ok()?,
        _ => rmp::decode::read_int::<i64, _>(rd).ok()? as f64,
    })
}

/// Reads a string off the front of `rd`.
pub(super) fn read_text(rd: &mut &[u8]) -> Option<String> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    let (text, rest) = (rd.get(..len)?, rd.get(len..)?);
    *rd = rest;
    Some(String::from_utf8_lossy(text).into_owned())
}

/// The fields of a record as `apply.lua` packs it (a MessagePack map of
/// numbers, strings and summaries), as text the way every backend reads
/// hash fields: integers in full, other numbers in Rust's shortest
/// round-trip form, summaries as [`crate::model::summary_text`]. Sorted by
/// field; `None` if it is not such a map.
pub(super) fn unpack_record(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let mut rd = bytes;
    let len = rmp::decode::read_map_len(&mut rd).ok()?;
    let mut fields = Vec::with_capacity(len as usize);
    for _ in 0..len {
        let name = read_text(&mut rd)?;
        let value = match rd.first()? {
            0xa0..=0xbf | 0xd9..=0xdb => read_text(&mut rd)?,
            0x90..=0x9f | 0xdc => crate::model::summary_text(&read_summary(&mut rd)?),
            0xca | 0xcb => read_number(&mut rd)?.to_string(),
            _ => rmp::decode::read_int::<i64, _>(&mut rd).ok()?.to_string(),
        };
        fields.push((name, value));
    }
    fields.sort();
    rd.is_empty().then_some(fields)
}
