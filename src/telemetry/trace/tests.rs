//! Trace configuration parsing and W3C propagation, with and without the OpenTelemetry layer.
use super::*;

#[test]
fn samplers_parse_as_the_specification_names_them() {
    assert_eq!(
        SamplerChoice::parse("parentbased_traceidratio", Some("0.25")),
        Ok(SamplerChoice::ParentRatio(0.25))
    );
    assert_eq!(
        SamplerChoice::parse("traceidratio", None),
        Ok(SamplerChoice::Ratio(1.0))
    );
    assert_eq!(
        SamplerChoice::parse("always_off", Some("junk")),
        Ok(SamplerChoice::AlwaysOff)
    );
    assert!(SamplerChoice::parse("traceidratio", Some("1.5")).is_err());
    assert!(SamplerChoice::parse("jaeger_remote", None).is_err());
}

#[test]
fn the_traces_endpoint_follows_the_otlp_rules() {
    assert_eq!(traces_endpoint(None, None), Ok(None));
    assert_eq!(
        traces_endpoint(Some("http://collector:4318/"), None),
        Ok(Some("http://collector:4318/v1/traces".into()))
    );
    assert_eq!(
        traces_endpoint(Some("http://a:4318"), Some("https://b/custom")),
        Ok(Some("https://b/custom".into()))
    );
    assert!(traces_endpoint(Some("collector:4318"), None).is_err());
    assert!(traces_endpoint(Some("ftp://collector"), None).is_err());
}

#[test]
fn headers_are_decoded_and_a_bad_pair_is_named_by_position_only() {
    assert_eq!(
        parse_headers("Authorization=Bearer%20abc, x-tenant = t1 ,"),
        Ok(vec![
            ("authorization".into(), "Bearer abc".into()),
            ("x-tenant".into(), "t1".into())
        ])
    );
    let err = parse_headers("a=1,secretvalue-without-equals").unwrap_err();
    assert!(
        err.contains("pair 2") && !err.contains("secretvalue"),
        "{err}"
    );
    assert!(parse_headers("bad name=1").is_err());
    assert!(parse_headers("x=line%0Abreak").is_err());
}

const CLIENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", CLIENT.parse().unwrap());
    h
}

#[test]
fn with_the_layer_a_trusted_context_is_continued_and_an_untrusted_one_only_linked() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let cfg = TraceConfig {
        endpoint: "http://127.0.0.1:9/v1/traces".into(),
        headers: Vec::new(),
        timeout: Duration::from_secs(1),
        service_name: "test".into(),
        sampler: SamplerChoice::ParentAlwaysOn,
        max_queue: 8,
        max_batch: 8,
        delay: Duration::from_secs(1),
        trust_client_context: true,
    };
    let (tracer, _export) = pipeline(&cfg).unwrap();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::with_default(subscriber, || {
        let trusted = tracing::info_span!(parent: None, "request");
        adopt_client_context(&trusted, &client_headers(), true);
        assert_eq!(
            trace_id(&trusted).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        let outgoing =
            trusted.in_scope(|| tracing::info_span!("attempt").in_scope(outgoing_headers));
        let tp = outgoing["traceparent"].to_str().unwrap().to_owned();
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(
            !tp.contains("b7ad6b7169203331"),
            "the attempt's own span id: {tp}"
        );

        let untrusted = tracing::info_span!(parent: None, "request");
        adopt_client_context(&untrusted, &client_headers(), false);
        let own = trace_id(&untrusted).unwrap();
        assert_ne!(own, "0af7651916cd43dd8448eb211c80319c");

        // Garbage is ignored: a trace of its own.
        let mut bad = HeaderMap::new();
        bad.insert("traceparent", "00-zz-yy-01".parse().unwrap());
        let span = tracing::info_span!(parent: None, "request");
        adopt_client_context(&span, &bad, true);
        assert!(trace_id(&span).is_some());
    });
}

#[test]
fn without_the_layer_propagation_and_attributes_are_no_ops() {
    let span = tracing::info_span!("t");
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    adopt_client_context(&span, &h, true);
    set_attribute(&span, "k", 1_i64);
    set_error(&span, "timeout");
    assert_eq!(trace_id(&span), None);
    assert!(outgoing_headers().is_empty());
}
