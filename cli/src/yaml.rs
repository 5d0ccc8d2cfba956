//! YAML read the way Kubernetes reads a manifest, so that the CLI and the cluster see
//! the same config in the same file.
//!
//! `kubectl` turns YAML into JSON with sigs.k8s.io/yaml, which decodes with go-yaml v2:
//! YAML 1.1 scalar resolution. The API server stores that JSON; Istio decodes
//! `pluginConfig` into a `google.protobuf.Struct` and hands the filter that Struct
//! written as JSON. So a plain `interpolate: yes` reaches the filter as `true`, where a
//! YAML 1.2 reader (serde_yaml, before) sees the string "yes".
//!
//! saphyr-parser gives the events with each scalar's style; this module resolves the
//! scalars itself, because the rules are the whole point:
//! - Quoted (`'…'`, `"…"`) and block (`|`, `>`) scalars are strings, always.
//! - Plain scalars, by the YAML 1.1 type regexps (yaml.org/type/), as go-yaml v2 applies
//!   them (its resolve.go):
//!   - null (yaml.org/type/null.html): `~ | null | Null | NULL | ` (empty);
//!   - bool (yaml.org/type/bool.html): `y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|`
//!     `false|False|FALSE|on|On|ON|off|Off|OFF`;
//!   - int (yaml.org/type/int.html): `[-+]?0b[0-1_]+` (base 2), `[-+]?0[0-7_]+`
//!     (base 8), `[-+]?(0|[1-9][0-9_]*)` (base 10), `[-+]?0x[0-9a-fA-F_]+` (base 16);
//!     `_` is ignored. Base 60 (`1:30`) is not resolved by go-yaml v2: a string here too.
//!     go-yaml also takes Go's `0o17` octal, and so does this module.
//!     What is no int (`08`) may still match the float regexp below, as in go-yaml: 8.
//!   - float (yaml.org/type/float.html): `[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?`,
//!     as go-yaml v2 narrows it: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
//!     after removing `_`. `.inf`, `-.inf`, `.nan` are floats that JSON cannot carry:
//!     an error, as kubectl's JSON encoder gives.
//!   - timestamps (yaml.org/type/timestamp.html) stay the string as written: go-yaml
//!     v2 keeps them as strings when decoding into `interface{}`.
//!   - anything else is a string.
//! - Tags: `!!str` makes a string of a plain scalar; `!!int`, `!!float`, `!!bool`,
//!   `!!null` must resolve to their type; other tags are refused.
//! - Numbers become what a `google.protobuf.Struct` holds, a double: integers within
//!   ±2^53 stay integers in the JSON, larger ones are written as the double they become.
//! - Mapping keys become JSON strings as sigs.k8s.io/yaml writes them (`yes:` is the key
//!   "true", `1:` the key "1"); a key given twice is an error (kubectl's strict field
//!   validation refuses it too).
//! - Anchors and aliases are copied; `<<` merge keys (yaml.org/type/merge.html) merge a
//!   mapping, or a list of mappings, with the mapping's own keys winning.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Every document of `text`, as JSON values; an empty document (a trailing `---`, an
/// empty file) is `Value::Null`.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut loader = Loader {
        events: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    let mut documents = Vec::new();
    loop {
        match loader.next()? {
            (Event::StreamStart, _) | (Event::DocumentEnd, _) => {}
            (Event::StreamEnd, _) => return Ok(documents),
            (Event::DocumentStart(_), _) => {
                let (event, span) = loader.next()?;
                if matches!(event, Event::DocumentEnd | Event::StreamEnd) {
                    documents.push(Value::Null);
                    if matches!(event, Event::StreamEnd) {
                        return Ok(documents);
                    }
                    continue;
                }
                documents.push(loader.node(event, span)?);
            }
            (event, span) => return Err(at(span, format!("unexpected YAML event {event:?}"))),
        }
    }
}

struct Loader<'a> {
    events: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Value>,
}

fn at(span: Span, message: impl std::fmt::Display) -> String {
    format!(
        "{message} at line {} column {}",
        span.start.line(),
        span.start.col() + 1
    )
}

/// The parser's message and where, as lines and columns an editor shows (its own
/// text also gives a character offset, which helps no one reading a manifest).
fn scan_error(e: ScanError) -> String {
    format!(
        "{} at line {} column {}",
        e.info(),
        e.marker().line(),
        e.marker().col() + 1
    )
}

