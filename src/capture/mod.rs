//! Learning turns from responses as they pass: JSON bodies and SSE streams.
//!
//! Capture reads a copy of what the client receives and never holds the client up: it sees each
//! chunk as it goes by, decodes compression on the side, assembles only the events that carry
//! items, and keys streamed items by `output_index` (some compatible servers change ids between
//! events; the final id is the one in `output_item.done` / `response.completed`). A response it
//! cannot read teaches nothing, and says why. What capture keeps of a body is its shape: strings
//! longer than the largest item kept in full (image results, partial images) are dropped as they
//! stream by (`elide.rs`), so an image response costs kilobytes, not a second copy.

mod builder;
pub mod decode;
mod elide;
mod response;
mod sse;

use crate::repair::items::{ItemType, Turn};
use decode::Decoder;
use elide::Eliding;
use response::read_response;
use sse::SseFramer;

pub use builder::TurnBuilder;
pub use response::{turn_from_response, ResponseFacts, Usage};

/// Which items are remembered in full, beyond their id and type.
#[derive(Clone, Copy, Debug)]
pub struct KeepPolicy {
    /// Largest item kept in full, in bytes of JSON.
    pub full_item_max: usize,
    /// Largest image call kept in full (an unstored turn's, for the image store's budget); 0:
    /// none.
    pub image_max: usize,
}

impl KeepPolicy {
    /// Client calls are always inserted in full, so they are always kept. Items of unstored
    /// responses can only be replayed in full, so they are kept too; an image result within its
    /// own bound (a stored turn's is looked up by the server, never sent back in full).
    fn keeps(&self, ty: &ItemType, stored: bool, len: usize) -> bool {
        if ty.has_bulky_payload() {
            return !stored && len <= self.image_max;
        }
        len <= self.full_item_max && (ty.is_client_call() || !stored)
    }
}

/// Why a response taught nothing.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("content-encoding rethread cannot decode")]
    Encoding,
    #[error("content-type is neither JSON nor an event stream")]
    ContentType,
    #[error("body could not be decoded: {0}")]
    Decode(std::io::Error),
    #[error("body exceeds the capture limit")]
    TooLarge,
    #[error("body is not a readable response: {0}")]
    Json(#[from] serde_json::Error),
    #[error("an event exceeds the capture limit")]
    EventTooLarge,
}

impl CaptureError {
    /// Every label `reason` can return.
    pub const REASONS: [&'static str; 6] = [
        "encoding",
        "content_type",
        "decode",
        "too_large",
        "json",
        "event_too_large",
    ];

    /// A fixed label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Encoding => "encoding",
            Self::ContentType => "content_type",
            Self::Decode(_) => "decode",
            Self::TooLarge => "too_large",
            Self::Json(_) => "json",
            Self::EventTooLarge => "event_too_large",
        }
    }
}

/// Limits for capture.
#[derive(Clone, Copy, Debug)]
pub struct CaptureLimits {
    /// Largest decoded JSON body, or SSE event, that is read.
    pub max_body: usize,
    pub keep: KeepPolicy,
    /// The request was `store: false`: image results are read up to `keep.image_max` (its
    /// response says so only after its output, too late for a body streaming by).
    pub stateless: bool,
}

impl CaptureLimits {
    /// The limits the settings give.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let store = &settings.store;
        CaptureLimits {
            max_body: settings.capture.body_limit,
            keep: KeepPolicy {
                full_item_max: settings.capture.full_item_max,
                image_max: store
                    .stateless_image_budget
                    .min(store.tenant_stateless_image_budget),
            },
            stateless: false,
        }
    }

    /// The bound of an image result read from a body streaming by.
    fn result_max(&self) -> usize {
        if self.stateless {
            self.keep.image_max
        } else {
            0
        }
    }
}

/// How a body is read.
#[allow(clippy::large_enum_variant)] // one per response body: boxing would only add an allocation
enum Format {
    Json(Eliding),
    /// The framer, the builder, and the first event that could not be read.
    Sse(SseFramer, TurnBuilder, Option<CaptureError>),
}

