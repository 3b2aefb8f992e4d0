//! Message framing of the TCP baseline, and the request header the Homa and UDP
//! baselines carry.
//!
//! A TCP stream carries frames: an 8-byte header, then `length` bytes of payload.
//!
//! ```text
//! +----------------+----------------+------------------------+
//! | length: u32 LE | reply: u32 LE  | payload (length bytes) |
//! +----------------+----------------+------------------------+
//! ```
//!
//! In a request, `reply` is the length of the response the server must send (the same as
//! `length` for RTT measurements, 1 for one-way throughput); in a response it is 0.
//!
//! Homa requests carry `reply` in their first 4 bytes instead (a Homa message has its
//! own length); a request shorter than 4 bytes gets a response of its own length.

/// Bytes of a TCP frame header.
pub(crate) const HEADER: usize = 8;

/// Largest payload a frame may announce (a Homa message's cap; guards against a
/// corrupt or foreign stream).
pub(crate) const MAX_FRAME: u32 = super::spec::MAX_MESSAGE;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload bytes that follow.
    pub(crate) length: u32,
    /// Response length asked for (requests) or 0 (responses).
    pub(crate) reply: u32,
}

impl Header {
    pub(crate) fn encode(self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..4].copy_from_slice(&self.length.to_le_bytes());
        b[4..].copy_from_slice(&self.reply.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER]) -> Result<Header, String> {
        let length = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let reply = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if length == 0 || length > MAX_FRAME {
            return Err(format!(
                "TCP frame announces {length} bytes: allowed 1..={MAX_FRAME} (not a homa bench peer?)"
            ));
        }
        if reply > MAX_FRAME {
            return Err(format!(
                "TCP frame asks for a {reply}-byte reply: at most {MAX_FRAME}"
            ));
        }
        Ok(Header { length, reply })
    }
}

/// Incremental frame decoder: feed it whatever `read` returned; it reports each frame
/// whose last payload byte has arrived. Payload bytes are counted, not kept (the
/// benchmark never looks at them).
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    header: [u8; HEADER],
    have: usize,
    /// The frame being received and its payload bytes still to come.
    current: Option<(Header, u32)>,
}

impl Decoder {
    /// Consumes `bytes`, calling `frame` for every frame completed by them.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        mut frame: impl FnMut(Header),
    ) -> Result<(), String> {
        while !bytes.is_empty() {
            match &mut self.current {
                None => {
                    let n = (HEADER - self.have).min(bytes.len());
                    self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                    self.have += n;
                    bytes = &bytes[n..];
                    if self.have == HEADER {
                        self.have = 0;
                        let h = Header::decode(&self.header)?;
                        self.current = Some((h, h.length));
                    }
                }
                Some((h, left)) => {
                    let n = (*left as usize).min(bytes.len());
                    *left -= n as u32;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        let h = *h;
                        self.current = None;
                        frame(h);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The response length a Homa or UDP request asks for (see the module docs).
pub(crate) fn reply_length(request: &[u8], request_len: usize) -> usize {
    if request_len < 4 || request.len() < 4 {
        return request_len;
    }
    let r = u32::from_le_bytes([request[0], request[1], request[2], request[3]]);
    if r == 0 || r > MAX_FRAME {
        request_len
    } else {
        r as usize
    }
}

/// Writes the Homa request header (the reply length) into a request of `len` bytes.
pub(crate) fn write_request_header(buf: &mut [u8], len: usize, reply: usize) {
    if len >= 4 && buf.len() >= 4 {
        buf[..4].copy_from_slice(&(reply as u32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(length: u32, reply: u32) -> Vec<u8> {
        let mut v = Header { length, reply }.encode().to_vec();
        v.extend(std::iter::repeat_n(0xAB, length as usize));
        v
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let mut stream = frame(5, 5);
        stream.extend(frame(1, 0));
        stream.extend(frame(1000, 1));
        // Every way of cutting the stream in two, and byte by byte.
        for cut in 0..=stream.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.feed(&stream[..cut], |h| got.push(h)).unwrap();
            d.feed(&stream[cut..], |h| got.push(h)).unwrap();
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(
                got[2],
                Header {
                    length: 1000,
                    reply: 1
                }
            );
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b), |h| got.push(h)).unwrap();
        }
        assert_eq!(
            got,
            vec![
                Header {
                    length: 5,
                    reply: 5
                },
                Header {
                    length: 1,
                    reply: 0
                },
                Header {
                    length: 1000,
                    reply: 1
                }
            ]
        );
    }

    #[test]
    fn rejects_impossible_lengths() {
        let mut d = Decoder::default();
        assert!(d
            .feed(
                &Header {
                    length: 0,
                    reply: 0
                }
                .encode(),
                |_| {}
            )
            .is_err());
        let mut d = Decoder::default();
        let e = d
            .feed(
                &Header {
                    length: MAX_FRAME + 1,
                    reply: 0,
                }
                .encode(),
                |_| {},
            )
            .unwrap_err();
        assert!(e.contains("1000001"), "{e}");
        let mut d = Decoder::default();
        assert!(d
            .feed(
                &Header {
                    length: 1,
                    reply: u32::MAX
                }
                .encode(),
                |_| {}
            )
            .is_err());
        // Garbage such as an HTTP request is refused, not trusted.
        let mut d = Decoder::default();
        assert!(d.feed(b"GET / HTTP/1.1\r\n", |_| {}).is_err());
    }

    #[test]
    fn homa_request_header() {
        let mut buf = vec![0u8; 100];
        write_request_header(&mut buf, 100, 1);
        assert_eq!(reply_length(&buf, 100), 1);
        write_request_header(&mut buf, 100, 100);
        assert_eq!(reply_length(&buf, 100), 100);
        // Too short to carry a header: echo the length.
        assert_eq!(reply_length(&[9, 9, 9], 3), 3);
        // Nonsense asks get an echo, not a huge allocation.
        assert_eq!(reply_length(&[0xFF; 8], 8), 8);
        assert_eq!(reply_length(&[0; 8], 8), 8);
    }
}
