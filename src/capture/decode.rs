//! Decompressing a response on the side, for capture only: the client gets the original bytes.
//!
//! Decoders are push-based (`io::Write`), so each chunk is decoded as it passes and nothing waits
//! for the whole body. Output is bounded, so a compression bomb costs a capture, not the process.

use std::io::{self, Write};

/// Collects decoded bytes until the caller drains them.
#[derive(Debug, Default)]
pub struct Drain {
    buf: Vec<u8>,
    total: usize,
    limit: usize,
}

impl Write for Drain {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.total += data.len();
        if self.total > self.limit {
            return Err(io::Error::other("decoded body exceeds the capture limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streaming decoder for one `content-encoding`.
pub enum Decoder {
    Identity(Drain),
    Gzip(Box<flate2::write::MultiGzDecoder<Drain>>),
    Deflate(Box<flate2::write::ZlibDecoder<Drain>>),
    Brotli(Box<brotli::DecompressorWriter<Drain>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Drain>>),
}

impl Decoder {
    /// A decoder for the given `content-encoding` value, or `None` for one rethread cannot read
    /// (several stacked encodings, or an unknown one).
    pub fn for_encoding(encoding: Option<&str>, limit: usize) -> Option<Self> {
        let drain = Drain {
            buf: Vec::new(),
            total: 0,
            limit,
        };
        let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
        Some(match encoding.as_deref() {
            None | Some("") | Some("identity") => Self::Identity(drain),
            Some("gzip") | Some("x-gzip") => {
                Self::Gzip(Box::new(flate2::write::MultiGzDecoder::new(drain)))
            }
            Some("deflate") => Self::Deflate(Box::new(flate2::write::ZlibDecoder::new(drain))),
            Some("br") => Self::Brotli(Box::new(brotli::DecompressorWriter::new(drain, 8192))),
            Some("zstd") => Self::Zstd(Box::new(zstd::stream::write::Decoder::new(drain).ok()?)),
            Some(_) => return None,
        })
    }

    /// Decodes a chunk; the decoded bytes are handed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let drain = match self {
            Self::Identity(_) => {
                out(chunk);
                return Ok(());
            }
            Self::Gzip(d) => {
                d.write_all(chunk)?;
                d.get_mut()
            }
            Self::Deflate(d) => {
                d.write_all(chunk)?;
                d.get_mut()
            }
            Self::Brotli(d) => {
                d.write_all(chunk)?;
                d.get_mut()
            }
            Self::Zstd(d) => {
                d.write_all(chunk)?;
                d.get_mut()
            }
        };
        if !drain.buf.is_empty() {
            out(&drain.buf);
            drain.buf.clear();
        }
        Ok(())
    }

    /// Flushes what the decoder still holds at the end of the body.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let drain = match self {
            Self::Identity(_) => return Ok(()),
            Self::Gzip(d) => {
                d.try_finish()?;
                d.get_mut()
            }
            Self::Deflate(d) => {
                d.try_finish()?;
                d.get_mut()
            }
            Self::Brotli(d) => {
                d.flush()?;
                d.get_mut()
            }
            Self::Zstd(d) => {
                d.flush()?;
                d.get_mut()
            }
        };
        if !drain.buf.is_empty() {
            out(&drain.buf);
            drain.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode_all(encoding: &str, body: &[u8]) -> Vec<u8> {
        let mut d = Decoder::for_encoding(Some(encoding), 1 << 20).unwrap();
        let mut out = Vec::new();
        for chunk in body.chunks(7) {
            d.feed(chunk, &mut |b| out.extend_from_slice(b)).unwrap();
        }
        d.finish(&mut |b| out.extend_from_slice(b)).unwrap();
        out
    }

    const TEXT: &[u8] =
        b"{\"output\":[{\"type\":\"reasoning\",\"id\":\"rs_1\"}]} repeated repeated repeated";

    #[test]
    fn every_encoding_the_sdks_ask_for_is_decoded_in_pieces() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT).unwrap();
        assert_eq!(decode_all("gzip", &gz.finish().unwrap()), TEXT);
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(TEXT).unwrap();
        assert_eq!(decode_all("deflate", &zl.finish().unwrap()), TEXT);
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &TEXT[..], &mut br, &Default::default()).unwrap();
        assert_eq!(decode_all("br", &br), TEXT);
        assert_eq!(
            decode_all("zstd", &zstd::encode_all(TEXT, 3).unwrap()),
            TEXT
        );
        assert_eq!(decode_all("identity", TEXT), TEXT);
    }

    #[test]
    fn unknown_or_stacked_encodings_are_not_read() {
        assert!(Decoder::for_encoding(Some("gzip, br"), 10).is_none());
        assert!(Decoder::for_encoding(Some("compress"), 10).is_none());
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let packed = zstd::encode_all(&zeros[..], 3).unwrap();
        let mut d = Decoder::for_encoding(Some("zstd"), 1000).unwrap();
        let r = d
            .feed(&packed, &mut |_| {})
            .and_then(|_| d.finish(&mut |_| {}));
        assert!(r.is_err());
    }

    #[test]
    fn a_lying_encoding_is_an_error_not_a_panic() {
        let mut d = Decoder::for_encoding(Some("gzip"), 1000).unwrap();
        let r = d
            .feed(b"this is not gzip at all", &mut |_| {})
            .and_then(|_| d.finish(&mut |_| {}));
        assert!(r.is_err());
    }
}
