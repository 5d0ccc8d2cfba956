//! The JSON path of the field a serde_json error is about, found from the error's
//! line and column by re-reading the config text up to that point.
//!
//! Why not a path-tracking deserializer (serde_path_to_error, which this replaces):
//! it wraps every visitor, map and sequence access of every config type, and those
//! generic wrappers were about 40 KB of the `.wasm` for a path needed only when a
//! config is rejected. This scanner is one small function, whatever the config
//! types, so a field added to a `Raw*` struct costs nothing here.
//!
//! It names the field serde_path_to_error named (`versions[1].weight`,
//! `guard.status[2]`, `overide` for an unknown key, the object itself for a
//! missing field), with `?` for an object key that was not read yet (a syntax
//! error where a key should be), and nothing at the top level; a test compares
//! the two on thousands of damaged configs. The one difference: given an object
//! where an enum (`anonymous`) is expected, it names the key inside the object
//! (`anonymous.zz`), as it does not know the types.

/// The field a serde_json error on `text` is about; empty at the top level.
pub(super) fn field_of_error(text: &[u8], err: &serde_json::Error) -> String {
    let message = err.to_string();
    // Errors raised inside a number or literal that did not end (`01`, `1.x`,
    // `tru!`, or the text ending in `0.`).
    let in_token = [
        "invalid number",
        "expected ident",
        "EOF while parsing a value",
    ]
    .iter()
    .any(|m| message.starts_with(m));
    let kind = match err.classify() {
        serde_json::error::Category::Data => ErrorKind::Data,
        serde_json::error::Category::Eof => ErrorKind::Eof { in_token },
        _ => ErrorKind::Syntax { in_token },
    };
    field_at(text, err.line(), err.column(), kind)
}

/// How the error's position relates to what the parser had read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// A type or value error (serde_json's `Category::Data`): the position is
    /// just after the value (or key) it is about, which may have just ended.
    Data,
    /// A syntax error: the position includes the byte the parser looked at and
    /// refused, which it had not consumed; `in_token` if that byte was refused
    /// inside a number or literal (`invalid number`, `expected ident`).
    Syntax { in_token: bool },
    /// The text ended: the position is its end; `in_token` if inside a number
    /// or literal.
    Eof { in_token: bool },
}

#[derive(Debug)]
enum Frame {
    /// `key` once a key has been read in full; `after_colon` once its value may
    /// start; `value_done` once that value has ended.
    Object {
        key: Option<String>,
        after_colon: bool,
        value_done: bool,
    },
    /// `in_element` while element `index` is being read; `value_done` once it ended.
    Array {
        index: usize,
        in_element: bool,
        value_done: bool,
    },
}

/// The path of the field at `line`/`column` (1-based, in bytes, as serde_json
/// counts) of `text`, rendered like serde_path_to_error; empty at the top level.
fn field_at(text: &[u8], line: usize, column: usize, kind: ErrorKind) -> String {
    if line == 0 {
        return String::new();
    }
    let mut line_start = 0;
    let mut lines_seen = 1;
    for (i, b) in text.iter().enumerate() {
        if lines_seen == line {
            break;
        }
        if *b == b'\n' {
            lines_seen += 1;
            line_start = i + 1;
        }
    }
    let mut end = (line_start + column).min(text.len());
    let mut inside_token = false;
    let mut refused = None;
    match kind {
        ErrorKind::Syntax { in_token } => {
            // The refused byte was only looked at.
            end = end.saturating_sub(1);
            inside_token = in_token;
            refused = text.get(end).copied();
        }
        ErrorKind::Eof { in_token } => inside_token = in_token,
        ErrorKind::Data => {}
    }
    let (frames, just_ended) = scan(&text[..end], inside_token);
    // Where an array element may start, any byte but `]` is read as that element.
    let element_refused = refused.is_some_and(|b| b != b']');
    render(
        &frames,
        kind == ErrorKind::Data,
        element_refused,
        just_ended,
    )
}

