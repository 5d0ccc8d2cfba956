//! The reader's errors: the error type, serde_json's messages, and serde's way of
//! listing names. The reader places each error (cursor.rs) and renders it as
//! serde_json displayed it; the tests here compare the whole reader's errors, field
//! and message, with serde_json's and serde_path_to_error's.

/// A config the reader refused: the field and the message, with the position.
#[derive(Debug)]
pub(crate) struct JsonError {
    /// serde_path_to_error's rendering: `a.b[2].c`, `?` for a key not yet read.
    pub field: String,
    pub message: String,
    /// Byte offset the message's ` at line L column C` points at. `None` while
    /// the reader has not placed it yet: like serde_json, errors about a value as
    /// a whole (a missing field, an unknown key) get the position reached once
    /// its container has been closed.
    pub(super) at: Option<usize>,
}

pub(crate) type Result<T> = std::result::Result<T, JsonError>;

pub(super) const EOF_VALUE: &str = "EOF while parsing a value";
pub(super) const EOF_LIST: &str = "EOF while parsing a list";
pub(super) const EOF_OBJECT: &str = "EOF while parsing an object";
pub(super) const EOF_STRING: &str = "EOF while parsing a string";
pub(super) const INVALID_NUMBER: &str = "invalid number";
pub(super) const INVALID_ESCAPE: &str = "invalid escape";
pub(super) const EXPECTED_VALUE: &str = "expected value";
pub(super) const TRAILING_COMMA: &str = "trailing comma";
pub(super) const TRAILING_CHARACTERS: &str = "trailing characters";
pub(super) const KEY_MUST_BE_A_STRING: &str = "key must be a string";

