//! The HTTP providers' shared machinery: one [`HttpProvider`] generic over a [`WireFormat`].
//!
//! Anthropic and OpenAI differ only in their wire format (endpoint, headers, body, answer, stream
//! events); sending with a bounded body, mapping every failure to a typed [`ProviderError`] and
//! turning SSE events into a [`CompletionStream`] are the same for both and live here once. A
//! wire format is a type with no state; the provider holds the client, key, URL and models.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{
    Completion, CompletionRequest, CompletionStream, Provider, ProviderError, ProviderId,
    StreamEvent, UpstreamConfig, Usage, sse,
};

/// One provider's wire format.
pub trait WireFormat: Send + Sync + 'static {
    const ID: ProviderId;
    /// The endpoint, from the configured base URL (without a trailing slash).
    fn url(base: &str) -> String;
    /// The request: auth and version headers, and the JSON body.
    fn request(
        builder: reqwest::RequestBuilder,
        key: &str,
        req: &CompletionRequest,
        stream: bool,
    ) -> reqwest::RequestBuilder;
    /// A whole (non-streamed) answer.
    fn parse(bytes: &[u8]) -> Result<Completion, ProviderError>;
    /// The answer's SSE events as a completion stream (usually [`completion_stream`]).
    fn stream(
        events: impl futures_util::Stream<Item = Result<sse::SseEvent, sse::SseError>> + Send + 'static,
    ) -> CompletionStream;
    /// The token-counting endpoint, for APIs that have one.
    fn count_url(_base: &str) -> Option<String> {
        None
    }
    /// The token-counting request (only called when [`WireFormat::count_url`] is `Some`).
    fn count_request(
        builder: reqwest::RequestBuilder,
        _key: &str,
        _req: &CompletionRequest,
    ) -> reqwest::RequestBuilder {
        builder
    }
}

/// An endpoint, parsed once. Given text, reqwest parses it again on every request (the URL
/// parser and IDNA: about 6,000 instructions of a miss's ~330,000 under callgrind,
/// `loadtest/hit_callgrind.py --scenario generate-miss`). Text that does not parse is kept as it
/// is, so sending to it fails with reqwest's own error, as it always did.
#[derive(Debug, Clone)]
enum Endpoint {
    Parsed(reqwest::Url),
    Text(String),
}

impl Endpoint {
    fn new(url: String) -> Self {
        reqwest::Url::parse(&url).map_or(Endpoint::Text(url), Endpoint::Parsed)
    }

    fn post(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        match self {
            Endpoint::Parsed(url) => http.post(url.clone()),
            Endpoint::Text(url) => http.post(url.as_str()),
        }
    }
}

/// An HTTP provider speaking wire format `W`.
pub struct HttpProvider<W> {
    http: reqwest::Client,
    api_key: SecretString,
    url: Endpoint,
    count_url: Option<Endpoint>,
    models: Vec<String>,
    wire: PhantomData<W>,
}

impl<W: WireFormat> HttpProvider<W> {
    pub fn new(http: reqwest::Client, cfg: &UpstreamConfig) -> Self {
        HttpProvider {
            http,
            api_key: cfg.api_key.clone(),
            url: Endpoint::new(W::url(&cfg.base_url)),
            count_url: W::count_url(&cfg.base_url).map(Endpoint::new),
            models: cfg.models.clone(),
            wire: PhantomData,
        }
    }

    /// Sends the request; a non-2xx answer becomes a typed error here. Streaming requests get
    /// no whole-response timeout (a long answer may stream for minutes); the router bounds the
    /// wait for the headers and the first event instead. The key is exposed only while the
    /// header is built.
    async fn send(
        &self,
        req: &CompletionRequest,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let builder = W::request(
            self.url.post(&self.http),
            self.api_key.expose_secret(),
            req,
            stream,
        );
        send_checked(W::ID, builder, stream, req.timeout).await
    }
}

