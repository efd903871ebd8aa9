//! API.md's error table, in one place.
//!
//! Every module has its own typed error; they meet here in [`ApiError`], whose status, `code` and
//! message are decided by one exhaustive `match` (no `_` arm, so a new variant cannot be
//! forgotten). An error response is built in two steps: [`ApiError::into_response`] sets the
//! status and headers and parks the error in the response extensions, and the request-id layer
//! (the outermost one, which alone knows the request id) renders the JSON body. That layer is
//! also where the cause is logged, once, inside the request's span. Internal details (upstream
//! bodies, keys, panics) never reach the body: 5xx messages are fixed sentences.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::generate::GenerateError;
use crate::providers::ProviderError;
use crate::sanitize::Rejection;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this endpoint needs the master key")]
    Forbidden,
    #[error("the identity provider's signing keys cannot be fetched")]
    AuthUnavailable { retry_after: Duration },
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(Duration),
    #[error(transparent)]
    Prompt(Rejection),
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("upstream error: {0}")]
    Upstream(ProviderError),
    #[error("too many requests in flight")]
    Overloaded,
    #[error("every eligible provider's circuit is open")]
    ProvidersUnavailable { retry_after: Duration },
    #[error("every eligible provider's capacity is taken (SPARK_PROVIDER_LIMITS)")]
    ProvidersBusy { retry_after: Duration },
    #[error("the request deadline of {0:?} passed")]
    UpstreamTimeout(Duration),
    #[error("no {0} has that id")]
    UnknownId(&'static str),
    #[error("the {} budget is spent", .0.scope.as_str())]
    BudgetExceeded(crate::budget::Exceeded),
    #[error("this key may not use that model")]
    ModelNotAllowed,
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("the database is not configured (SPARK_DATABASE_URL=none)")]
    DatabaseOff,
}

