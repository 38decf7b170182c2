//! Raw HTTP/2 frames for tests that speak below gRPC: handshakes, pings,
//! resets, and reading the server's GOAWAY and SETTINGS.

use testbed_server::frames::{PREFACE, kind};

/// An HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface and an empty SETTINGS frame.
pub fn handshake() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(kind::SETTINGS, 0, 0, &[]));
    bytes
}

/// The complete frames at the start of `bytes` (which must start at a
/// frame boundary): kind, flags, stream id and payload of each.
fn frames_in(bytes: &[u8]) -> impl Iterator<Item = (u8, u8, u32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = bytes.get(at..at + 9)?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let payload = bytes.get(at + 9..at + 9 + len)?;
        let stream = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
        at += 9 + len;
        Some((header[3], header[4], stream, payload))
    })
}

/// The code and debug data of the first complete GOAWAY in `bytes`.
pub fn goaway_in(bytes: &[u8]) -> Option<(u32, String)> {
    let (.., payload) = frames_in(bytes).find(|f| f.0 == kind::GOAWAY)?;
    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
    Some((code, String::from_utf8_lossy(&payload[8..]).into_owned()))
}

/// HEADERS for a health check, HPACK without indexing.
pub fn health_check_headers(stream: u32) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let literal = |block: &mut Vec<u8>, index: u8, value: &str| {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, 0x04, "/grpc.health.v1.Health/Check"); // :path
    literal(&mut block, 0x01, "localhost"); // :authority
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (index 31)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.extend_from_slice(&[0x00, 2]);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    frame(kind::HEADERS, 0x4, stream, &block) // END_HEADERS
}

/// The parameters of the first SETTINGS frame (not an ACK) in `bytes`.
pub fn settings_in(bytes: &[u8]) -> Option<Vec<(u16, u32)>> {
    let (.., payload) = frames_in(bytes).find(|f| f.0 == kind::SETTINGS && f.1 & 1 == 0)?;
    let params = payload
        .chunks(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect();
    Some(params)
}

/// Stream id and error code of each complete RST_STREAM frame in `bytes`
/// (which must start at a frame boundary).
pub fn resets_in(bytes: &[u8]) -> Vec<(u32, u32)> {
    frames_in(bytes)
        .filter(|f| f.0 == 0x3 && f.3.len() == 4)
        .map(|(_, _, stream, payload)| (stream, u32::from_be_bytes(payload.try_into().unwrap())))
        .collect()
}
