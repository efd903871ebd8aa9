//! A small Server-Sent Events parser for upstream streams.
//!
//! Our own rather than `eventsource-stream`: that crate is unmaintained, panics on a UTF-8 BOM at
//! the start of a stream and has no line-length cap (CRATES.md). This one buffers bytes until a
//! blank line ends an event, joins `data:` lines with newlines as the spec says, ignores comments
//! and ids, and gives up on a line longer than [`MAX_LINE`] instead of growing without bound.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Longest line accepted (1 MiB).
pub const MAX_LINE: usize = 1 << 20;
/// Most data one event may gather across its `data:` lines before the blank line that ends it
/// (1 MiB). A line cap alone would let an upstream send endless short `data:` lines that never
/// form an event and grow the buffer without bound.
pub const MAX_EVENT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`, or `message` when the event has none.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("the stream broke off")]
    Transport,
    #[error("a line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("an event is longer than {MAX_EVENT} bytes")]
    EventTooLong,
    #[error("the stream is not UTF-8")]
    NotUtf8,
}

#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    /// Bytes held in `data` for the event being read.
    pending: usize,
}

impl Parser {
    /// Takes in bytes and returns the events they complete.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            let line = line.strip_prefix('\u{feff}').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.pending = 0;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => {
                    self.pending += value.len() + 1;
                    if self.pending > MAX_EVENT {
                        return Err(SseError::EventTooLong);
                    }
                    self.data.push(value.to_owned());
                }
                _ => {}
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        Ok(out)
    }
}

/// Events from a byte stream, in order; the stream ends when the bytes end.
pub fn events<S, E>(bytes: S) -> impl Stream<Item = Result<SseEvent, SseError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
{
    futures_util::stream::unfold(
        (
            bytes,
            Parser::default(),
            std::collections::VecDeque::new(),
            false,
        ),
        |(mut bytes, mut parser, mut ready, mut failed)| async move {
            loop {
                if let Some(ev) = ready.pop_front() {
                    return Some((Ok(ev), (bytes, parser, ready, failed)));
                }
                if failed {
                    return None;
                }
                match bytes.next().await {
                    None => return None,
                    Some(Err(_)) => {
                        failed = true;
                        return Some((Err(SseError::Transport), (bytes, parser, ready, failed)));
                    }
                    Some(Ok(chunk)) => match parser.feed(&chunk) {
                        Ok(evs) => ready.extend(evs),
                        Err(e) => {
                            failed = true;
                            return Some((Err(e), (bytes, parser, ready, failed)));
                        }
                    },
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_join_their_data_lines() {
        let mut p = Parser::default();
        assert!(
            p.feed(b"\xef\xbb\xbfevent: ping\ndata: {}\n")
                .unwrap()
                .is_empty()
        );
        let evs = p
            .feed(b"\n: comment\r\ndata: a\r\ndata: b\r\n\r\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "ping".into(),
                    data: "{}".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "[DONE]".into()
                },
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = Parser::default();
        assert_eq!(
            p.feed(&vec![b'a'; MAX_LINE + 1]),
            Err(SseError::LineTooLong)
        );
    }

    #[tokio::test]
    async fn a_byte_stream_becomes_events_in_order() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"data: 1\n\nda")),
            Ok(Bytes::from_static(b"ta: 2\n\n")),
        ];
        let evs: Vec<_> = events(futures_util::stream::iter(chunks)).collect().await;
        let data: Vec<String> = evs.into_iter().map(|e| e.unwrap().data).collect();
        assert_eq!(data, vec!["1", "2"]);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_before_it_grows_past_the_bound() {
        let mut p = Parser::default();
        let line = format!("data: {}\n", "x".repeat(1000));
        let mut refused = false;
        for _ in 0..2_000 {
            match p.feed(line.as_bytes()) {
                Ok(events) => assert!(events.is_empty()),
                Err(e) => {
                    assert_eq!(e, SseError::EventTooLong);
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
        assert!(p.pending <= MAX_EVENT + 1002);
    }
}
