//! A JSON reader for the config, written for the `.wasm`'s size: it reads the
//! config's own types straight from the text, with none of serde's generic
//! visitors, and names the field of any error as it goes.
//!
//! It gives the errors serde_json gave through the serde derives that it replaces
//! (which still describe the config's types, for the tests and the schema): the
//! same message, the same ` at line L column C`, and the field
//! serde_path_to_error named (`versions[1].weight`, `guard` for a missing field,
//! `overide` for an unknown key, `?` where a key should have been). A test
//! compares the two on thousands of damaged configs (`every_parse_error_*`
//! in errors.rs). Where it differs on purpose:
//! - a duplicate key names that key, not the object it is in;
//! - numbers in messages are written from the shortest digits that read back as
//!   the same number (units::shortest_digits), as serde_json wrote them, for
//!   every number below 1e22 whose shortest digits end at or above 10^-22;
//! - unprintable and combining Unicode characters in a string that a message
//!   quotes are written as they are, not escaped (units::escape_text).
//!
//! Numbers are read as serde_json reads them (significand and exponent, scaled by
//! a power of ten), except that the powers above 10^22, which no valid config
//! uses, are not exact; so a number such as `1e300` reads within a few units in
//! the last place of serde_json's.
//!
//! The reader's parts, each importing only those after it:
//! - this module: values of each type, objects, arrays and strings, and
//!   [`Loose`], a value as the lenient reader keeps it;
//! - `numbers`: reading numbers, and writing them in messages;
//! - `cursor`: [`Json`]'s state (text, position, path), its byte steps, and the
//!   errors placed there and rendered as serde_json displayed them;
//! - `errors`: [`JsonError`], serde_json's messages, serde's list of names.

mod cursor;
mod errors;
mod numbers;

pub(crate) use self::cursor::Json;
pub(crate) use self::errors::{JsonError, Result};

use self::cursor::Step;
use self::errors::{
    one_of, EOF_LIST, EOF_OBJECT, EOF_STRING, EOF_VALUE, EXPECTED_VALUE, INVALID_ESCAPE,
    KEY_MUST_BE_A_STRING, TRAILING_CHARACTERS, TRAILING_COMMA,
};
use self::numbers::{describe_number, Number};
use crate::units::escape_text;

/// The nesting the lenient reader follows, serde_json's recursion limit.
const MAX_DEPTH: usize = 128;