/// Reads `text` and returns the open containers, innermost last, and whether the
/// last byte ended a value or an object key (a closing quote, bracket or brace).
/// `inside_token`: the text stops inside a number or literal that the parser
/// refused (`01`, `1.x`, `tru!`), which therefore did not end.
fn scan(text: &[u8], inside_token: bool) -> (Vec<Frame>, bool) {
    let mut frames: Vec<Frame> = Vec::new();
    let mut i = 0;
    let mut just_ended = false;
    while i < text.len() {
        let b = text[i];
        just_ended = false;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'{' | b'[' => {
                value_starts(&mut frames);
                frames.push(if b == b'{' {
                    Frame::Object {
                        key: None,
                        after_colon: false,
                        value_done: false,
                    }
                } else {
                    Frame::Array {
                        index: 0,
                        in_element: false,
                        value_done: false,
                    }
                });
                i += 1;
            }
            b'}' | b']' => {
                frames.pop();
                value_ends(&mut frames);
                just_ended = true;
                i += 1;
            }
            b':' => {
                if let Some(Frame::Object { after_colon, .. }) = frames.last_mut() {
                    *after_colon = true;
                }
                i += 1;
            }
            b',' => {
                match frames.last_mut() {
                    Some(Frame::Object {
                        key,
                        after_colon,
                        value_done,
                    }) => {
                        *key = None;
                        *after_colon = false;
                        *value_done = false;
                    }
                    Some(Frame::Array {
                        index,
                        in_element,
                        value_done,
                    }) => {
                        if *value_done {
                            *index += 1;
                        }
                        *in_element = false;
                        *value_done = false;
                    }
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let (content, closed, next) = read_string(text, i + 1);
                i = next;
                let is_key = matches!(
                    frames.last(),
                    Some(Frame::Object {
                        after_colon: false,
                        ..
                    })
                );
                if is_key {
                    if closed {
                        if let Some(Frame::Object { key, .. }) = frames.last_mut() {
                            *key = Some(content);
                        }
                        just_ended = true;
                    }
                } else {
                    value_starts(&mut frames);
                    if closed {
                        value_ends(&mut frames);
                        just_ended = true;
                    }
                }
            }
            _ => {
                // A number or literal: it ends at the next delimiter, so the value
                // is still being read if the text stops inside it.
                value_starts(&mut frames);
                while i < text.len() && !b" \t\n\r,:]}[{\"".contains(&text[i]) {
                    i += 1;
                }
                // At the end of the text the token ended there, unless the error
                // is inside it.
                if i < text.len() || !inside_token {
                    value_ends(&mut frames);
                    just_ended = true;
                }
            }
        }
    }
    (frames, just_ended)
}

/// The string starting at `start` (after its opening quote), unescaped enough to
/// name a key: whether it closed, and where reading continues.
fn read_string(text: &[u8], start: usize) -> (String, bool, usize) {
    let mut bytes = Vec::new();
    let mut i = start;
    while i < text.len() {
        match text[i] {
            b'"' => return (String::from_utf8_lossy(&bytes).into_owned(), true, i + 1),
            b'\\' if i + 1 < text.len() => {
                let escaped = text[i + 1];
                i += 2;
                match escaped {
                    b'u' => {
                        let hex = text.get(i..i + 4).and_then(|h| std::str::from_utf8(h).ok());
                        let unit = hex.and_then(|h| u32::from_str_radix(h, 16).ok());
                        let c = unit.and_then(char::from_u32).unwrap_or('\u{fffd}');
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 4;
                    }
                    b'n' => bytes.push(b'\n'),
                    b't' => bytes.push(b'\t'),
                    b'r' => bytes.push(b'\r'),
                    b'b' => bytes.push(8),
                    b'f' => bytes.push(12),
                    other => bytes.push(other),
                }
            }
            other => {
                bytes.push(other);
                i += 1;
            }
        }
    }
    (
        String::from_utf8_lossy(&bytes).into_owned(),
        false,
        text.len(),
    )
}

fn value_starts(frames: &mut [Frame]) {
    if let Some(Frame::Array { in_element, .. }) = frames.last_mut() {
        *in_element = true;
    }
}

fn value_ends(frames: &mut [Frame]) {
    match frames.last_mut() {
        Some(Frame::Object { value_done, .. } | Frame::Array { value_done, .. }) => {
            *value_done = true;
        }
        None => {}
    }
}

