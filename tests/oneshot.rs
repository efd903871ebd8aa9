//! The router in process with `oneshot`: status codes, error bodies and headers, without a
//! socket. The fast level for what a handler or layer decides on its own; behaviour a client sees
//! over a connection (streams, keep-alive, shutdown) is tested in `tests/api/` and `binary.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use spark_gateway::config::Config;
use tower::ServiceExt;

const MASTER: &str = "master-oneshot-key-0123456789";
const USER: &str = "user-ann-annsecret0123456789abcdef";

fn app(extra: &[(&str, &str)]) -> Router {
    let mut env: BTreeMap<String, String> = [
        ("SPARK_MASTER_API_KEY", MASTER),
        ("SPARK_API_KEYS", USER),
        ("SPARK_RATE_LIMIT_GENERATE", "2/min"),
        // Stateless: the database routes answer that there is none.
        ("SPARK_DATABASE_URL", "none"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Config::from_source(&env).unwrap();
    spark_gateway::app(spark_gateway::build_state(config).unwrap())
}

fn request(method: &str, uri: &str, key: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        b = b.header("x-api-key", key);
    }
    let mut req = b.body(Body::from(body.to_owned())).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn assert_common_headers(h: &axum::http::HeaderMap) {
    assert!(h.contains_key("x-request-id"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
}

#[tokio::test]
async fn errors_have_the_contract_status_code_and_headers() {
    let app = app(&[]);
    let generate = r#"{"prompt":"a door","provider":"simulator"}"#;
    let cases: [(Request<Body>, StatusCode, &str); 6] = [
        (
            request("GET", "/nope", None, ""),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            request("DELETE", "/api/spark/generate", Some(USER), ""),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            request("POST", "/api/spark/generate", None, generate),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            request("POST", "/api/admin/cache/purge", Some(USER), ""),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            request("POST", "/api/spark/generate", Some(USER), "{"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            request(
                "POST",
                "/api/spark/generate",
                Some(USER),
                &format!(r#"{{"prompt":"{}"}}"#, "x".repeat(70 * 1024)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let (got, headers, body) = send(&app, req).await;
        assert_eq!(got, status, "{code}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(
            body["error"]["requestId"].as_str(),
            headers["x-request-id"].to_str().ok()
        );
        assert_common_headers(&headers);
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(headers["www-authenticate"], "Bearer realm=\"spark\"");
        }
    }
}

#[tokio::test]
async fn a_rate_limited_route_counts_down_and_refuses_with_retry_after() {
    let app = app(&[]);
    let body = r#"{"prompt":"a door","provider":"simulator"}"#;
    for remaining in ["1", "0"] {
        let (status, h, _) = send(
            &app,
            request("POST", "/api/spark/generate", Some(USER), body),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["x-ratelimit-limit"], "2");
        assert_eq!(h["x-ratelimit-remaining"], remaining);
        assert!(h.contains_key("x-cache"));
    }
    let (status, h, body) = send(
        &app,
        request("POST", "/api/spark/generate", Some(USER), body),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(h["retry-after"], "30");
    // The master key is exempt: no budget, no headers.
    let (status, h, _) = send(
        &app,
        request(
            "POST",
            "/api/spark/generate",
            Some(MASTER),
            r#"{"prompt":"a door","provider":"simulator"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!h.contains_key("x-ratelimit-limit"));
}

#[tokio::test]
async fn a_request_id_is_echoed_only_when_safe() {
    let app = app(&[]);
    let mut req = request("GET", "/livez", None, "");
    req.headers_mut()
        .insert("x-request-id", "client-id_1.2:3".parse().unwrap());
    let (_, h, _) = send(&app, req).await;
    assert_eq!(h["x-request-id"], "client-id_1.2:3");
    let mut req = request("GET", "/livez", None, "");
    req.headers_mut()
        .insert("x-request-id", "has space".parse().unwrap());
    let (_, h, _) = send(&app, req).await;
    assert_ne!(h["x-request-id"], "has space");
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_ever_sent() {
    let app = app(&[]);
    let mut req = request("OPTIONS", "/api/spark/generate", None, "");
    req.headers_mut()
        .insert("origin", "https://editor.example.com".parse().unwrap());
    req.headers_mut()
        .insert("access-control-request-method", "POST".parse().unwrap());
    let (status, h, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!h.contains_key("access-control-allow-origin"));
}

/// With `SPARK_DATABASE_URL=none` the database routes say so, and generation works without it.
#[tokio::test]
async fn without_a_database_its_routes_answer_501_and_generation_works() {
    let app = app(&[]);
    for (method, path) in [
        ("GET", "/api/admin/keys"),
        ("GET", "/api/admin/audit"),
        ("GET", "/api/usage"),
    ] {
        let (status, _, body) = send(&app, request(method, path, Some(MASTER), "")).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert_eq!(body["error"]["code"], "database_off");
    }
    let (status, _, _) = send(
        &app,
        request(
            "POST",
            "/api/spark/generate",
            Some(USER),
            r#"{"prompt":"a door"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Issue 16, finding 12: the OpenAPI document covers every route and both auth schemes.
#[tokio::test]
async fn the_openapi_document_covers_every_route_and_both_auth_schemes() {
    let app = app(&[]);
    let (status, headers, doc) = send(&app, request("GET", "/api/openapi.json", None, "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/spark/generate", "post"),
        ("/api/export", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/api/spark/health", "get"),
        ("/livez", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/metrics", "get"),
        ("/api/admin/cache/purge", "post"),
        ("/api/admin/errors", "get"),
        ("/api/admin/breakers/{provider}/reset", "post"),
        ("/api/admin/keys", "post"),
        ("/api/admin/keys", "get"),
        ("/api/admin/keys/{id}", "patch"),
        ("/api/admin/keys/{id}", "delete"),
        ("/api/admin/audit", "get"),
        ("/api/admin/audit/verify", "get"),
        ("/api/admin/summary", "get"),
        ("/console", "get"),
        ("/api/usage", "get"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"]["name"], "X-API-Key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    // The request body is the handler's own type: its fields are the API's.
    let generate = &doc["components"]["schemas"]["GenerateParams"]["properties"];
    for field in [
        "prompt",
        "engine",
        "provider",
        "model",
        "maxTokens",
        "temperature",
        "stream",
    ] {
        assert!(generate[field].is_object(), "{field} missing: {generate}");
    }
    assert!(generate["system"].is_null(), "not a field of the Spark API");
}