/// What the request-id layer needs to render an error body.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The full error, for the log line only.
    pub cause: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Prompt(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Overloaded
            | ApiError::AuthUnavailable { .. }
            | ApiError::ProvidersUnavailable { .. }
            | ApiError::ProvidersBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UnknownId(_) => StatusCode::NOT_FOUND,
            ApiError::BudgetExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ModelNotAllowed => StatusCode::FORBIDDEN,
            ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DatabaseOff => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The API.md `code`; also the `outcome` metrics label, so it stays low-cardinality.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::AuthUnavailable { .. } => "auth_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Prompt(Rejection::TooLong { .. }) => "prompt_too_long",
            ApiError::Prompt(Rejection::Blocked { .. }) => "prompt_rejected",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Internal(_) => "internal_error",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Overloaded => "overloaded",
            ApiError::ProvidersUnavailable { .. } => "providers_unavailable",
            ApiError::ProvidersBusy { .. } => "providers_busy",
            ApiError::UpstreamTimeout(_) => "upstream_timeout",
            ApiError::UnknownId(_) => "not_found",
            ApiError::BudgetExceeded(_) => "budget_exceeded",
            ApiError::ModelNotAllowed => "model_not_allowed",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::DatabaseOff => "database_off",
        }
    }

    /// The sentence a client sees. For 5xx it is fixed; the cause stays in our logs.
    fn public_message(&self) -> String {
        match self {
            ApiError::InvalidRequest(m) => m.clone(),
            ApiError::Unauthorized => "Missing or invalid API key.".into(),
            ApiError::Forbidden => {
                "This endpoint requires the master API key or an administrator's token.".into()
            }
            ApiError::AuthUnavailable { .. } => {
                "The identity provider cannot be reached to check this token; retry later.".into()
            }
            ApiError::NotFound => "No such endpoint.".into(),
            ApiError::MethodNotAllowed => "Method not allowed for this endpoint.".into(),
            ApiError::PayloadTooLarge { limit } => {
                format!("Request body exceeds the limit of {limit} bytes.")
            }
            ApiError::UnsupportedMediaType => {
                "Request body must be JSON with Content-Type: application/json.".into()
            }
            ApiError::RequestTimeout(d) => format!(
                "The request body did not arrive within {} seconds.",
                d.as_secs()
            ),
            ApiError::Prompt(Rejection::TooLong { max, .. }) => {
                format!("Prompt is longer than {max} characters after normalization.")
            }
            ApiError::Prompt(Rejection::Blocked { .. }) => {
                "Prompt was rejected by the injection filter.".into()
            }
            ApiError::RateLimited { .. } => "Rate limit exceeded; retry later.".into(),
            ApiError::Internal(_) => "An internal error occurred.".into(),
            ApiError::Upstream(_) => {
                "The model provider returned an error and no fallback could serve the request."
                    .into()
            }
            ApiError::Overloaded => "The gateway is at capacity; retry shortly.".into(),
            ApiError::ProvidersUnavailable { .. } => {
                "No model provider is available right now; retry later.".into()
            }
            ApiError::ProvidersBusy { .. } => {
                "Every model provider's capacity is in use; retry shortly.".into()
            }
            ApiError::UpstreamTimeout(_) => {
                "The request did not complete within its deadline.".into()
            }
            ApiError::UnknownId(what) => format!("No {what} has that id."),
            ApiError::BudgetExceeded(e) => match e.limit_tokens {
                Some(tokens) if e.by_tokens => format!(
                    "The {} budget of {tokens} tokens is spent.",
                    e.scope.as_str()
                ),
                _ => format!(
                    "The {} budget of {} USD is spent.",
                    e.scope.as_str(),
                    crate::store::usd(e.limit_nusd)
                ),
            },
            ApiError::ModelNotAllowed => "This API key may not use the requested model.".into(),
            ApiError::DatabaseUnavailable(_) => {
                "The database is unavailable; retry shortly.".into()
            }
            ApiError::DatabaseOff => {
                "This gateway runs without a database (SPARK_DATABASE_URL=none).".into()
            }
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            ApiError::PayloadTooLarge { limit } => Some(json!({ "maxBytes": limit })),
            ApiError::Prompt(Rejection::TooLong { max, actual }) => {
                Some(json!({ "maxChars": max, "actualChars": actual }))
            }
            ApiError::Prompt(Rejection::Blocked {
                categories,
                risk_score,
            }) => Some(json!({ "categories": categories, "riskScore": risk_score })),
            ApiError::RateLimited { retry_after }
            | ApiError::AuthUnavailable { retry_after }
            | ApiError::ProvidersUnavailable { retry_after }
            | ApiError::ProvidersBusy { retry_after } => {
                Some(json!({ "retryAfterMs": retry_after.as_millis() }))
            }
            ApiError::BudgetExceeded(e) => {
                let mut d = json!({
                    "scope": e.scope.as_str(),
                    "limitUsd": crate::store::usd(e.limit_nusd),
                    "spentUsd": crate::store::usd(e.spent_nusd),
                    "resetsAt": e.resets_at.map(crate::store::rfc3339),
                });
                if let Some(tokens) = e.limit_tokens {
                    d["limitTokens"] = tokens.into();
                    d["spentTokens"] = e.spent_tokens.into();
                }
                Some(d)
            }
            ApiError::Upstream(e) => Some(json!({
                "provider": e.provider().as_str(),
                "upstreamStatus": e.status(),
                "kind": e.kind(),
            })),
            ApiError::InvalidRequest(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::UnsupportedMediaType
            | ApiError::RequestTimeout(_)
            | ApiError::Internal(_)
            | ApiError::Overloaded
            | ApiError::UpstreamTimeout(_)
            | ApiError::UnknownId(_)
            | ApiError::ModelNotAllowed
            | ApiError::DatabaseUnavailable(_)
            | ApiError::DatabaseOff => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::AuthUnavailable { retry_after }
            | ApiError::ProvidersUnavailable { retry_after }
            | ApiError::ProvidersBusy { retry_after } => Some(*retry_after),
            ApiError::Overloaded => Some(Duration::from_secs(1)),
            ApiError::DatabaseUnavailable(_) => Some(Duration::from_secs(5)),
            // Until the window ends; an all-time budget never resets, so a day.
            ApiError::BudgetExceeded(e) => Some(Duration::from_millis(
                e.resets_at.map_or(86_400_000, |end| {
                    u64::try_from(end - crate::store::now_ms()).unwrap_or(1_000)
                }),
            )),
            // The provider said when it will take requests again; pass that on.
            ApiError::Upstream(e) => e.retry_after(),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.public_message(),
            details: self.details(),
            cause: self.to_string(),
        }
    }
}

