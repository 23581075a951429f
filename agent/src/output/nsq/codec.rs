//! The compression nsqd negotiates in IDENTIFY, as a byte-stream transform on the connection.
//!
//! - snappy: the snappy *framed* stream format (a `sNaPpY` stream identifier, then chunks of
//!   compressed or uncompressed data with a masked CRC-32C), what nsqd and go-nsq speak through
//!   `github.com/golang/snappy`'s `NewReader`/`NewWriter`.
//! - deflate: raw deflate (no zlib header), each command flushed with a sync flush, as Go's
//!   `compress/flate` writer does on `Flush`.
//!
//! Both directions are stateful streams over the whole connection, so one codec lives as long
//! as the connection.

use std::io::{Read, Write};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The framed format's stream identifier chunk: type 0xff, length 6, `sNaPpY`.
const SNAPPY_STREAM_ID: &[u8] = b"\xff\x06\x00\x00sNaPpY";
/// The largest chunk the framed format allows (a 24-bit length).
const SNAPPY_MAX_CHUNK: usize = 1 << 24;

/// A negotiated compression, or none.
pub enum Codec {
    /// Bytes go as they are.
    Plain,
    /// Snappy framed stream.
    Snappy(Box<Snappy>),
    /// Raw deflate stream.
    Deflate(Box<Deflate>),
}

/// Snappy framed stream state.
pub struct Snappy {
    enc: snap::write::FrameEncoder<Vec<u8>>,
    /// Received bytes that do not make a whole chunk yet.
    pending: Vec<u8>,
    /// Whether the stream identifier was seen.
    started: bool,
}

/// Raw deflate stream state.
pub struct Deflate {
    enc: Compress,
    dec: Decompress,
}

impl Codec {
    /// A snappy codec.
    pub fn snappy() -> Codec {
        Codec::Snappy(Box::new(Snappy {
            enc: snap::write::FrameEncoder::new(Vec::new()),
            pending: Vec::new(),
            started: false,
        }))
    }

    /// A deflate codec compressing at `level` (1..=9).
    pub fn deflate(level: u32) -> Codec {
        Codec::Deflate(Box::new(Deflate {
            enc: Compress::new(Compression::new(level.clamp(1, 9)), false),
            dec: Decompress::new(false),
        }))
    }

    /// Whether bytes pass unchanged.
    pub fn is_plain(&self) -> bool {
        matches!(self, Codec::Plain)
    }