/// The path as serde_path_to_error rendered it: `a.b[2].c`; `?` for a key not yet
/// read. `data`: a type or value error, about the value that `just_ended` or, in
/// an array, is about to start. `element_refused`: a syntax error on a byte that
/// an array reads as the start of its next element.
fn render(frames: &[Frame], data: bool, element_refused: bool, just_ended: bool) -> String {
    let mut path = String::new();
    let push_key = |path: &mut String, key: &str| {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    };
    let last = frames.len().saturating_sub(1);
    for (depth, frame) in frames.iter().enumerate() {
        let about_last_value = depth == last && data && just_ended;
        match frame {
            Frame::Object {
                key,
                after_colon,
                value_done,
            } => match key {
                // A key read in full whose value is being read, or which just
                // ended (an unknown key, a value of the wrong type).
                Some(key) if (*after_colon && !*value_done) || about_last_value => {
                    push_key(&mut path, key)
                }
                // Between the key and its colon: the object's own place.
                Some(_) if !*after_colon => return path,
                // Before or inside a key, or after a value: a key not yet read.
                _ => {
                    push_key(&mut path, "?");
                    return path;
                }
            },
            Frame::Array {
                index,
                in_element,
                value_done,
            } => {
                let reading = *in_element && !*value_done;
                // A type error before an element's first byte is about that element.
                let starting = !*in_element && depth == last && (data || element_refused);
                if reading || starting || (*in_element && about_last_value) {
                    path.push_str(&format!("[{index}]"));
                } else {
                    return path;
                }
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field serde_json's own error on `json` is about, as `from_json` finds it.
    fn field_of<T: serde::de::DeserializeOwned>(json: &str) -> (String, String) {
        let err = serde_json::from_str::<T>(json).err().expect("an error");
        (field_of_error(json.as_bytes(), &err), err.to_string())
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Top {
        a: Option<Vec<Inner>>,
        b: Option<Inner>,
        n: Option<u32>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: u32,
        y: Option<Vec<bool>>,
    }

    #[test]
    fn data_errors_name_the_value_they_are_about() {
        for (json, field) in [
            (r#"{"n":"s"}"#, "n"),
            (r#"{"a":[{"x":1},{"x":"2"}]}"#, "a[1].x"),
            (r#"{"a":[{"x":1},{"x":2,"y":[true,3]}]}"#, "a[1].y[1]"),
            (r#"{"a":[{"x":1},{"x":2,"y":[true,{}]}]}"#, "a[1].y[1]"),
            (r#"{"b":{"x":1,"z":2}}"#, "b.z"),
            (r#"{"zz":1}"#, "zz"),
            (r#"{"b":{"y":[]}}"#, "b"),
            (r#"{"a":[{"x":1},{}]}"#, "a[1]"),
            (r#"{"a":{}}"#, "a"),
            (r#"{"b" : 7 }"#, "b"),
            (r#"{"a":[{"x":1}],"n":-1}"#, "n"),
            (
                "{\n  \"a\": [\n    {\"x\": 1},\n    {\"x\": 1.5}\n  ]\n}",
                "a[1].x",
            ),
            (r#"{"b":{"x":1,"y":[false, "\"q\\u00e9"]}}"#, "b.y[1]"),
            (r#"{"b\u0041":1}"#, "bA"),
            (r#"{"a":[{"x":1}],"a":[]}"#, "a"),
        ] {
            let (found, message) = field_of::<Top>(json);
            assert_eq!(found, field, "{json}: {message}");
        }
    }

    #[test]
    fn syntax_errors_name_the_place_serde_path_to_error_named() {
        for (json, field) in [
            (r#"{"a":[{"x":1},]}"#, "a"),
            (r#"{"a":[{"x":1}"#, "a"),
            (r#"{"a":[{"x":1"#, "a[0].?"),
            (r#"{"b":{"x":1 "y":2}}"#, "b.?"),
            (r#"{"n" 1}"#, ""),
            (r#"{"n":}"#, "n"),
            (r#"{"#, "?"),
            (r#"{"n":1} x"#, ""),
            (r#"{"n":1x}"#, "?"),
            (r#"{"n":01}"#, "n"),
            (r#"{"b":{"y":[tru]}}"#, "b.y[0]"),
            (r#"{"n":1"#, "?"),
            (r#"{"b":{"x":"#, "b.x"),
        ] {
            let (found, message) = field_of::<Top>(json);
            assert_eq!(found, field, "{json}: {message}");
        }
    }

    /// A small deterministic generator (xorshift), so that a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Every object and array in `v`, as JSON pointers.
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
    fn reference(bytes: &[u8]) -> Option<(String, String)> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, super::super::RawConfig>(&mut de) {
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

    /// Config fields whose type is an enum.
    const ENUM_FIELDS: &[&str] = &["anonymous"];

    const BASES: &[&str] = &[
        r#"{"route_header":"x-v","versions":[{"name":"stable"},{"name":"canary","weight":10},{"name":"c2","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"10m","weight":5}],"interpolate":false}}],"override":{"header":"x-canary","cookie":"canary","token":{"header":"x-t","values":["0123456789abcdef"]},"trusted_sources":["10.0.0.0/8"]},"users":{"canary":["qa-alice","qa-bob"],"stable":["carol"]},"hash":{"header":"x-user-id","cookie":"uid","salt":"s","buckets":10000},"anonymous":"random","metrics_prefix":"canary","metrics":{"latency":true,"responses":false},"guard":{"version":"canary","max_error_rate":0.05,"baseline_margin":0.02,"min_requests":50,"window":"30s","status":["5xx",429],"hold":"10m"}}"#,
        r#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"hash":{"header":"x-user-id"}}"#,
    ];

    /// Type errors, unknown and missing keys, truncations and stray bytes in
    /// config-shaped JSON: the field named is serde_path_to_error's, the message
    /// serde_json's, wherever the error is.
    #[test]
    fn every_parse_error_names_the_field_serde_path_to_error_named() {
        let replacements = [
            "null",
            "true",
            "7",
            "-1",
            "1.5",
            "\"x\"",
            "[]",
            "[1,\"a\"]",
            "{}",
            "{\"zz\":1}",
        ];
        let strays = [",", "]", "}", ":", "x", "\"", "{", "[", "1", "\\"];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for case in 0..6000 {
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
            // The one known difference: an object where an enum is expected. The
            // scanner does not know the types, so it names the key inside (or `?`).
            if ENUM_FIELDS.contains(&field.as_str()) && found.0.starts_with(&format!("{field}.")) {
                assert_eq!(found.1, message, "{text}");
                continue;
            }
            assert_eq!(found, (field, message), "{text}");
            compared += 1;
        }
        assert!(compared > 4000, "only {compared} cases had a parse error");
    }
}