/// Capture of one response body, fed chunk by chunk.
pub struct Capture {
    decoder: Decoder,
    format: Format,
    limits: CaptureLimits,
    /// What the response says of itself is read too (`with_facts`).
    facts: bool,
}

impl Capture {
    /// Starts capturing a body with these headers.
    pub fn new(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        limits: CaptureLimits,
    ) -> Result<Self, CaptureError> {
        let mime = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        let format = match mime.as_deref() {
            Some("text/event-stream") => Format::Sse(
                SseFramer::new(
                    limits.max_body,
                    limits.keep.full_item_max,
                    limits.result_max(),
                ),
                TurnBuilder::new(limits.keep),
                None,
            ),
            Some(m) if m == "application/json" || m.ends_with("+json") => Format::Json(
                Eliding::new(limits.keep.full_item_max).keeping_results(limits.result_max()),
            ),
            _ => return Err(CaptureError::ContentType),
        };
        // Decoded output may be larger than the body limit by the SSE stream's length; bound it
        // generously but finitely.
        let decoded_limit = limits.max_body.saturating_mul(16);
        let decoder =
            Decoder::for_encoding(content_encoding, decoded_limit).ok_or(CaptureError::Encoding)?;
        Ok(Capture {
            decoder,
            format,
            limits,
            facts: false,
        })
    }

    /// Also reads what the response says of itself (`finish_with_facts`): for a trace, and only
    /// then.
    pub fn with_facts(mut self) -> Self {
        self.facts = true;
        if let Format::Sse(_, builder, _) = &mut self.format {
            builder.facts = Some(ResponseFacts::default());
        }
        self
    }

    /// Reads one chunk of the body as the client receives it.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CaptureError> {
        self.pump(Some(chunk))
    }

    /// Runs the decoder over `chunk` (or flushes it, at the end) and reads what it yields.
    fn pump(&mut self, chunk: Option<&[u8]>) -> Result<(), CaptureError> {
        let Capture {
            decoder,
            format,
            limits,
            ..
        } = self;
        let mut failure = None;
        {
            let mut read = |decoded: &[u8]| {
                if failure.is_none() {
                    failure = Self::consume(format, limits, decoded).err();
                }
            };
            match chunk {
                Some(chunk) => decoder.feed(chunk, &mut read),
                None => decoder.finish(&mut read),
            }
            .map_err(CaptureError::Decode)?;
        }
        failure.map_or(Ok(()), Err)
    }

    fn consume(
        format: &mut Format,
        limits: &CaptureLimits,
        decoded: &[u8],
    ) -> Result<(), CaptureError> {
        match format {
            Format::Json(kept) => {
                kept.push(decoded);
                if kept.len() > limits.max_body {
                    return Err(CaptureError::TooLarge);
                }
                Ok(())
            }
            Format::Sse(framer, builder, unreadable) => {
                framer.push(decoded, &mut |event| {
                    // One unreadable event does not spoil the others.
                    if let Err(e) = builder.on_event(event) {
                        unreadable.get_or_insert(e);
                    }
                });
                if framer.overflowed() {
                    return Err(CaptureError::EventTooLarge);
                }
                Ok(())
            }
        }
    }

    /// The turn the body held, once it has ended.
    pub fn finish(self) -> Result<Option<Turn>, CaptureError> {
        self.finish_with_facts().0
    }

    /// The turn the body held, and what the response said of itself (as far as it was read;
    /// `None` unless `with_facts` asked for it).
    pub fn finish_with_facts(
        mut self,
    ) -> (Result<Option<Turn>, CaptureError>, Option<ResponseFacts>) {
        if let Err(e) = self.pump(None) {
            return (Err(e), None);
        }
        match self.format {
            Format::Json(kept) => {
                let mut facts = self.facts.then(ResponseFacts::default);
                let turn = read_response(kept.bytes(), self.limits.keep, facts.as_mut());
                (turn, facts)
            }
            Format::Sse(_, mut builder, unreadable) => {
                let facts = builder.facts.take();
                let turn = match (builder.finish(), unreadable) {
                    (None, Some(e)) => Err(e),
                    (turn, _) => Ok(turn),
                };
                (turn, facts)
            }
        }
    }
}

#[cfg(test)]
mod tests;