#[async_trait]
impl<W: WireFormat> Provider for HttpProvider<W> {
    fn id(&self) -> ProviderId {
        W::ID
    }

    fn models(&self) -> &[String] {
        &self.models
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let resp = self.send(req, false).await?;
        let bytes = read_body(W::ID, resp, req.timeout).await?;
        W::parse(&bytes)
    }

    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let resp = self.send(req, true).await?;
        Ok(W::stream(sse::events(Box::pin(resp.bytes_stream()))))
    }

    async fn count_tokens(&self, req: &CompletionRequest) -> Option<Result<u64, ProviderError>> {
        let url = self.count_url.as_ref()?;
        let builder = W::count_request(url.post(&self.http), self.api_key.expose_secret(), req);
        Some(
            async {
                let resp = send_checked(W::ID, builder, false, req.timeout).await?;
                let bytes = read_body(W::ID, resp, req.timeout).await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Malformed {
                        provider: W::ID,
                        reason: format!("not a token count ({})", json_error_class(&e)),
                    })?;
                v["input_tokens"]
                    .as_u64()
                    .ok_or_else(|| ProviderError::Malformed {
                        provider: W::ID,
                        reason: "no input_tokens in the token count".into(),
                    })
            }
            .await,
        )
    }
}

/// What a provider makes of one upstream event.
pub enum Step {
    /// Nothing to pass on (a ping, a start marker, usage noted in the state).
    Skip,
    /// Text for the client.
    Emit(String),
    /// The answer is complete.
    Finish,
    /// The upstream reported an error: the stream ends with it.
    Fail(ProviderError),
}

/// What a stream learns besides its text, for the final [`StreamEvent::Finished`].
#[derive(Default)]
pub struct StreamState {
    pub model: String,
    pub usage: Usage,
    pub truncated: bool,
    pub stop_sequence: Option<String>,
}

/// A provider's SSE events as a [`CompletionStream`]. `on_event` reads one event into a
/// [`Step`]; everything else — ending on `Finish` or an error, a transport break, a stream that
/// stops before `end` — is the same for every provider and lives here.
pub fn completion_stream<F>(
    provider: ProviderId,
    events: impl futures_util::Stream<Item = Result<sse::SseEvent, sse::SseError>> + Send + 'static,
    end: &'static str,
    on_event: F,
) -> CompletionStream
where
    F: FnMut(&sse::SseEvent, &mut StreamState) -> Step + Send + 'static,
{
    use futures_util::StreamExt;
    let events = Box::pin(events);
    Box::pin(futures_util::stream::unfold(
        (events, StreamState::default(), on_event, false),
        move |(mut events, mut st, mut on_event, done)| async move {
            if done {
                return None;
            }
            loop {
                let ev = match events.next().await {
                    None => {
                        let e = ProviderError::Malformed {
                            provider,
                            reason: format!("the stream ended before {end}"),
                        };
                        return Some((Err(e), (events, st, on_event, true)));
                    }
                    Some(Err(e)) => {
                        let e = ProviderError::Transport {
                            provider,
                            reason: e.to_string(),
                        };
                        return Some((Err(e), (events, st, on_event, true)));
                    }
                    Some(Ok(ev)) => ev,
                };
                match on_event(&ev, &mut st) {
                    Step::Skip => {}
                    Step::Emit(text) => {
                        return Some((Ok(StreamEvent::Delta(text)), (events, st, on_event, false)));
                    }
                    Step::Finish => {
                        let fin = StreamEvent::Finished {
                            model: std::mem::take(&mut st.model),
                            usage: st.usage,
                            truncated: st.truncated,
                            stop_sequence: st.stop_sequence.take(),
                        };
                        return Some((Ok(fin), (events, st, on_event, true)));
                    }
                    Step::Fail(e) => return Some((Err(e), (events, st, on_event, true))),
                }
            }
        },
    ))
}

