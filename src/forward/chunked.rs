//! The chunked transfer coding (RFC 9112 §7.1), decoded in place.
//!
//! hyper's client decodes a chunked body one chunk at a time and hands each chunk over a channel
//! to the task that reads it: an SSE stream of 200 events costs 200 handovers. Here every chunk
//! of one upstream read becomes one frame, gathered inside the read's own buffer (no allocation;
//! the only copy closes the gaps the chunk lines leave). The grammar and its limits are hyper's
//! (strict CRLF, 16 KiB of extensions, 16 KiB and 100 fields of trailers), so a body one of them
//! refuses the other refuses too.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Most bytes of chunk extensions in one body (hyper's `CHUNKED_EXTENSIONS_LIMIT`).
const EXTENSIONS_MAX: u64 = 16 << 10;
/// Most bytes of a trailer section (hyper's `TRAILER_LIMIT`).
const TRAILERS_MAX: usize = 16 << 10;
/// Most trailer fields (hyper's default `max_headers`).
const TRAILER_FIELDS_MAX: usize = 100;

/// Why a chunked body cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum ChunkError {
    #[error("invalid chunk size line")]
    SizeLine,
    #[error("chunk size overflows")]
    Overflow,
    #[error("chunk extensions over limit")]
    Extensions,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid trailer section")]
    Trailers,
    #[error("trailer section over limit")]
    TrailersOver,
}

impl From<ChunkError> for std::io::Error {
    fn from(e: ChunkError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a chunk's first size digit.
    Start,
    Size,
    /// Spaces after the size.
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: a trailer field or the final CRLF.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
    Done,
}

/// What one `decode` did with its buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Step {
    /// Decoded data now at the buffer's front.
    pub(super) data: usize,
    /// Bytes of the buffer read (the rest follows the body's end).
    pub(super) used: usize,
}

/// A chunked body's decoder, fed the body's bytes as they arrive.
#[derive(Debug)]
pub(super) struct Chunked {
    state: State,
    /// The size being read, then what is left of the chunk's data.
    size: u64,
    extensions: u64,
    trailers: Vec<u8>,
    trailer_fields: usize,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Chunked {
            state: State::Start,
            size: 0,
            extensions: 0,
            trailers: Vec::new(),
            trailer_fields: 0,
        }
    }

    /// Whether the body has ended (its last chunk and trailer section were read).
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body has ended and its trailers, if any, were taken.
    pub(super) fn is_spent(&self) -> bool {
        self.is_done() && self.trailer_fields == 0
    }

    /// Decodes `buf` in place: its chunks' data is moved to the front (`Step::data` bytes); it
    /// stops at the body's end (`Step::used`).
    pub(super) fn decode(&mut self, buf: &mut [u8]) -> Result<Step, ChunkError> {
        let (mut data, mut at) = (0, 0);
        while at < buf.len() {
            if self.state == State::Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - at);
                buf.copy_within(at..at + n, data);
                data += n;
                at += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            if self.state == State::Done {
                break;
            }
            let byte = buf[at];
            at += 1;
            self.state = self.step(byte)?;
        }
        Ok(Step { data, used: at })
    }

    /// The state after one byte of a line (anything but chunk data).
    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        use State::*;
        Ok(match (self.state, byte) {
            (Start | Size, _) if byte.is_ascii_hexdigit() => {
                let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(ChunkError::Overflow)?;
                Size
            }
            (Start, _) => return Err(ChunkError::SizeLine),
            (Size | SizeLws, b'\t' | b' ') => SizeLws,
            (Size | SizeLws, b';') => Extension,
            (Size | SizeLws | Extension, b'\r') => SizeLf,
            (Size | SizeLws, _) => return Err(ChunkError::SizeLine),
            (Extension, b'\n') => return Err(ChunkError::SizeLine),
            (Extension, _) => {
                self.extensions += 1;
                if self.extensions >= EXTENSIONS_MAX {
                    return Err(ChunkError::Extensions);
                }
                Extension
            }
            (SizeLf, b'\n') if self.size == 0 => EndCr,
            (SizeLf, b'\n') => Data,
            (SizeLf, _) => return Err(ChunkError::SizeLine),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (DataCr | DataLf, _) => return Err(ChunkError::DataEnd),
            (EndCr, b'\r') => {
                self.keep_final_byte(byte)?;
                EndLf
            }
            (EndCr, _) => {
                self.keep_trailer_byte(byte)?;
                Trailer
            }
            (Trailer, _) => {
                self.keep_trailer_byte(byte)?;
                if byte == b'\r' {
                    TrailerLf
                } else {
                    Trailer
                }
            }
            (TrailerLf, b'\n') => {
                if self.trailer_fields >= TRAILER_FIELDS_MAX {
                    return Err(ChunkError::TrailersOver);
                }
                self.trailer_fields += 1;
                self.keep_trailer_byte(byte)?;
                EndCr
            }
            (TrailerLf, _) => return Err(ChunkError::Trailers),
            (EndLf, b'\n') => {
                self.keep_final_byte(byte)?;
                Done
            }
            (EndLf, _) => return Err(ChunkError::Trailers),
            (Data | Done, _) => self.state,
        })
    }

    /// Keeps a byte of the body's final CRLF, which ends a trailer section when there is one.
    fn keep_final_byte(&mut self, byte: u8) -> Result<(), ChunkError> {
        if self.trailers.is_empty() {
            return Ok(());
        }
        self.keep_trailer_byte(byte)
    }

    /// Keeps a byte of the trailer section.
    fn keep_trailer_byte(&mut self, byte: u8) -> Result<(), ChunkError> {
        if self.trailers.len() >= TRAILERS_MAX {
            return Err(ChunkError::TrailersOver);
        }
        self.trailers.push(byte);
        Ok(())
    }

    /// The trailer fields, once the body has ended: given once; `None` when there were none.
    pub(super) fn take_trailers(&mut self) -> Result<Option<HeaderMap>, ChunkError> {
        if self.trailer_fields == 0 {
            return Ok(None);
        }
        let count = std::mem::take(&mut self.trailer_fields);
        let mut fields = vec![httparse::EMPTY_HEADER; count];
        let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&self.trailers, &mut fields)
        else {
            return Err(ChunkError::Trailers);
        };
        let mut map = HeaderMap::with_capacity(fields.len());
        for field in fields.iter() {
            let name =
                HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| ChunkError::Trailers)?;
            let value = HeaderValue::from_bytes(field.value).map_err(|_| ChunkError::Trailers)?;
            map.append(name, value);
        }
        Ok(Some(map))
    }
}

