//! HTTP/2 frame boundaries in a byte stream, without decoding payloads.
//!
//! The connection guard ([`crate::conn`]) watches the bytes hyper reads and
//! writes: the frame headers alone tell it when the handshake is done, when
//! a client pings, which stream ids were opened, and when the server sent
//! data; the boundaries tell it where a frame of its own (GOAWAY) may be
//! written between hyper's frames. Payloads are skipped, never copied.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types the guard acts on (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
}

/// HTTP/2 error code `NO_ERROR`.
pub const NO_ERROR: u32 = 0x0;
/// HTTP/2 error code `ENHANCE_YOUR_CALM`, which grpc-go sends with
/// "too_many_pings".
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The largest stream id.
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// One frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// A PING without the ACK flag: one the peer asks to be answered.
    pub fn is_ping_request(&self) -> bool {
        self.kind == kind::PING && self.flags & 0x1 == 0
    }
}

/// Follows frame boundaries in one direction of a connection.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    /// Preface bytes still expected before the first frame (24 on the
    /// client's side, 0 on the server's).
    preface_left: usize,
    /// Whether the preface seen so far matched.
    preface_ok: bool,
    header: [u8; 9],
    header_len: usize,
    payload_left: usize,
}

impl FrameTracker {
    /// A tracker for the bytes a client sends (preface first).
    pub fn client() -> Self {
        Self {
            preface_left: PREFACE.len(),
            preface_ok: true,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// A tracker for the bytes a server sends (frames from the first byte).
    pub fn server() -> Self {
        Self {
            preface_left: 0,
            ..Self::client()
        }
    }

    /// Whether the next byte starts a frame (no frame is half written).
    pub fn at_boundary(&self) -> bool {
        self.preface_left == 0 && self.header_len == 0 && self.payload_left == 0
    }

    /// Whether the whole preface was seen and matched.
    pub fn preface_done(&self) -> bool {
        self.preface_left == 0 && self.preface_ok
    }

    /// Feeds bytes in stream order; calls `on_header` for each complete frame
    /// header.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let start = PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(bytes.len());
                if bytes[..n] != PREFACE[start..start + n] {
                    self.preface_ok = false;
                }
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (9 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == 9 {
                    self.header_len = 0;
                    let h = &self.header;
                    let header = FrameHeader {
                        len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_STREAM_ID,
                    };
                    self.payload_left = header.len;
                    on_header(header);
                }
            }
        }
    }
}

/// A GOAWAY frame: `last_stream` is the highest stream the server may have
/// processed, `code` an HTTP/2 error code, `debug` its opaque debug data.
pub fn goaway(last_stream: u32, code: u32, debug: &[u8]) -> Vec<u8> {
    let len = 8 + debug.len();
    let mut frame = Vec::with_capacity(9 + len);
    frame.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    frame.extend_from_slice(&[kind::GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&(last_stream & MAX_STREAM_ID).to_be_bytes());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(debug);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Headers are found whatever the split of the bytes, payloads skipped.
    #[test]
    fn finds_headers_across_any_split() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(kind::SETTINGS, 0, 0, &[0; 6]));
        bytes.extend(frame(kind::HEADERS, 4, 1, &[7; 20]));
        bytes.extend(frame(kind::PING, 0, 0, &[1; 8]));
        bytes.extend(frame(kind::PING, 1, 0, &[1; 8]));
        for chunk in 1..bytes.len() {
            let mut t = FrameTracker::client();
            let mut seen = Vec::new();
            for part in bytes.chunks(chunk) {
                t.feed(part, |h| seen.push(h));
            }
            assert!(t.preface_done() && t.at_boundary());
            let kinds: Vec<_> = seen
                .iter()
                .map(|h| (h.kind, h.stream, h.is_ping_request()))
                .collect();
            assert_eq!(
                kinds,
                [
                    (kind::SETTINGS, 0, false),
                    (kind::HEADERS, 1, false),
                    (kind::PING, 0, true),
                    (kind::PING, 0, false)
                ],
                "chunk {chunk}"
            );
        }
    }

    /// Mid-frame is not a boundary; a wrong preface is noticed.
    #[test]
    fn boundaries_and_bad_preface() {
        let mut t = FrameTracker::server();
        assert!(t.at_boundary());
        t.feed(&frame(kind::DATA, 0, 1, &[0; 10])[..12], |_| {});
        assert!(!t.at_boundary());
        t.feed(&[0; 7], |_| {});
        assert!(t.at_boundary());
        let mut c = FrameTracker::client();
        c.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", |_| {});
        assert!(!c.preface_done());
    }

    /// GOAWAY is laid out as RFC 9113 §6.8 says.
    #[test]
    fn goaway_layout() {
        let f = goaway(5, ENHANCE_YOUR_CALM, b"too_many_pings");
        let mut t = FrameTracker::server();
        let mut seen = Vec::new();
        t.feed(&f, |h| seen.push(h));
        assert_eq!(
            seen,
            [FrameHeader {
                len: 22,
                kind: kind::GOAWAY,
                flags: 0,
                stream: 0
            }]
        );
        assert_eq!(&f[9..17], &[0, 0, 0, 5, 0, 0, 0, 0xb]);
        assert_eq!(&f[17..], b"too_many_pings");
    }
}