/// Renders the API.md error body. Used by the request-id layer, which knows the id.
pub fn render_body(body: &ErrorBody, request_id: &str) -> Vec<u8> {
    let mut error = json!({
        "code": body.code,
        "message": body.message,
        "requestId": request_id,
    });
    if let (Some(details), Some(obj)) = (&body.details, error.as_object_mut()) {
        obj.insert("details".into(), details.clone());
    }
    serde_json::to_vec(&json!({ "error": error })).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status().into_response();
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: a client that waits exactly this long is not early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(self, ApiError::Unauthorized) {
            // RFC 6750: a 401 names the scheme the client should use.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spark\""),
            );
        }
        resp.extensions_mut().insert(self.body());
        resp
    }
}

impl From<crate::export::ExportError> for ApiError {
    fn from(e: crate::export::ExportError) -> Self {
        match e {
            crate::export::ExportError::Invalid(m) => ApiError::InvalidRequest(m),
            crate::export::ExportError::Archive(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound => ApiError::UnknownId("record"),
            StoreError::Url(m) | StoreError::Unavailable(m) | StoreError::Migrate(m) => {
                ApiError::DatabaseUnavailable(m)
            }
            StoreError::Corrupt(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::auth::issue::IssueError> for ApiError {
    fn from(e: crate::auth::issue::IssueError) -> Self {
        use crate::auth::issue::IssueError;
        match e {
            IssueError::Invalid(m) => ApiError::InvalidRequest(m),
            IssueError::NotFound => ApiError::UnknownId("key"),
            IssueError::Store(e) => e.into(),
        }
    }
}

impl From<GenerateError> for ApiError {
    fn from(e: GenerateError) -> Self {
        match e {
            GenerateError::Invalid(m) => ApiError::InvalidRequest(m),
            GenerateError::Rejected(r) => ApiError::Prompt(r),
            GenerateError::Provider(p) => ApiError::Upstream(p),
            GenerateError::Deadline(d) => ApiError::UpstreamTimeout(d),
            GenerateError::Unavailable(retry_after) => {
                ApiError::ProvidersUnavailable { retry_after }
            }
            GenerateError::Busy(retry_after) => ApiError::ProvidersBusy { retry_after },
            GenerateError::BudgetExceeded(e) => ApiError::BudgetExceeded(e),
            GenerateError::LedgerUnavailable(why) => ApiError::DatabaseUnavailable(why),
            GenerateError::ModelNotAllowed => ApiError::ModelNotAllowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderId;

    #[test]
    fn upstream_errors_keep_no_upstream_text() {
        let e = ApiError::Upstream(ProviderError::Status {
            provider: ProviderId::Anthropic,
            status: 529,
            kind: "overloaded_error".into(),
            retry_after: None,
        });
        let body = e.body();
        assert_eq!(body.code, "upstream_error");
        let rendered = String::from_utf8(render_body(&body, "req-1")).unwrap();
        let v: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(v["error"]["requestId"], "req-1");
        assert_eq!(v["error"]["details"]["upstreamStatus"], 529);
        assert!(v["error"].get("cause").is_none());
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let resp = ApiError::RateLimited {
            retry_after: Duration::from_millis(1200),
        }
        .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }
}