/// serde's list of names: `a`, `a` or `b`, one of `a`, `b`, `c`.
pub(super) fn one_of(names: &[&str]) -> String {
    match names {
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => {
            let mut out = String::from("one of ");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('`');
                out.push_str(name);
                out.push('`');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rng;

    /// What `Config::from_json` reports for `json`: its one error.
    #[inline(never)]
    fn ours(json: &str) -> (String, String) {
        match crate::config::Config::from_json(json.as_bytes()) {
            Err(errors) if errors.len() == 1 => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{json}: expected one parse error, got {other:?}"),
        }
    }

    /// Where the reader differs from serde on purpose, it says what it says here.
    #[test]
    #[inline(never)]
    fn documented_differences_from_serde() {
        // A duplicate key names that key.
        assert_eq!(
            ours(r#"{"versions":[{"name":"s"}],"hash":{"header":"u","header":"v"}}"#),
            (
                "hash.header".to_string(),
                "duplicate field `header` at line 1 column 56".to_string()
            )
        );
    }

    #[test]
    #[inline(never)]
    fn syntax_and_type_errors_read_as_serde_json_wrote_them() {
        for json in [
            r#"{"versions":[{"name":"s"},]}"#,
            r#"{"versions":[{"name":"s"}"#,
            r#"{"versions":[{"name":"s""#,
            r#"{"hash":{"header":"u" "cookie":"c"}}"#,
            r#"{"versions" 1}"#,
            r#"{"versions":}"#,
            r#"{"#,
            r#"{"versions":[{"name":"s"}]} x"#,
            r#"{"versions":1x}"#,
            r#"{"hash":{"buckets":01}}"#,
            r#"{"metrics":{"latency":tru}}"#,
            r#"{"metrics":{"latency":nul}}"#,
            r#"{"versions":[{"name":"s"}]"#,
            r#"{"hash":{"header":"#,
            r#"{"hash":{"header":"\x"}}"#,
            r#"{"hash":{"header":"\ud800"}}"#,
            r#"{"hash":{"header":"\udc00"}}"#,
            r#"{"hash":{"header":"\ud800\u0041"}}"#,
            r#"{"hash":{"header":"\ud83d\ude00"},"versions":7}"#,
            r#"{"hash":{"header":"\u00zz"}}"#,
            "{\"hash\":{\"header\":\"a\tb\"}}",
            r#"{"hash":{"buckets":1e400}}"#,
            r#"{"hash":{"buckets":1e-400},"versions":[]}"#,
            r#"{"hash":{"buckets":1.}}"#,
            r#"{"hash":{"buckets":1.e3}}"#,
            r#"{"hash":{"buckets":-}}"#,
            r#"{"hash":{"buckets":1e}}"#,
            r#"{"hash":{"buckets":1e+}}"#,
            r#"{"hash":{"buckets":99999999999999999999999}}"#,
            r#"{"hash":{"buckets":4294967296}}"#,
            r#"{"hash":{"buckets":-3}}"#,
            r#"{"hash":{"buckets":2.5}}"#,
            r#"{"hash":{"pick_total":-0}}"#,
            r#"{"hash":{"pick_total":1e3}}"#,
            r#"{"hash":["u","c","s",100,null,"x"]}"#,
            r#"{"hash":["u","c"]}"#,
            r#"{"hash":["u",null,null,null,null,null,7],"versions":7}"#,
            r#"{"hash":["u",null,null,null,null,null,]}"#,
            r#"{"hash":{"header":1.0e1}}"#,
            r#"{"hash":{"header":123456789.125}}"#,
            r#"{"hash":{"header":0.00001}}"#,
            r#"{"hash":{"header":1e16}}"#,
            r#"{"hash":{"header":1e-6}}"#,
            r#"{"anonymous":"sticky"}"#,
            r#"{"anonymous":7}"#,
            r#"{"anonymous":{"random":null},"versions":7}"#,
            r#"{"anonymous":{"random":1}}"#,
            r#"{"anonymous":{"random":null,"x":1}}"#,
            r#"{"anonymous":{}}"#,
            r#"{"users":{"a":["x"],"a":[1]}}"#,
            r#"{"users":[]}"#,
            r#"{"versions":[{"name":"s","weight":"10"}]}"#,
            r#"{"versions":[{"weight":10}]}"#,
            r#"{"guard":{"version":"c"},"versions":[{"name":"s"}]}"#,
            r#"{"overide":{}}"#,
            r#"{"metrics":{"x":1}}"#,
            "{\n  \"versions\": [\n    {\"name\": \"s\"},\n    {\"name\": \"c\", \"weight\": true}\n  ]\n}",
            "{\"hash\":{\"header\":\"caf\u{e9}\u{1F600}\"},\"versions\":1}",
            r#"{"rollouts":{}}"#,
            r#"{"rollouts":[{"match":7}]}"#,
            r#"{"rollouts":[{"name":"a","versions":[]},]}"#,
            r#"{"rollouts":[{"name":"a","versions":[],"match":{"headers":[{"name":"x","present":"no"}]}}]}"#,
            r#"{"rollouts":[{"name":"a","versions":[],"match":{"headers":[{"exact":"x"}]}}]}"#,
            r#"{"rollouts":[{"name":"a","versions":[],"match":{"path_prefixes":"/"}}]}"#,
            r#"{"rollouts":[{"name":"a","versions":[],"anonymous":"sticky"}]}"#,
            r#"{"rollouts":[{"name":"a"}]}"#,
        ] {
            let expected = reference(json.as_bytes()).expect("an error");
            assert_eq!(ours(json), expected, "{json}");
        }
    }

    #[test]
    #[inline(never)]
    fn invalid_utf8_is_refused_where_serde_json_refused_it() {
        let json = b"{\"hash\":{\"header\":\"a\xff\"}}";
        let found = match crate::config::Config::from_json(json) {
            Err(errors) => (errors[0].field.clone(), errors[0].message.clone()),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(found, reference(json).expect("an error"));
    }

    /// Every object and array in `v`, as JSON pointers.
    #[inline(never)]
    fn containers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                out.push(at.clone());
                for (k, child) in m {
                    containers(child, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                out.push(at.clone());
                for (i, child) in a.iter().enumerate() {
                    containers(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// The field and message the filter reported before this module existed:
    /// serde_path_to_error over serde_json, with `.` and `?` naming no field.
    #[inline(never)]
    fn reference(bytes: &[u8]) -> Option<(String, String)> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, crate::config::RawConfig>(&mut de) {
            Err(err) => {
                let path = err.path().to_string();
                let field = if path == "." || path == "?" {
                    String::new()
                } else {
                    path
                };
                Some((field, err.inner().to_string()))
            }
            Ok(_) => de.end().err().map(|e| (String::new(), e.to_string())),
        }
    }

    const BASES: &[&str] = &[
        r#"{"route_header":"x-v","versions":[{"name":"stable"},{"name":"canary","weight":10},{"name":"c2","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"10m","weight":5}],"interpolate":false}}],"override":{"header":"x-canary","cookie":"canary","token":{"header":"x-t","values":["0123456789abcdef"]},"trusted_sources":["10.0.0.0/8"]},"users":{"canary":["qa-alice","qa-bob"],"stable":["carol"]},"hash":{"header":"x-user-id","cookie":"uid","salt":"s","buckets":10000,"cookie_attributes":{"max_age":"30d","path":"/","domain":"example.com","same_site":"Strict","secure":true,"http_only":false}},"anonymous":"cookie","metrics_prefix":"canary","metrics":{"latency":true,"responses":false},"guard":{"version":"canary","max_error_rate":0.05,"baseline_margin":0.02,"min_requests":50,"window":"30s","status":["5xx",429],"hold":"10m"}}"#,
        r#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"hash":{"header":"x-user-id"}}"#,
        r#"{"metrics_prefix":"shop","metrics":{"responses":true},"rollouts":[{"name":"a","match":{"hosts":["a.example","*.b.example"],"path_prefixes":["/api/v2/","/v2/"],"headers":[{"name":"x-client","exact":"ios"},{"name":"x-debug","present":false},{"name":"x-v","prefix":"7."},{"name":"x-t","suffix":"-internal"}]},"route_header":"x-a","versions":[{"name":"stable"},{"name":"canary","weight":10}],"override":{"header":"x-canary"},"users":{"canary":["qa"]},"hash":{"header":"x-user-id","salt":"a"},"anonymous":"baseline","guard":{"version":"canary","max_error_rate":0.1}},{"name":"b","versions":[{"name":"v1"}]}]}"#,
    ];

    /// Type errors, unknown and missing keys, truncations and stray bytes in
    /// config-shaped JSON: the field named is serde_path_to_error's, the message
    /// serde_json's, wherever the error is.
    #[test]
    #[inline(never)]
    fn every_parse_error_names_the_field_serde_path_to_error_named() {
        let replacements = [
            "null",
            "true",
            "false",
            "7",
            "-1",
            "-0",
            "1.5",
            "2.50",
            "1e2",
            "1E-7",
            "0.000001",
            "123456789012345678901",
            "-9223372036854775809",
            "5000000000",
            "\"x\"",
            r#""caf\u00e9 \"q\"""#,
            "[]",
            "[1,\"a\"]",
            "[\"a\",null,true]",
            "{}",
            "{\"zz\":1}",
            "{\"random\":null}",
        ];
        let strays = [
            ",", "]", "}", ":", "x", "\"", "{", "[", "1", "\\", "-", ".", "e", "0", "\t", "n",
            "\\u12", "\u{1}", "\\u00e9",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for case in 0..12000 {
            let base: serde_json::Value =
                serde_json::from_str(BASES[case % BASES.len()]).expect("base");
            let mut value = base.clone();
            let mut spots = Vec::new();
            containers(&value, String::new(), &mut spots);
            let spot = spots[rng.below(spots.len())].clone();
            let pretty = rng.below(2) == 0;
            let mut text = match rng.below(5) {
                // A value of another type (or shape) somewhere.
                0 | 1 => {
                    let new: serde_json::Value =
                        serde_json::from_str(replacements[rng.below(replacements.len())])
                            .expect("replacement");
                    match value.pointer_mut(&spot) {
                        Some(serde_json::Value::Object(m)) if !m.is_empty() => {
                            let key = m.keys().nth(rng.below(m.len())).cloned().expect("key");
                            m.insert(key, new);
                        }
                        Some(serde_json::Value::Array(a)) if !a.is_empty() => {
                            let i = rng.below(a.len());
                            a[i] = new;
                        }
                        _ => {}
                    }
                    String::new()
                }
                // An unknown key, or a missing one.
                2 => {
                    if let Some(serde_json::Value::Object(m)) = value.pointer_mut(&spot) {
                        if rng.below(2) == 0 {
                            m.insert("zz".into(), serde_json::Value::from(1));
                        } else if !m.is_empty() {
                            let key = m.keys().nth(rng.below(m.len())).cloned().expect("key");
                            m.remove(&key);
                        }
                    }
                    String::new()
                }
                // Cut short, or a stray byte: syntax and end-of-input errors.
                kind => {
                    let full = if pretty {
                        serde_json::to_string_pretty(&value).expect("json")
                    } else {
                        value.to_string()
                    };
                    let at = 1 + rng.below(full.len() - 1);
                    if kind == 3 {
                        full[..at].to_string()
                    } else {
                        let stray = strays[rng.below(strays.len())];
                        format!("{}{stray}{}", &full[..at], &full[at..])
                    }
                }
            };
            if text.is_empty() {
                text = if pretty {
                    serde_json::to_string_pretty(&value).expect("json")
                } else {
                    value.to_string()
                };
            }
            let Some((field, message)) = reference(text.as_bytes()) else {
                continue;
            };
            let found = match crate::config::Config::from_json(text.as_bytes()) {
                Err(errors) if errors.len() == 1 => {
                    (errors[0].field.clone(), errors[0].message.clone())
                }
                other => panic!("{text}: expected one parse error, got {other:?}"),
            };
            assert_eq!(found, (field, message), "{text}");
            compared += 1;
        }
        assert!(compared > 8000, "only {compared} cases had a parse error");
    }
}