/// Largest upstream body read into memory. A real completion of the largest allowed
/// `max_tokens` is far smaller; anything bigger is a broken or hostile upstream.
const MAX_UPSTREAM_BODY: usize = 8 << 20;

/// Classifies a reqwest failure without keeping its message, which can carry the URL.
pub fn transport_error(
    provider: ProviderId,
    e: &reqwest::Error,
    timeout: Duration,
) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout { provider, timeout }
    } else if e.is_connect() {
        ProviderError::Connect { provider }
    } else if e.is_body() || e.is_decode() {
        ProviderError::Malformed {
            provider,
            reason: "the body could not be read".into(),
        }
    } else {
        ProviderError::Transport {
            provider,
            reason: "request failed".into(),
        }
    }
}

/// Sends a request built by a provider. A plain request is bounded by the attempt's timeout;
/// a streaming one is not (a long answer may stream for minutes: the router bounds the wait
/// for its first event instead). A non-2xx answer becomes a typed error keeping the status,
/// the provider's error type and `retry-after`.
pub async fn send_checked(
    provider: ProviderId,
    builder: reqwest::RequestBuilder,
    stream: bool,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    // The attempt's trace context goes with it (W3C `traceparent`), so a provider's or a
    // proxy's own traces join ours. Nothing is added when traces are not exported.
    let builder = builder.headers(crate::telemetry::trace::outgoing_headers());
    let builder = if stream {
        builder
    } else {
        builder.timeout(timeout)
    };
    let resp = builder
        .send()
        .await
        .map_err(|e| transport_error(provider, &e, timeout))?;
    // What the provider says is left of our limits, on successes and 429s alike.
    super::ratelimit_headers::report(resp.headers());
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry = retry_after(resp.headers());
    let bytes = read_body(provider, resp, timeout).await?;
    Err(ProviderError::Status {
        provider,
        status: status.as_u16(),
        kind: error_kind(&bytes),
        retry_after: retry,
    })
}

/// Reads a body up to [`MAX_UPSTREAM_BODY`] bytes.
pub async fn read_body(
    provider: ProviderId,
    mut resp: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, ProviderError> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(ProviderError::Malformed {
                        provider,
                        reason: format!("body larger than {MAX_UPSTREAM_BODY} bytes"),
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(transport_error(provider, &e, timeout)),
        }
    }
}

/// serde_json's error category as a fixed phrase, so a malformed-answer reason can never
/// carry upstream text.
pub fn json_error_class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// `retry-after` as delay-seconds (decimals allowed) or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The machine-readable error type from a provider's JSON error body, if it has one that
/// looks like an identifier. Both Anthropic and OpenAI use `{"error": {"type": …}}`; OpenAI
/// also has `code`. Free text is never kept: it can echo the prompt.
pub fn error_kind(body: &[u8]) -> String {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return "unknown".into(),
    };
    let err = &v["error"];
    let candidate = err["code"]
        .as_str()
        .or_else(|| err["type"].as_str())
        .unwrap_or("unknown");
    if candidate.len() <= 64
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        candidate.to_owned()
    } else {
        "unknown".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_parsed_once_and_text_that_does_not_parse_still_fails_at_send() {
        let http = reqwest::Client::new();
        let good = Endpoint::new("http://127.0.0.1:9/v1/messages".to_owned());
        assert!(matches!(good, Endpoint::Parsed(_)));
        let built = good
            .post(&http)
            .build()
            .expect("a parsed URL builds a request");
        assert_eq!(built.url().as_str(), "http://127.0.0.1:9/v1/messages");

        // Configuration checks only the scheme; a host with a space gets past it.
        let bad = Endpoint::new("http://exa mple/v1/messages".to_owned());
        assert!(matches!(bad, Endpoint::Text(_)));
        let err = bad
            .post(&http)
            .build()
            .expect_err("an unparsable URL fails");
        assert!(err.is_builder(), "{err}");
    }
}
