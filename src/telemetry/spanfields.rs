//! The JSON log's span fields, written straight as JSON text.
//!
//! With JSON logs, tracing's fmt layer formats the fields of every span it sees when the span
//! opens, and keeps the text so that an event inside the span can carry them. Its own formatter
//! (`JsonFields`) builds a `serde_json` map of the fields, then serializes the map: on the cache
//! hit path under load that was about 3% of the gateway's CPU (issue 20), for a request span
//! whose text is read only if something inside the request logs. This formatter writes the
//! same JSON object in one pass into the span's string. The JSON event formatter parses the
//! text back whenever it embeds a span, so the only contract is that the text is one JSON object
//! with the same keys and values `JsonFields` would give: strings for `Display`/`Debug` values,
//! `&str` and 128-bit integers, numbers and booleans as themselves, bytes as an array, a later
//! value of a key replacing an earlier one (a parse keeps the last).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

/// Span fields as a JSON object, e.g. `{"request_id":"…","route":"/livez"}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut out = String::with_capacity(128);
        out.push('{');
        let mut visitor = Visitor {
            out: &mut out,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        out.push('}');
        writer.write_str(&out)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // `current` is this formatter's own `{...}` (or empty): open it again at its closing
        // brace and append. A key recorded twice appears twice; the reader keeps the last.
        let text = &mut current.fields;
        let first = match text.pop() {
            Some('}') => text.len() <= 1,
            _ => {
                text.clear();
                text.push('{');
                true
            }
        };
        let mut visitor = Visitor {
            out: text,
            first,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        let result = visitor.result;
        text.push('}');
        result
    }
}

struct Visitor<'a> {
    out: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        // tracing's macros already name a raw identifier without its `r#` (`r#type` is "type").
        escaped(self.out, field.name());
        self.out.push(':');
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field);
        if let Err(e) = write!(self.out, "{value}") {
            self.result = Err(e);
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        escaped(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        // `%x` fields arrive here as a Debug wrapper of their Display: one formatting into a
        // scratch string, then escaped. (Formatting cannot fail for the types we log; if it
        // does, the span keeps what it had and the error reaches tracing.)
        let mut text = String::new();
        if let Err(e) = write!(text, "{value:?}") {
            self.result = Err(e);
        }
        escaped(self.out, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // An array of numbers, as `JsonFields` writes bytes. (128-bit integers are left to the
        // default, `record_debug`: `JsonFields` writes them as strings.)
        self.key(field);
        self.out.push('[');
        for (i, b) in value.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            if let Err(e) = write!(self.out, "{b}") {
                self.result = Err(e);
            }
        }
        self.out.push(']');
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes them as null, and so does this.
        if value.is_finite() {
            self.raw(field, value);
        } else {
            self.raw(field, "null");
        }
    }
}

/// `s` as a JSON string literal, quotes included.
fn escaped(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// A writer that keeps what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The `span` object of the one line logged inside a span, formatted with `fields`.
    fn span_object<N>(fields: N) -> serde_json::Value
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let writer = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(fields)
            .with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let id = "req-\"1\"\n\u{1}é😀";
            let span = tracing::info_span!(
                "request",
                request_id = %id,
                route = "/api/spark/generate",
                n = 7u64,
                neg = -3i64,
                ok = true,
                ratio = 0.5f64,
                bad = f64::NAN,
                big = 170_141_183_460_469_231_731_687_303_715_884_105_727i128,
                bytes = &b"ab\x00"[..],
                r#type = %"raw",
                caller = tracing::field::Empty,
                cache = tracing::field::Empty,
            );
            span.record("caller", "ops \\ team");
            span.record("cache", "miss");
            span.record("cache", "hit");
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        line["span"].clone()
    }

    #[test]
    fn writes_what_tracings_own_json_fields_write() {
        let ours = span_object(JsonSpanFields);
        let theirs = span_object(tracing_subscriber::fmt::format::JsonFields::default());
        assert_eq!(ours, theirs);
        assert_eq!(ours["request_id"], "req-\"1\"\n\u{1}é😀");
        assert_eq!(ours["caller"], "ops \\ team");
        assert_eq!(ours["cache"], "hit");
        assert_eq!(ours["n"], 7);
        assert!(ours["bad"].is_null());
        assert_eq!(ours["type"], "raw");
        assert_eq!(ours["bytes"], serde_json::json!([97, 98, 0]));
        assert_eq!(ours["big"], "170141183460469231731687303715884105727");
    }

    #[test]
    fn escapes_every_control_character() {
        let mut s = String::new();
        let all: String = (0u8..0x20).map(char::from).chain("\"\\a".chars()).collect();
        escaped(&mut s, &all);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, all);
    }
}