impl Json<'_> {
    // ---- Strings ---------------------------------------------------------------

    /// The string after its opening quote.
    #[inline(never)]
    fn string_body(&mut self) -> Result<String> {
        let mut bytes = Vec::new();
        loop {
            let Some(b) = self.next_byte() else {
                return Err(self.error(EOF_STRING));
            };
            match b {
                b'"' => break,
                b'\\' => self.escape(&mut bytes)?,
                0..=0x1f => {
                    return Err(self
                        .error("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                _ => bytes.push(b),
            }
        }
        String::from_utf8(bytes).map_err(|e| {
            // Like serde_json: count back from the closing quote.
            let bad = e.as_bytes().len() - e.utf8_error().valid_up_to();
            let mut err = self.error("invalid unicode code point");
            err.at = Some(self.at.saturating_sub(bad));
            err
        })
    }

    #[inline(never)]
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Some(b) = self.next_byte() else {
            return Err(self.error(EOF_STRING));
        };
        let byte = match b {
            b'"' | b'\\' | b'/' => b,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(out),
            _ => return Err(self.error(INVALID_ESCAPE)),
        };
        out.push(byte);
        Ok(())
    }

    #[inline(never)]
    fn hex4(&mut self) -> Result<u32> {
        let Some(digits) = self.text.get(self.at..self.at + 4) else {
            self.at = self.text.len();
            return Err(self.error(EOF_STRING));
        };
        self.at += 4;
        std::str::from_utf8(digits)
            .ok()
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error(INVALID_ESCAPE))
    }

    #[inline(never)]
    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Result<()> {
        const LONE: &str = "lone leading surrogate in hex escape";
        let first = self.hex4()?;
        let code = match first {
            0xDC00..=0xDFFF => return Err(self.error(LONE)),
            0xD800..=0xDBFF => {
                for expected in [b'\\', b'u'] {
                    match self.peek() {
                        None => return Err(self.error(EOF_STRING)),
                        Some(b) => {
                            self.at += 1;
                            if b != expected {
                                return Err(self.error("unexpected end of hex escape"));
                            }
                        }
                    }
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error(LONE));
                }
                0x1_0000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            _ => first,
        };
        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    // ---- Types -----------------------------------------------------------------

    /// The error for a value of another type than `expected` (serde_json's
    /// `peek_invalid_type`), read past that value if it is a scalar.
    #[inline(never)]
    fn invalid_type(&mut self, expected: &str) -> JsonError {
        let unexpected = match self.peek_or_null() {
            b'n' => {
                self.at += 1;
                if let Err(err) = self.literal(b"ull") {
                    return err;
                }
                "null".to_string()
            }
            b't' => {
                self.at += 1;
                if let Err(err) = self.literal(b"rue") {
                    return err;
                }
                "boolean `true`".to_string()
            }
            b'f' => {
                self.at += 1;
                if let Err(err) = self.literal(b"alse") {
                    return err;
                }
                "boolean `false`".to_string()
            }
            c @ (b'-' | b'0'..=b'9') => {
                if c == b'-' {
                    self.at += 1;
                }
                match self.number(c != b'-') {
                    Ok(n) => describe_number(&n),
                    Err(err) => return err,
                }
            }
            b'"' => {
                self.at += 1;
                match self.string_body() {
                    Ok(s) => format!("string \"{}\"", escape_text(&s, false)),
                    Err(err) => return err,
                }
            }
            b'[' => "sequence".to_string(),
            b'{' => "map".to_string(),
            _ => return self.peek_error(EXPECTED_VALUE),
        };
        self.error(format!("invalid type: {unexpected}, expected {expected}"))
    }

    /// The first byte of a value, or the error at the end of the text.
    #[inline(never)]
    fn value_start(&mut self) -> Result<u8> {
        self.skip_whitespace()
            .ok_or_else(|| self.peek_error(EOF_VALUE))
    }

    #[inline(never)]
    pub fn string(&mut self) -> Result<String> {
        if self.value_start()? == b'"' {
            self.at += 1;
            self.string_body()
        } else {
            Err(self.invalid_type("a string"))
        }
    }

    #[inline(never)]
    pub fn boolean(&mut self) -> Result<bool> {
        match self.value_start()? {
            b't' => {
                self.at += 1;
                self.literal(b"rue").map(|()| true)
            }
            b'f' => {
                self.at += 1;
                self.literal(b"alse").map(|()| false)
            }
            _ => Err(self.invalid_type("a boolean")),
        }
    }

    /// A number of the config (serde's `deserialize_number`): `expected` names
    /// the Rust type in messages, as serde does.
    #[inline(never)]
    fn any_number(&mut self, expected: &str) -> Result<Number> {
        match self.value_start()? {
            b'-' => {
                self.at += 1;
                self.number(false)
            }
            b'0'..=b'9' => self.number(true),
            _ => Err(self.invalid_type(expected)),
        }
    }

    #[inline(never)]
    pub fn f64(&mut self) -> Result<f64> {
        Ok(match self.any_number("f64")? {
            Number::Unsigned(n) => n as f64,
            Number::Negative(n) => n as f64,
            Number::Float(f) => f,
        })
    }

    /// An unsigned integer up to `max`; `expected` is its Rust type (`u64`, `u32`).
    #[inline(never)]
    pub fn unsigned(&mut self, max: u64, expected: &str) -> Result<u64> {
        match self.any_number(expected)? {
            Number::Unsigned(n) if n <= max => Ok(n),
            n @ (Number::Unsigned(_) | Number::Negative(_)) => Err(self.error(format!(
                "invalid value: {}, expected {expected}",
                describe_number(&n)
            ))),
            n @ Number::Float(_) => Err(self.error(format!(
                "invalid type: {}, expected {expected}",
                describe_number(&n)
            ))),
        }
    }

    /// `null` is `None`; anything else is read by `read`.
    #[inline]
    pub fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.null()? {
            return Ok(None);
        }
        read(self).map(Some)
    }

    /// An optional array of strings, the most common list in the config (one copy
    /// of its reading in the `.wasm`, not one per field).
    #[inline(never)]
    pub fn option_strings(&mut self) -> Result<Option<Vec<String>>> {
        self.option(|json| json.array(Json::string))
    }

    /// Reads `null` if that comes next (serde_json's `deserialize_option`).
    #[inline(never)]
    fn null(&mut self) -> Result<bool> {
        if self.skip_whitespace() != Some(b'n') {
            return Ok(false);
        }
        self.at += 1;
        self.literal(b"ull")?;
        Ok(true)
    }

    /// An array, each element read by `element`.
    #[inline]
    pub fn array<T>(&mut self, mut element: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        self.each_element(&mut |json| {
            items.push(element(json)?);
            Ok(())
        })?;
        Ok(items)
    }

    /// An array, `each` called at every element (the one copy of the array code
    /// whatever the element type).
    #[inline(never)]
    fn each_element(&mut self, each: &mut dyn FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if self.value_start()? != b'[' {
            return Err(self.invalid_type("a sequence"));
        }
        self.at += 1;
        let read = self.elements(usize::MAX, &mut |json, index| {
            json.path.push(Step::Index(index));
            each(json)?;
            json.path.pop();
            Ok(())
        });
        self.close_array(read)
    }

    /// Calls `each` with the index of every element of the array just opened,
    /// up to `limit` elements (the rest is left for `close_array` to refuse).
    #[inline(never)]
    fn elements(
        &mut self,
        limit: usize,
        each: &mut dyn FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        let mut index = 0;
        while index < limit {
            match self.skip_whitespace() {
                None => return Err(self.peek_error(EOF_LIST)),
                Some(b']') => return Ok(()),
                Some(_) if index == 0 => {}
                Some(b',') => {
                    self.at += 1;
                    match self.skip_whitespace() {
                        Some(b']') => return Err(self.peek_error(TRAILING_COMMA)),
                        Some(_) => {}
                        None => return Err(self.peek_error(EOF_VALUE)),
                    }
                }
                Some(_) => return Err(self.peek_error("expected `,` or `]`")),
            }
            each(self, index)?;
            index += 1;
        }
        Ok(())
    }

    /// Closes an array whatever `read` gave, as serde_json does; `read`'s error
    /// comes first.
    #[inline(never)]
    fn close_array(&mut self, read: Result<()>) -> Result<()> {
        let closed = match self.skip_whitespace() {
            Some(b']') => {
                self.at += 1;
                Ok(())
            }
            Some(b',') => {
                self.at += 1;
                Err(match self.skip_whitespace() {
                    Some(b']') => self.peek_error(TRAILING_COMMA),
                    _ => self.peek_error(TRAILING_CHARACTERS),
                })
            }
            Some(_) => Err(self.peek_error(TRAILING_CHARACTERS)),
            None => Err(self.peek_error(EOF_LIST)),
        };
        read.and(closed).map_err(|err| self.place(err))
    }

    #[inline(never)]
    fn close_object(&mut self, read: Result<()>) -> Result<()> {
        let closed = match self.skip_whitespace() {
            Some(b'}') => {
                self.at += 1;
                Ok(())
            }
            Some(b',') => Err(self.peek_error(TRAILING_COMMA)),
            Some(_) => Err(self.peek_error(TRAILING_CHARACTERS)),
            None => Err(self.peek_error(EOF_OBJECT)),
        };
        read.and(closed).map_err(|err| self.place(err))
    }

    /// Calls `each` with every key of the object just opened, its value next.
    #[inline(never)]
    fn entries(&mut self, each: &mut dyn FnMut(&mut Self, String) -> Result<()>) -> Result<()> {
        let mut first = true;
        loop {
            self.path.push(Step::Unread);
            let next = match self.skip_whitespace() {
                None => Err(self.peek_error(EOF_OBJECT)),
                Some(b'}') => {
                    self.path.pop();
                    return Ok(());
                }
                Some(b'"') if first => Ok(()),
                Some(_) if first => Err(self.peek_error(KEY_MUST_BE_A_STRING)),
                Some(b',') => {
                    self.at += 1;
                    match self.skip_whitespace() {
                        Some(b'"') => Ok(()),
                        Some(b'}') => Err(self.peek_error(TRAILING_COMMA)),
                        Some(_) => Err(self.peek_error(KEY_MUST_BE_A_STRING)),
                        None => Err(self.peek_error(EOF_VALUE)),
                    }
                }
                Some(_) => Err(self.peek_error("expected `,` or `}`")),
            };
            next?;
            first = false;
            self.at += 1;
            let key = self.string_body()?;
            self.path.pop();
            each(self, key)?;
        }
    }

    /// After a key: the colon, then the value, read by `value` under the key.
    #[inline(never)]
    fn entry_value(
        &mut self,
        key: String,
        value: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        match self.skip_whitespace() {
            Some(b':') => self.at += 1,
            Some(_) => return Err(self.peek_error("expected `:`")),
            None => return Err(self.peek_error(EOF_OBJECT)),
        }
        self.path.push(Step::Key(key));
        value(self)?;
        self.path.pop();
        Ok(())
    }

    /// An object of string keys (serde's map into a `BTreeMap`), each value read
    /// by `value`: the entries in key order, a repeated key keeping its last value.
    pub fn map<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<(String, T)>> {
        if self.value_start()? != b'{' {
            return Err(self.invalid_type("a map"));
        }
        self.at += 1;
        let mut entries: Vec<(String, T)> = Vec::new();
        let read = self.entries(&mut |json, key| {
            json.entry_value(key.clone(), &mut |json| {
                let v = value(json)?;
                match entries.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
                    Ok(i) => entries[i].1 = v,
                    Err(i) => entries.insert(i, (key.clone(), v)),
                }
                Ok(())
            })
        });
        self.close_object(read)?;
        Ok(entries)
    }

    /// A struct with these fields (serde derive's with `deny_unknown_fields`):
    /// `field(json, i)` reads the value of `fields[i]`. `required` has bit `i` set
    /// for each field that must be present. `name` is the struct's, as serde's
    /// messages call it (`struct RawHash`). Like serde, an array is read as the
    /// fields in order.
    #[inline(never)]
    pub fn object(
        &mut self,
        name: &str,
        fields: &[&str],
        required: u32,
        field: &mut dyn FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        match self.value_start()? {
            b'{' => {
                self.at += 1;
                let mut seen = 0u32;
                let read = self.entries(&mut |json, key| {
                    let Some(i) = fields.iter().position(|f| *f == key) else {
                        json.path.push(Step::Key(key.clone()));
                        return Err(json.unplaced(format!(
                            "unknown field `{key}`, expected {}",
                            one_of(fields)
                        )));
                    };
                    if seen & (1 << i) != 0 {
                        json.path.push(Step::Key(key.clone()));
                        return Err(json.unplaced(format!("duplicate field `{key}`")));
                    }
                    seen |= 1 << i;
                    json.entry_value(key, &mut |json| field(json, i))
                });
                let read = read.and_then(|()| {
                    match fields
                        .iter()
                        .enumerate()
                        .find(|(i, _)| required & (1 << i) != 0 && seen & (1 << i) == 0)
                    {
                        Some((_, missing)) => {
                            Err(self.unplaced(format!("missing field `{missing}`")))
                        }
                        None => Ok(()),
                    }
                });
                self.close_object(read)
            }
            b'[' => {
                self.at += 1;
                let mut count = 0;
                let read = self.elements(fields.len(), &mut |json, index| {
                    json.path.push(Step::Index(index));
                    field(json, index)?;
                    json.path.pop();
                    count += 1;
                    Ok(())
                });
                let read = read.and_then(|()| {
                    if count < fields.len() {
                        Err(self.unplaced(format!(
                            "invalid length {count}, expected {name} with {} elements",
                            fields.len()
                        )))
                    } else {
                        Ok(())
                    }
                });
                self.close_array(read)
            }
            _ => Err(self.invalid_type(name)),
        }
    }

    /// A unit enum (serde derive's), as a string naming one of `variants`, or
    /// serde's object form `{"variant": null}`; the index of the variant.
    #[inline(never)]
    pub fn unit_enum(&mut self, variants: &[&str]) -> Result<usize> {
        let variant = |json: &mut Self| -> Result<usize> {
            let name = json.string()?;
            variants.iter().position(|v| *v == name).ok_or_else(|| {
                json.error(format!(
                    "unknown variant `{name}`, expected {}",
                    one_of(variants)
                ))
            })
        };
        match self.value_start()? {
            b'"' => variant(self),
            b'{' => {
                self.at += 1;
                let index = match self.skip_whitespace() {
                    Some(b'"') => variant(self)?,
                    Some(b'}') => return Err(self.peek_error(EXPECTED_VALUE)),
                    Some(_) => return Err(self.peek_error(KEY_MUST_BE_A_STRING)),
                    None => return Err(self.peek_error(EOF_OBJECT)),
                };
                match self.skip_whitespace() {
                    Some(b':') => self.at += 1,
                    Some(_) => return Err(self.peek_error("expected `:`")),
                    None => return Err(self.peek_error(EOF_OBJECT)),
                }
                // The unit value is about the variant, as serde_path_to_error says.
                self.path.push(Step::Key(variants[index].to_string()));
                if self.value_start()? == b'n' {
                    self.at += 1;
                    self.literal(b"ull")?;
                } else {
                    return Err(self.invalid_type("unit"));
                }
                self.path.pop();
                match self.skip_whitespace() {
                    Some(b'}') => {
                        self.at += 1;
                        Ok(index)
                    }
                    Some(_) => Err(self.error(EXPECTED_VALUE)),
                    None => Err(self.error(EOF_OBJECT)),
                }
            }
            _ => Err(self.peek_error(EXPECTED_VALUE)),
        }
    }

    /// Any value, for a lenient reader: strings are kept, objects kept as their
    /// entries (a repeated key stays repeated), arrays as their elements,
    /// everything else dropped.
    #[inline(never)]
    pub fn loose_value(&mut self) -> Result<Loose> {
        let first = self.value_start()?;
        // Any JSON comes here, so its depth is bounded as serde_json bounds it:
        // a stack overflow would take the whole VM down.
        if matches!(first, b'{' | b'[') && self.path.len() >= MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        match first {
            b'"' => self.string().map(Loose::String),
            b'{' => {
                self.at += 1;
                let mut entries = Vec::new();
                let read = self.entries(&mut |json, key| {
                    let mut value = Loose::Other;
                    json.entry_value(key.clone(), &mut |json| {
                        value = json.loose_value()?;
                        Ok(())
                    })?;
                    entries.push((key, value));
                    Ok(())
                });
                self.close_object(read)?;
                Ok(Loose::Object(entries))
            }
            b'[' => {
                self.at += 1;
                let mut elements = Vec::new();
                let read = self.elements(usize::MAX, &mut |json, index| {
                    json.path.push(Step::Index(index));
                    elements.push(json.loose_value()?);
                    json.path.pop();
                    Ok(())
                });
                self.close_array(read)?;
                Ok(Loose::Array(elements))
            }
            b'n' | b't' | b'f' => {
                let expected: &[u8] = match self.peek_or_null() {
                    b'n' => b"null",
                    b't' => b"true",
                    _ => b"false",
                };
                self.literal(expected).map(|()| Loose::Other)
            }
            _ => self.f64().map(|_| Loose::Other),
        }
    }
}

/// A value as the lenient reader keeps it.
pub(crate) enum Loose {
    String(String),
    Object(Vec<(String, Loose)>),
    /// Safe mode reads the route headers of every rollout.
    Array(Vec<Loose>),
    Other,
}

/// A small deterministic generator (xorshift), so that a failure replays: the
/// tests in numbers.rs and errors.rs draw their cases from it.
#[cfg(test)]
struct Rng(u64);

#[cfg(test)]
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
