//! End-to-end: who may pick a version. Overrides need the configured token and a
//! trusted source address; the token never reaches the upstream.

mod harness;

use harness::{Envoy, EnvoyOptions};

const TOKEN_CONFIG: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 0 } ],
  "override": { "header": "x-canary", "cookie": "canary",
                "token": { "header": "x-canary-token",
                           "values": [ "s3cret-current-0001", "s3cret-next-00002" ] } },
  "anonymous": "baseline"
}"#;

#[test]
fn overrides_need_the_token_and_the_token_never_reaches_the_upstream() {
    let envoy = Envoy::start(EnvoyOptions {
        echo_request_headers: vec!["x-canary-token".into(), "x-canary-version".into()],
        ..EnvoyOptions::with_config(TOKEN_CONFIG)
    });
    let mut client = envoy.client();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("x-canary", "canary")], "stable"),
        (vec![("cookie", "canary=canary")], "stable"),
        (
            vec![
                ("x-canary", "canary"),
                ("x-canary-token", "s3cret-current-000"),
            ],
            "stable",
        ),
        (
            vec![
                ("x-canary", "canary"),
                ("x-canary-token", "S3CRET-CURRENT-0001"),
            ],
            "stable",
        ),
        (
            vec![("x-canary", "canary"), ("x-canary-token", "")],
            "stable",
        ),
        (
            vec![
                ("x-canary", "canary"),
                ("x-canary-token", "s3cret-current-0001"),
            ],
            "canary",
        ),
        (
            vec![
                ("cookie", "canary=canary"),
                ("x-canary-token", "s3cret-next-00002"),
            ],
            "canary",
        ),
    ];
    for (headers, expected) in &cases {
        let r = client.get_with(headers);
        assert_eq!(r.status, 200);
        assert_eq!(r.served_by(), *expected, "{headers:?}");
        // The upstream saw the route header the filter set, and no token.
        assert_eq!(
            r.header("x-echo-x-canary-version"),
            Some(expected.as_bytes()),
            "{headers:?}"
        );
        assert_eq!(
            r.header("x-echo-x-canary-token").unwrap_or_default(),
            b"",
            "{headers:?}"
        );
    }
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "override")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "baseline")]
        ),
        5.0
    );
    let log = envoy.log();
    assert!(
        !log.contains("s3cret"),
        "the token appears in the log:\n{log}"
    );
}

#[test]
fn overrides_count_only_from_trusted_sources() {
    let config = |sources: &str| {
        format!(
            r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":0}}],
                "override":{{"header":"x-canary","trusted_sources":{sources}}},"anonymous":"baseline"}}"#
        )
    };
    // The tests connect from 127.0.0.1.
    let trusted = Envoy::start(EnvoyOptions::with_config(config(r#"["127.0.0.0/8"]"#)));
    let untrusted = Envoy::start(EnvoyOptions::with_config(config(r#"["10.0.0.0/8","::1"]"#)));
    for _ in 0..20 {
        assert_eq!(
            trusted
                .client()
                .get_with(&[("x-canary", "canary")])
                .served_by(),
            "canary"
        );
        assert_eq!(
            untrusted
                .client()
                .get_with(&[("x-canary", "canary")])
                .served_by(),
            "stable"
        );
    }
}