const MERGE_KEY: &str = "<<";

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), String> {
        match self.events.next() {
            Some(result) => result.map_err(scan_error),
            None => Err("unexpected end of the YAML".to_string()),
        }
    }

    fn remember(&mut self, anchor: usize, value: &Value) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
    }

    /// The value that starts with `event`.
    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Value, String> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(&text, style, tag.as_deref()).map_err(|m| at(span, m))?;
                self.remember(anchor, &value);
                Ok(value)
            }
            Event::Alias(anchor) => self
                .anchors
                .get(&anchor)
                .cloned()
                .ok_or_else(|| at(span, "an alias to an unknown anchor")),
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq").map_err(|m| at(span, m))?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, span)?);
                }
                let value = Value::Array(items);
                self.remember(anchor, &value);
                Ok(value)
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map").map_err(|m| at(span, m))?;
                let value = Value::Object(self.mapping()?);
                self.remember(anchor, &value);
                Ok(value)
            }
            other => Err(at(span, format!("unexpected YAML event {other:?}"))),
        }
    }

    /// The entries up to `MappingEnd`, with `<<` merges applied.
    fn mapping(&mut self) -> Result<Map<String, Value>, String> {
        let mut own = Map::new();
        let mut merged = Map::new();
        loop {
            let (event, key_span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let is_merge = matches!(&event, Event::Scalar(text, ScalarStyle::Plain, _, None) if text == MERGE_KEY);
            let key = self.node(event, key_span)?;
            let (event, span) = self.next()?;
            let value = self.node(event, span)?;
            if is_merge {
                let sources = match value {
                    Value::Array(items) => items,
                    one => vec![one],
                };
                // Earlier mappings in a merge list win over later ones.
                for source in sources {
                    let Value::Object(source) = source else {
                        return Err(at(span, "`<<` merges a mapping or a list of mappings"));
                    };
                    for (k, v) in source {
                        merged.entry(k).or_insert(v);
                    }
                }
                continue;
            }
            let key = key_string(key).map_err(|m| at(key_span, m))?;
            if own.contains_key(&key) {
                return Err(at(key_span, format!("the key `{key}` is given twice")));
            }
            own.insert(key, value);
        }
        for (k, v) in merged {
            own.entry(k).or_insert(v);
        }
        Ok(own)
    }
}

/// A mapping key as sigs.k8s.io/yaml writes it into JSON.
fn key_string(key: Value) -> Result<String, String> {
    match key {
        Value::String(s) => Ok(s),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Null => Ok("null".to_string()),
        Value::Array(_) | Value::Object(_) => {
            Err("a mapping key must be a scalar to become JSON".to_string())
        }
    }
}

fn check_collection_tag(tag: Option<&Tag>, kind: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(t) if t.is_yaml_core_schema() && t.suffix == kind => Ok(()),
        Some(t) => Err(format!("the tag {t} is not supported here")),
    }
}

/// A scalar's value: quoted and block scalars are strings; plain ones by YAML 1.1.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let core = |name: &str| tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == name);
    if let Some(t) = tag {
        if core("str") {
            return Ok(Value::String(text.to_string()));
        }
        let expected = ["int", "float", "bool", "null"]
            .into_iter()
            .find(|name| core(name))
            .ok_or_else(|| format!("the tag {t} is not supported here"))?;
        let value = plain(text)?;
        let matches = match (expected, &value) {
            ("int", Value::Number(n)) => !n.is_f64() || text.parse::<i128>().is_ok(),
            ("float", Value::Number(_)) => true,
            ("bool", Value::Bool(_)) | ("null", Value::Null) => true,
            _ => false,
        };
        return if matches {
            Ok(value)
        } else {
            Err(format!(
                "`{text}` is not a YAML 1.1 {expected} for its tag {t}"
            ))
        };
    }
    match style {
        ScalarStyle::Plain => plain(text),
        _ => Ok(Value::String(text.to_string())),
    }
}