    /// Appends `plain` to `out` encoded and flushed, so the peer can decode all of it now.
    pub fn encode(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Codec::Plain => {
                out.extend_from_slice(plain);
                Ok(())
            }
            Codec::Snappy(s) => {
                s.enc
                    .write_all(plain)
                    .and_then(|()| s.enc.flush())
                    .map_err(|e| format!("snappy compression failed: {e}"))?;
                out.append(s.enc.get_mut());
                Ok(())
            }
            Codec::Deflate(d) => {
                let mut input = plain;
                loop {
                    out.reserve(input.len() / 2 + 64);
                    let before = d.enc.total_in();
                    d.enc
                        .compress_vec(input, out, FlushCompress::Sync)
                        .map_err(|e| format!("deflate compression failed: {e}"))?;
                    let used = (d.enc.total_in() - before) as usize;
                    input = &input[used..];
                    // Done once all input is taken and the flush left spare room in `out`.
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Appends to `out` what `raw` (bytes received) decodes to; partial input is kept.
    pub fn decode(&mut self, raw: &[u8], out: &mut impl Extend<u8>) -> Result<(), String> {
        match self {
            Codec::Plain => {
                out.extend(raw.iter().copied());
                Ok(())
            }
            Codec::Snappy(s) => s.decode(raw, out),
            Codec::Deflate(d) => {
                let mut input = raw;
                let mut buf = Vec::with_capacity(16 * 1024);
                loop {
                    buf.clear();
                    let before = d.dec.total_in();
                    let status = d
                        .dec
                        .decompress_vec(input, &mut buf, FlushDecompress::Sync)
                        .map_err(|e| format!("deflate stream from nsqd is corrupt: {e}"))?;
                    let used = (d.dec.total_in() - before) as usize;
                    input = &input[used..];
                    out.extend(buf.iter().copied());
                    if status == Status::StreamEnd {
                        return Err("nsqd ended its deflate stream".into());
                    }
                    // A full buffer may leave output inside the decompressor: go round again.
                    let full = buf.len() == buf.capacity();
                    if input.is_empty() && !full {
                        return Ok(());
                    }
                    if used == 0 && buf.is_empty() {
                        return Err("deflate stream from nsqd makes no progress".into());
                    }
                }
            }
        }
    }
}

impl Snappy {
    fn decode(&mut self, raw: &[u8], out: &mut impl Extend<u8>) -> Result<(), String> {
        self.pending.extend_from_slice(raw);
        let mut at = 0;
        while self.pending.len() - at >= 4 {
            let head = &self.pending[at..at + 4];
            let kind = head[0];
            let len = usize::from(head[1]) | usize::from(head[2]) << 8 | usize::from(head[3]) << 16;
            if self.pending.len() - at < 4 + len {
                break;
            }
            let chunk = &self.pending[at..at + 4 + len];
            at += 4 + len;
            if kind == 0xff {
                if chunk != SNAPPY_STREAM_ID {
                    return Err("bad snappy stream identifier from nsqd".into());
                }
                self.started = true;
                continue;
            }
            if !self.started {
                return Err("snappy stream from nsqd does not start with its identifier".into());
            }
            match kind {
                // Compressed or uncompressed data: decoded (and its CRC checked) by snap's
                // own frame reader, fed one whole chunk behind a stream identifier.
                0x00 | 0x01 => {
                    if len > SNAPPY_MAX_CHUNK {
                        return Err("snappy chunk from nsqd is too large".into());
                    }
                    let mut framed = Vec::with_capacity(SNAPPY_STREAM_ID.len() + chunk.len());
                    framed.extend_from_slice(SNAPPY_STREAM_ID);
                    framed.extend_from_slice(chunk);
                    let mut plain = Vec::new();
                    snap::read::FrameDecoder::new(framed.as_slice())
                        .read_to_end(&mut plain)
                        .map_err(|e| format!("snappy stream from nsqd is corrupt: {e}"))?;
                    out.extend(plain);
                }
                0x02..=0x7f => {
                    return Err(format!(
                        "snappy stream from nsqd has a reserved chunk type {kind:#x}"
                    ))
                }
                // 0x80..=0xfe: skippable (padding and the like).
                _ => {}
            }
        }
        self.pending.drain(..at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(mut enc: Codec, mut dec: Codec) {
        let msgs: Vec<Vec<u8>> = vec![
            b"MPUB t\n".to_vec(),
            (0..200_000u32).map(|i| (i % 251) as u8).collect(),
            b"OK".to_vec(),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            enc.encode(m, &mut wire).expect("encode");
        }
        // Fed in odd-sized pieces, the decoder gives back exactly what went in.
        let mut got = Vec::new();
        for piece in wire.chunks(777) {
            dec.decode(piece, &mut got).expect("decode");
        }
        assert_eq!(got, msgs.concat());
    }

    #[test]
    fn snappy_round_trips_in_pieces() {
        round_trip(Codec::snappy(), Codec::snappy());
    }

    #[test]
    fn deflate_round_trips_in_pieces() {
        round_trip(Codec::deflate(6), Codec::deflate(6));
    }

    #[test]
    fn each_encode_is_decodable_at_once() {
        // A command must reach nsqd whole, not sit in a compressor's buffer.
        for (mut enc, mut dec) in [
            (Codec::snappy(), Codec::snappy()),
            (Codec::deflate(1), Codec::deflate(1)),
        ] {
            let mut wire = Vec::new();
            enc.encode(b"NOP\n", &mut wire).expect("encode");
            let mut got = Vec::new();
            dec.decode(&wire, &mut got).expect("decode");
            assert_eq!(got, b"NOP\n");
        }
    }

    #[test]
    fn corrupt_streams_are_errors_not_panics() {
        let mut got = Vec::new();
        assert!(Codec::snappy()
            .decode(b"\x00\x05\x00\x00abcde", &mut got)
            .is_err());
        let mut wire = Vec::new();
        Codec::snappy().encode(b"hello", &mut wire).expect("encode");
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        assert!(Codec::snappy().decode(&wire, &mut got).is_err(), "CRC");
        assert!(Codec::deflate(6).decode(&[0xff; 64], &mut got).is_err());
    }
}
