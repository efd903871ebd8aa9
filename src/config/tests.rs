//! Reading, validation and printing of the configuration.

use super::*;

fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_give_a_loopback_simulator_gateway_with_auth_off() {
    let c = Config::from_source(&src(&[])).unwrap();
    assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(c.provider_order, vec![ProviderId::Simulator]);
    assert!(!c.auth_enabled());
    assert_eq!(c.sanitizer.max_chars, 10_000);
    assert_eq!(c.generate_body_limit, 64 * 1024);
    assert_eq!(c.request_deadline, Duration::from_secs(30));
}

#[test]
fn every_problem_is_reported_together_and_names_its_variable() {
    let err = Config::from_source(&src(&[
        ("SPARK_BIND", "nonsense"),
        ("SPARK_UPSTREAM_TIMEOUT", "20 parsecs"),
        ("SPARK_PROVIDER_ORDER", "anthropic,mistral"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("SPARK_BIND"), "{text}");
    assert!(text.contains("SPARK_UPSTREAM_TIMEOUT"), "{text}");
    assert!(text.contains("ANTHROPIC_API_KEY is not set"), "{text}");
    assert!(text.contains("\"mistral\""), "{text}");
    assert!(text.contains("must name at least one provider"), "{text}");
    assert_eq!(err.problems.len(), 5);
}

#[test]
fn public_bind_without_keys_refuses_to_start() {
    let err = Config::from_source(&src(&[("SPARK_BIND", "0.0.0.0:8080")])).unwrap_err();
    assert!(err.to_string().contains("authentication off"));
    let ok = Config::from_source(&src(&[
        ("SPARK_BIND", "0.0.0.0:8080"),
        ("SPARK_MASTER_API_KEY", "master-key-0123456789"),
    ]));
    assert!(ok.is_ok());
}

#[test]
fn malformed_user_key_is_reported_without_echoing_it() {
    let err =
        Config::from_source(&src(&[("SPARK_API_KEYS", "not-a-user-key-SECRETVALUE")])).unwrap_err();
    assert!(err.to_string().contains("SPARK_API_KEYS"));
    assert!(!err.to_string().contains("SECRETVALUE"));
}

#[test]
fn provider_keys_set_the_default_order_and_never_print() {
    let c = Config::from_source(&src(&[
        ("ANTHROPIC_API_KEY", "sk-ant-very-secret"),
        ("OPENAI_API_KEY", "sk-openai-very-secret"),
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
    ]))
    .unwrap();
    assert_eq!(
        c.provider_order,
        vec![ProviderId::Anthropic, ProviderId::OpenAi]
    );
    assert_eq!(c.anthropic.as_ref().unwrap().base_url, "http://127.0.0.1:9");
    let printed = format!("{:?} {:?}", c.redacted(), c);
    assert!(!printed.contains("very-secret"), "{printed}");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn every_duration_is_bounded_so_none_can_overflow_an_instant() {
    let err = Config::from_source(&src(&[
        ("SPARK_UPSTREAM_TIMEOUT", "9999999999h"),
        ("SPARK_REQUEST_DEADLINE", "25h"),
        ("SPARK_BREAKER_OPEN_MAX", "9999999999h"),
        ("SPARK_CACHE_TTL", "721h"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    for var in [
        "SPARK_UPSTREAM_TIMEOUT",
        "SPARK_REQUEST_DEADLINE",
        "SPARK_BREAKER_OPEN_MAX",
        "SPARK_CACHE_TTL",
    ] {
        assert!(text.contains(var), "{var}: {text}");
    }
    assert!(
        Config::from_source(&src(&[
            ("SPARK_REQUEST_DEADLINE", "24h"),
            ("SPARK_CACHE_TTL", "720h")
        ]))
        .is_ok()
    );
}

#[test]
fn plain_http_upstreams_are_refused_unless_loopback_or_allowed() {
    let with = |url: &str, allow: &str| {
        Config::from_source(&src(&[
            ("ANTHROPIC_API_KEY", "sk-ant-x"),
            ("ANTHROPIC_BASE_URL", url),
            ("SPARK_ALLOW_INSECURE_UPSTREAM", allow),
        ]))
    };
    assert!(with("http://api.example.com", "").is_err());
    assert!(with("http://10.0.0.5:8000", "").is_err());
    assert!(with("http://api.example.com", "true").is_ok());
    assert!(with("https://api.example.com", "").is_ok());
    for loopback in [
        "http://127.0.0.1:9",
        "http://localhost:8080/",
        "http://[::1]:9",
    ] {
        assert!(with(loopback, "").is_ok(), "{loopback}");
    }
}

#[test]
fn cors_origins_must_be_bare_origins() {
    assert!(
        Config::from_source(&src(&[(
            "SPARK_CORS_ORIGINS",
            "https://editor.example.com, http://localhost:3000"
        )]))
        .is_ok()
    );
    for bad in ["*", "https://a.example.com/path", "editor.example.com"] {
        assert!(
            Config::from_source(&src(&[("SPARK_CORS_ORIGINS", bad)])).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn every_declared_variable_is_read_and_printed_once() {
    let c = Config::from_source(&src(&[])).unwrap();
    let printed: Vec<&str> = c.redacted().iter().map(|(n, _)| *n).collect();
    for var in VARS {
        assert_eq!(
            printed.iter().filter(|n| **n == var.name).count(),
            1,
            "{} is declared but not read exactly once",
            var.name
        );
    }
    assert_eq!(printed.len(), VARS.len() + 1, "only AUTH is derived");
}

#[test]
fn every_default_is_valid_for_its_kind() {
    for var in VARS {
        if let Some(default) = var.default {
            let c = Config::from_source(&src(&[(var.name, default)]));
            assert!(c.is_ok(), "{}={default}: {:?}", var.name, c.err());
        }
    }
}

#[test]
fn the_readme_documents_exactly_the_declared_variables() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap_or("");
        for name in first_cell.split('`').skip(1).step_by(2) {
            documented.insert(name.to_owned());
        }
    }
    let declared: std::collections::BTreeSet<String> =
        VARS.iter().map(|v| v.name.to_owned()).collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&declared).collect();
    assert!(missing.is_empty(), "read but not in README: {missing:?}");
    assert!(unknown.is_empty(), "in README but not read: {unknown:?}");
}

#[test]
fn an_undeclared_read_is_a_problem_not_a_panic() {
    let empty = src(&[]);
    let mut r = Reader::new(&empty);
    assert_eq!(r.text("SPARK_NOT_A_VARIABLE"), None);
    assert_eq!(r.problems.len(), 1);
}

#[test]
fn trace_export_is_off_until_an_endpoint_is_set_and_then_reads_the_standard_variables() {
    assert!(Config::from_source(&src(&[])).unwrap().trace.is_none());
    let c = Config::from_source(&src(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=abc%3D%3D"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ("SPARK_OTEL_TRUST_CLIENT_CONTEXT", "false"),
    ]))
    .unwrap();
    let t = c.trace.as_ref().unwrap();
    assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.headers, vec![("x-honeycomb-team".into(), "abc==".into())]);
    assert_eq!(
        t.sampler,
        crate::telemetry::trace::SamplerChoice::ParentRatio(0.1)
    );
    assert_eq!(t.delay, Duration::from_millis(250));
    assert_eq!((t.max_queue, t.max_batch), (2048, 512));
    assert!(!t.trust_client_context);
    // The collector's credentials are a secret: check-config and Debug hide them.
    assert!(
        c.redacted()
            .contains(&("OTEL_EXPORTER_OTLP_HEADERS", "<redacted>".to_owned()))
    );
    assert!(!format!("{t:?}").contains("abc"));
}

#[test]
fn a_bad_trace_setting_is_a_problem_not_a_silent_default() {
    let err = Config::from_source(&src(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "tokenwithoutname"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    assert!(!text.contains("tokenwithoutname"), "{text}");
    assert_eq!(err.problems.len(), 5, "{text}");
}

#[test]
fn provider_limits_are_parsed_and_a_model_outside_the_allow_list_is_a_problem() {
    let c = Config::from_source(&src(&[
        ("OPENAI_API_KEY", "sk-test"),
        (
            "SPARK_PROVIDER_LIMITS",
            "openai:gpt-4.1=500rpm,64inflight;anthropic=50inflight",
        ),
        ("SPARK_BATCH_USERS", "ci-bot, nightly"),
    ]))
    .unwrap();
    assert_eq!(c.provider_limits.len(), 2);
    assert_eq!(c.queue_timeout, Duration::from_secs(5));
    assert_eq!(c.queue_max, 1000);
    assert_eq!(c.batch_users, ["ci-bot", "nightly"]);
    let err = Config::from_source(&src(&[
        ("OPENAI_API_KEY", "sk-test"),
        ("SPARK_PROVIDER_LIMITS", "openai:gpt-5-typo=5rpm"),
    ]))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"gpt-5-typo\" is not in openai's model allow-list"),
        "{err}"
    );
    let err = Config::from_source(&src(&[("SPARK_PROVIDER_LIMITS", "openai=5rps")])).unwrap_err();
    assert!(err.to_string().contains("SPARK_PROVIDER_LIMITS"), "{err}");
}

#[test]
fn an_issuers_file_turns_auth_on_and_every_problem_in_it_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("spark-issuers-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("issuers.toml");
    std::fs::write(
        &good,
        "[[issuer]]\nissuer = \"https://lms.example.edu\"\naudiences = [\"spark\"]\n\
         hs256_secret_env = \"LMS_SSO_SECRET\"\n",
    )
    .unwrap();
    let good = good.to_str().unwrap();
    // Issuers alone are authentication: a public bind is allowed.
    let c = Config::from_source(&src(&[
        ("SPARK_BIND", "0.0.0.0:8080"),
        ("SPARK_AUTH_ISSUERS_FILE", good),
        ("LMS_SSO_SECRET", "a-shared-secret-of-at-least-32-bytes!"),
    ]))
    .unwrap();
    assert!(c.auth_enabled());
    assert_eq!(c.auth_issuers.len(), 1);
    // The named secret is not a configuration variable: check-config never prints it.
    assert!(
        !c.redacted()
            .iter()
            .any(|(_, v)| v.contains("a-shared-secret"))
    );

    // A missing secret, a missing file and a broken file are each named problems, and the
    // secret's value never appears in one.
    let err = Config::from_source(&src(&[("SPARK_AUTH_ISSUERS_FILE", good)])).unwrap_err();
    assert!(err.to_string().contains("LMS_SSO_SECRET"), "{err}");
    let err = Config::from_source(&src(&[(
        "SPARK_AUTH_ISSUERS_FILE",
        dir.join("absent.toml").to_str().unwrap(),
    )]))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("SPARK_AUTH_ISSUERS_FILE: cannot read"),
        "{err}"
    );
    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        r#"{"issuer": [{"issuer": "http://idp.example.com"}]}"#,
    )
    .unwrap();
    let err = Config::from_source(&src(&[
        ("SPARK_AUTH_ISSUERS_FILE", broken.to_str().unwrap()),
        ("SPARK_BIND", "0.0.0.0:8080"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("SPARK_AUTH_ISSUERS_FILE"), "{text}");
    // A broken issuers file does not count as authentication either.
    assert!(text.contains("authentication off"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_kubernetes_issuers_example_is_a_valid_issuers_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/components/sso/issuers.toml"
    );
    let c = Config::from_source(&src(&[
        ("SPARK_AUTH_ISSUERS_FILE", path),
        ("LMS_SSO_SECRET", "a-shared-secret-of-at-least-32-bytes!"),
    ]))
    .unwrap();
    assert_eq!(c.auth_issuers.len(), 2);
    assert_eq!(c.auth_issuers[0].tiers.len(), 1);
}
