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

/// The code and debug data of the first complete GOAWAY in `bytes`.
pub fn goaway_in(bytes: &[u8]) -> Option<(u32, String)> {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let end = at + 9 + len;
        if end > bytes.len() {
            return None;
        }
        if bytes[at + 3] == kind::GOAWAY {
            let payload = &bytes[at + 9..end];
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            return Some((code, String::from_utf8_lossy(&payload[8..]).into_owned()));
        }
        at = end;
    }
    None
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
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let end = at + 9 + len;
        if end > bytes.len() {
            return None;
        }
        if bytes[at + 3] == kind::SETTINGS && bytes[at + 4] & 1 == 0 {
            let params = bytes[at + 9..end]
                .chunks(6)
                .map(|p| {
                    (
                        u16::from_be_bytes([p[0], p[1]]),
                        u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                    )
                })
                .collect();
            return Some(params);
        }
        at = end;
    }
    None
}

/// Stream id and error code of each complete RST_STREAM frame in `bytes`
/// (which must start at a frame boundary).
pub fn resets_in(bytes: &[u8]) -> Vec<(u32, u32)> {
    let mut resets = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let end = at + 9 + len;
        if end > bytes.len() {
            break;
        }
        if bytes[at + 3] == 0x3 && len == 4 {
            let id = u32::from_be_bytes(bytes[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
            let code = u32::from_be_bytes(bytes[at + 9..end].try_into().unwrap());
            resets.push((id, code));
        }
        at = end;
    }
    resets
}