/// A plain scalar by the YAML 1.1 regexps in the module comment.
fn plain(text: &str) -> Result<Value, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false))
        }
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => {
            return Err(format!(
                "`{text}` is a YAML float that JSON cannot hold (quote it for a string)"
            ))
        }
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || first == b'-' || first == b'+' {
        let digits = text.replace('_', "");
        if let Some(n) = integer(&digits) {
            return Ok(number_from_integer(n));
        }
        if is_float(&digits) {
            if let Ok(f) = digits.parse::<f64>() {
                return number_from_float(f, text);
            }
        }
    } else if first == b'.' && is_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return number_from_float(f, text);
        }
    }
    Ok(Value::String(text.to_string()))
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint`), which go-yaml v2 applies to the
/// scalar without `_`: an optional sign, then `0x`/`0X` hex, `0b`/`0B` binary,
/// `0o`/`0O` or a leading `0` octal, else decimal.
fn integer(text: &str) -> Option<i128> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    let n = i128::from(magnitude);
    if negative {
        // ParseInt: down to -2^63; below that it fails, and ParseUint refuses a sign.
        (n <= 1 << 63).then_some(-n)
    } else {
        Some(n)
    }
}

/// go-yaml v2's float regexp: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => !fraction.is_empty() && all_digits(fraction),
        Some((whole, fraction)) => !whole.is_empty() && all_digits(whole) && all_digits(fraction),
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

/// The largest integer a double holds exactly.
const EXACT_IN_DOUBLE: i128 = 1 << 53;

/// An integer as a `google.protobuf.Struct` carries it: a double, written as an integer
/// while that is exact.
fn number_from_integer(n: i128) -> Value {
    if n.abs() <= EXACT_IN_DOUBLE {
        // Within ±2^53, so it fits an i64.
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n as f64).map_or(Value::Null, Value::Number)
    }
}

fn number_from_float(f: f64, text: &str) -> Result<Value, String> {
    if f.fract() == 0.0 && f.abs() <= EXACT_IN_DOUBLE as f64 {
        return Ok(Value::Number(Number::from(f as i64)));
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("`{text}` is a number JSON cannot hold"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut docs = documents(text).unwrap();
        assert_eq!(docs.len(), 1, "{text}");
        docs.remove(0)
    }

    fn value(scalar: &str) -> Value {
        one(&format!("v: {scalar}\n"))["v"].clone()
    }

    #[test]
    fn yaml_1_1_booleans_in_every_spelling_and_only_when_plain() {
        for t in [
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ] {
            assert_eq!(value(t), json!(true), "{t}");
            assert_eq!(value(&format!("'{t}'")), json!(t), "'{t}'");
            assert_eq!(value(&format!("\"{t}\"")), json!(t), "\"{t}\"");
        }
        for t in [
            "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ] {
            assert_eq!(value(t), json!(false), "{t}");
        }
        // Not in the YAML 1.1 table: strings.
        for t in ["yEs", "tRUE", "oN", "Yes!", "nope"] {
            assert_eq!(value(t), json!(t), "{t}");
        }
        assert_eq!(value("|\n  yes"), json!("yes\n"));
        assert_eq!(value("!!str yes"), json!("yes"));
        assert_eq!(value("!!bool on"), json!(true));
    }

    #[test]
    fn nulls() {
        for t in ["~", "null", "Null", "NULL", ""] {
            assert_eq!(value(t), Value::Null, "{t:?}");
        }
        assert_eq!(value("'~'"), json!("~"));
        assert_eq!(value("nULL"), json!("nULL"));
    }

    #[test]
    fn yaml_1_1_integers_and_floats() {
        for (t, want) in [
            ("0", json!(0)),
            ("-17", json!(-17)),
            ("+17", json!(17)),
            ("1_000", json!(1000)),
            ("0x1F", json!(31)),
            ("0b101", json!(5)),
            ("-0b101", json!(-5)),
            ("017", json!(15)),
            ("0o17", json!(15)),
            // Not an octal int; go-yaml v2 then tries its float regexp, which matches.
            ("08", json!(8)),
            ("9007199254740992", json!(9007199254740992i64)),
            ("1.5", json!(1.5)),
            ("10.0", json!(10)),
            (".5", json!(0.5)),
            ("-2.5e-3", json!(-0.0025)),
            ("1e3", json!(1000)),
        ] {
            assert_eq!(value(t), want, "{t}");
        }
        // A double past 2^53, as the Struct holds it.
        assert_eq!(value("9007199254740993"), json!(9007199254740992.0f64));
        // Not numbers under YAML 1.1 as go-yaml resolves it: strings.
        for t in [
            "1:30",
            "0x",
            "1.2.3",
            "12abc",
            "1_0.0_5x",
            "2026-12-01T09:00:00Z",
        ] {
            assert_eq!(value(t), json!(t), "{t}");
        }
        assert_eq!(value("'10'"), json!("10"));
        assert!(documents("v: .inf\n").unwrap_err().contains("`.inf`"));
        assert!(documents("v: !!int abc\n")
            .unwrap_err()
            .contains("not a YAML 1.1 int"));
    }

    #[test]
    fn keys_anchors_merges_and_documents() {
        assert_eq!(
            one("yes: 1\n1: 2\n~: 3\n'no': 4\n"),
            json!({"true": 1, "1": 2, "null": 3, "no": 4})
        );
        assert!(documents("a: 1\na: 2\n")
            .unwrap_err()
            .contains("the key `a` is given twice at line 2 column 1"));
        assert_eq!(
            one("base: &b {a: 1, b: 2}\nuse: {<<: *b, b: 3}\nlist: [*b]\n"),
            json!({"base": {"a": 1, "b": 2}, "use": {"a": 1, "b": 3}, "list": [{"a": 1, "b": 2}]})
        );
        assert_eq!(
            documents("a: 1\n---\n---\nb: [x, 'y']\n...\n").unwrap(),
            vec![json!({"a": 1}), Value::Null, json!({"b": ["x", "y"]})]
        );
        assert_eq!(documents("").unwrap(), Vec::<Value>::new());
        assert!(documents("v: !custom x\n")
            .unwrap_err()
            .contains("not supported"));
        assert!(documents("versions: [\n").is_err());
    }
}