/// Decodes a chunked body fed in pieces of `split` bytes: its data and how many bytes followed
/// its end, or why it is refused (the fuzz target's and the property tests' entry).
pub(super) fn decode_in_pieces(
    body: &[u8],
    split: usize,
) -> Result<(Vec<u8>, usize, Option<HeaderMap>), ChunkError> {
    let mut chunked = Chunked::new();
    let (mut data, mut after) = (Vec::new(), 0);
    for piece in body.chunks(split.max(1)) {
        let mut buf = piece.to_vec();
        let step = chunked.decode(&mut buf)?;
        data.extend_from_slice(&buf[..step.data]);
        after += piece.len() - step.used;
    }
    Ok((data, after, chunked.take_trailers()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(
        body: &[u8],
        split: usize,
    ) -> Result<(Vec<u8>, usize, Option<HeaderMap>), ChunkError> {
        decode_in_pieces(body, split)
    }

    /// A body in chunks of these sizes (some with an extension), its trailers, then `after`.
    fn encode(
        data: &[u8],
        sizes: &[usize],
        trailers: &[(String, String)],
        after: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            let ext = if n.is_multiple_of(3) { ";a=b" } else { "" };
            out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(after);
        out
    }

    /// What hyper's own client makes of a response with this chunked body: its data, or `None`
    /// when it refuses it (or the body never ends).
    fn hyper_reads(body: &[u8]) -> Option<Vec<u8>> {
        use http_body_util::{BodyExt, Empty};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let response = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
            body,
        ]
        .concat();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (ours, mut theirs) = tokio::io::duplex(1 << 16);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(ours))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let _ = theirs.read(&mut head).await;
                let _ = theirs.write_all(&response).await;
                let _ = theirs.shutdown().await;
            });
            let request = http::Request::get("/")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let body = sender.send_request(request).await.ok()?.into_body();
            Some(body.collect().await.ok()?.to_bytes().to_vec())
        })
    }

    /// What this decoder makes of the same body: its data once it has ended, else `None`.
    fn we_read(body: &[u8]) -> Option<Vec<u8>> {
        let mut chunked = Chunked::new();
        let mut buf = body.to_vec();
        let step = chunked.decode(&mut buf).ok()?;
        chunked.take_trailers().ok()?;
        chunked.is_done().then(|| buf[..step.data].to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn hyper_and_this_decoder_accept_and_refuse_the_same_bodies(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"\r\n".to_vec()), Just(b"0\r\n\r\n".to_vec()), Just(b"5\r\n".to_vec()),
                    Just(b"hello".to_vec()), Just(b";x=1".to_vec()), Just(b"A: b\r\n".to_vec()),
                    Just(b" ".to_vec()), Just(b"\n".to_vec()), Just(b"\r".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..4),
                ],
                0..12,
            ),
        ) {
            let body = parts.concat();
            let shown = String::from_utf8_lossy(&body).into_owned();
            prop_assert_eq!(we_read(&body), hyper_reads(&body), "{:?}", shown);
        }
    }

    proptest! {
        #[test]
        fn any_body_decodes_to_its_data_at_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..200, 1..6),
            trailers in proptest::collection::vec(("[a-z][a-z0-9-]{0,8}", "[ -~]{0,12}"), 0..3),
            after in proptest::collection::vec(any::<u8>(), 0..8),
            split in 1usize..64,
        ) {
            let body = encode(&data, &sizes, &trailers, &after);
            let (decoded, rest, fields) = decode(&body, split).unwrap();
            prop_assert_eq!(decoded, data);
            prop_assert_eq!(rest, after.len());
            let fields = fields.unwrap_or_default();
            prop_assert_eq!(fields.len(), trailers.len());
            for (name, value) in &trailers {
                let kept = fields
                    .get_all(name.as_str())
                    .iter()
                    .any(|v| v.as_bytes() == value.trim().as_bytes());
                prop_assert!(kept, "{} lost", name);
            }
        }

        #[test]
        fn any_bytes_decode_alike_however_they_are_split(
            body in proptest::collection::vec(
                prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'5'), Just(b';'), Just(b' '),
                    any::<u8>(),
                ],
                0..200,
            ),
            split in 1usize..32,
        ) {
            prop_assert_eq!(decode(&body, split), decode(&body, body.len()));
        }
    }

    #[test]
    fn every_chunk_of_a_read_is_gathered_at_the_front() {
        let mut buf = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nNEXT".to_vec();
        let mut chunked = Chunked::new();
        let step = chunked.decode(&mut buf).unwrap();
        assert_eq!(&buf[..step.data], b"hello, world");
        assert_eq!(step.used, buf.len() - 4, "stops at the body's end");
        assert!(chunked.is_done());
    }

    #[test]
    fn a_body_decodes_the_same_at_any_split() {
        let body = b"4;name=value\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
            0\r\nExpires: never\r\nX-Two: 2\r\n\r\n";
        let whole = decode(body, body.len()).unwrap();
        assert_eq!(whole.0, b"Wikipedia in\r\n\r\nchunks.");
        let trailers = whole.2.clone().unwrap();
        assert_eq!(trailers["expires"], "never");
        assert_eq!(trailers["x-two"], "2");
        for split in 1..body.len() {
            assert_eq!(decode(body, split).unwrap(), whole, "split {split}");
        }
    }

    #[test]
    fn what_hyper_refuses_is_refused() {
        for (body, error) in [
            (&b"x\r\n"[..], ChunkError::SizeLine),
            (b"\r\n", ChunkError::SizeLine),
            (b"5\nhello\r\n", ChunkError::SizeLine),
            (b"5 5\r\n", ChunkError::SizeLine),
            (b"5;a\nb\r\n", ChunkError::SizeLine),
            (b"5\r\nhelloX\r\n", ChunkError::DataEnd),
            (b"5\r\nhello\rX", ChunkError::DataEnd),
            (b"1ffffffffffffffff\r\n", ChunkError::Overflow),
            (b"0\r\nA: b\rX", ChunkError::Trailers),
            (b"0\r\n\rX", ChunkError::Trailers),
            (b"0\r\nno colon\r\n\r\n", ChunkError::Trailers),
        ] {
            assert_eq!(decode(body, body.len()).err(), Some(error), "{body:?}");
        }
        let long = [b"1;".as_slice(), &[b'a'; 16 << 10], b"\r\n"].concat();
        assert_eq!(decode(&long, 4096).err(), Some(ChunkError::Extensions));
        let many = [b"0\r\n".as_slice(), &b"A: b\r\n".repeat(101), b"\r\n"].concat();
        assert_eq!(decode(&many, 7).err(), Some(ChunkError::TrailersOver));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let mut chunked = Chunked::new();
        let mut buf = b"5\r\nhel".to_vec();
        let step = chunked.decode(&mut buf).unwrap();
        assert_eq!((&buf[..step.data], step.used), (&b"hel"[..], 6));
        assert!(!chunked.is_done());
    }
}
