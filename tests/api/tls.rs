//! Native TLS: HTTPS over HTTP/1.1 and HTTP/2 with a certificate made by the test, HSTS only
//! over TLS, and a certificate rotated in place: new connections get the new one while an open
//! connection keeps working, and a broken file never replaces the certificate in force.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::{TestApp, spawn_app_with};

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn pair() -> Pair {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    Pair {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(format!("spark-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }
    fn cert(&self) -> String {
        self.dir.join("tls.crt").display().to_string()
    }
    fn key(&self) -> String {
        self.dir.join("tls.key").display().to_string()
    }
    fn write(&self, p: &Pair) {
        std::fs::write(self.cert(), &p.cert_pem).unwrap();
        std::fs::write(self.key(), &p.key_pem).unwrap();
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn addr(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A client that trusts only `trust`, reaches the gateway as `localhost`, and reports the
/// certificate each response came over.
fn client(app: &TestApp, trust: &[&Pair], http1: bool) -> reqwest::Client {
    let certs = trust
        .iter()
        .map(|p| reqwest::Certificate::from_pem(p.cert_pem.as_bytes()).unwrap());
    let mut b = reqwest::Client::builder()
        .tls_certs_only(certs)
        .tls_info(true)
        .resolve("localhost", addr(app));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn url(app: &TestApp, path: &str) -> String {
    format!("https://localhost:{}{path}", addr(app).port())
}

fn peer(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn https_on_both_protocols_and_a_rotated_certificate_reaches_new_connections_only() {
    let files = Files::new();
    let first = pair();
    files.write(&first);
    let app = spawn_app_with(&[
        ("SPARK_TLS_CERT", &files.cert()),
        ("SPARK_TLS_KEY", &files.key()),
    ])
    .await;

    let h1 = client(&app, &[&first], true)
        .get(url(&app, "/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(peer(&h1), first.der);
    assert_eq!(
        h1.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );

    let second = pair();
    // Opened before the rotation and kept open (HTTP/2 multiplexes every request on it).
    let open = client(&app, &[&first, &second], false);
    let h2 = open.get(url(&app, "/livez")).send().await.unwrap();
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer(&h2), first.der);

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/livez", addr(&app)))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // A broken file is refused (counted once it has been looked at), and new connections still
    // get the first certificate.
    std::fs::write(files.cert(), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let mut refused = false;
    for _ in 0..50 {
        if https_metrics(&app, &first)
            .await
            .contains("spark_tls_reloads_total{result=\"error\"} 1")
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "the broken file was never looked at");
    let fresh = client(&app, &[&first, &second], true)
        .get(url(&app, "/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        peer(&fresh),
        first.der,
        "a broken file replaced the certificate"
    );

    // The whole new pair: a new connection gets it within a few watch periods.
    files.write(&second);
    let mut rotated = false;
    for _ in 0..50 {
        let resp = client(&app, &[&first, &second], true)
            .get(url(&app, "/livez"))
            .send()
            .await
            .unwrap();
        if peer(&resp) == second.der {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        rotated,
        "the rotated certificate never reached a new connection"
    );

    // The connection opened before the rotation still serves, on its first certificate.
    let again = open.get(url(&app, "/livez")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer(&again), first.der, "the open connection was replaced");
}

/// The metrics page, read over HTTPS (the test app's own client speaks plain HTTP).
async fn https_metrics(app: &TestApp, trust: &Pair) -> String {
    client(app, &[trust], true)
        .get(url(app, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
