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
//! below). Where it differs on purpose:
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

use crate::units::{escape_text, plain_decimal, pow10, shortest_digits};

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
    at: Option<usize>,
}

pub(crate) type Result<T> = std::result::Result<T, JsonError>;

const EOF_VALUE: &str = "EOF while parsing a value";
const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const INVALID_NUMBER: &str = "invalid number";
const INVALID_ESCAPE: &str = "invalid escape";
const EXPECTED_VALUE: &str = "expected value";
const TRAILING_COMMA: &str = "trailing comma";
const TRAILING_CHARACTERS: &str = "trailing characters";
const KEY_MUST_BE_A_STRING: &str = "key must be a string";
/// The nesting the lenient reader follows, serde_json's recursion limit.
const MAX_DEPTH: usize = 128;

/// One step of the path to the value being read.
enum Step {
    Key(String),
    Index(usize),
    /// A key that was not read (a syntax error where one should be).
    Unread,
}

/// A number as serde_json's parser classifies it.
enum Number {
    Unsigned(u64),
    Negative(i64),
    Float(f64),
}

pub(crate) struct Json<'a> {
    text: &'a [u8],
    /// The next byte to read.
    at: usize,
    path: Vec<Step>,
}

impl<'a> Json<'a> {
    #[inline(never)]
    pub fn new(text: &'a [u8]) -> Self {
        Json {
            text,
            at: 0,
            path: Vec::new(),
        }
    }

    /// The message with its position, as serde_json's errors display.
    #[inline(never)]
    pub fn render(&self, err: JsonError) -> (String, String) {
        let at = err.at.unwrap_or(self.at).min(self.text.len());
        let before = &self.text[..at];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before[..line_start].iter().filter(|&&b| b == b'\n').count();
        let column = at - line_start;
        (
            err.field,
            format!("{} at line {line} column {column}", err.message),
        )
    }

    // ---- Errors ----------------------------------------------------------------

    #[inline(never)]
    fn field(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match step {
                Step::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
                Step::Key(_) | Step::Unread => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(match step {
                        Step::Key(k) => k,
                        _ => "?",
                    });
                }
            }
        }
        out
    }

    /// An error about the byte just read (serde_json's `error`).
    #[inline(never)]
    fn error(&self, message: impl Into<String>) -> JsonError {
        self.error_at(self.at, message)
    }

    /// An error about the byte just looked at (serde_json's `peek_error`).
    #[inline(never)]
    fn peek_error(&self, message: impl Into<String>) -> JsonError {
        self.error_at((self.at + 1).min(self.text.len()), message)
    }

    #[inline(never)]
    fn error_at(&self, at: usize, message: impl Into<String>) -> JsonError {
        JsonError {
            field: self.field(),
            message: message.into(),
            at: Some(at),
        }
    }

    /// An error whose position is set where its value's container closes.
    #[inline(never)]
    fn unplaced(&self, message: String) -> JsonError {
        JsonError {
            field: self.field(),
            message,
            at: None,
        }
    }

    /// Places an unplaced error here (serde_json's `fix_position`).
    #[inline(never)]
    fn place(&self, mut err: JsonError) -> JsonError {
        err.at.get_or_insert(self.at);
        err
    }

    // ---- Bytes -----------------------------------------------------------------

    #[inline(never)]
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    #[inline(never)]
    fn peek_or_null(&self) -> u8 {
        self.peek().unwrap_or(0)
    }

    #[inline(never)]
    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    /// Skips whitespace; the next byte, not consumed.
    #[inline(never)]
    fn skip_whitespace(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
        self.peek()
    }

    #[inline(never)]
    fn literal(&mut self, rest: &[u8]) -> Result<()> {
        for &expected in rest {
            match self.next_byte() {
                None => return Err(self.error(EOF_VALUE)),
                Some(b) if b != expected => return Err(self.error("expected ident")),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// After the whole value: nothing but whitespace may follow.
    #[inline(never)]
    pub fn end(&mut self) -> Result<()> {
        match self.skip_whitespace() {
            Some(_) => Err(self.peek_error(TRAILING_CHARACTERS)),
            None => Ok(()),
        }
    }

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

    // ---- Numbers (serde_json's parser, without float_roundtrip) -----------------

    /// A number whose `-`, if any, was consumed.
    #[inline(never)]
    fn number(&mut self, positive: bool) -> Result<Number> {
        match self.next_byte() {
            None => Err(self.error(EOF_VALUE)),
            Some(b'0') => {
                if self.peek_or_null().is_ascii_digit() {
                    Err(self.peek_error(INVALID_NUMBER))
                } else {
                    self.number_rest(positive, 0)
                }
            }
            Some(c @ b'1'..=b'9') => {
                let mut significand = u64::from(c - b'0');
                while let c @ b'0'..=b'9' = self.peek_or_null() {
                    let digit = u64::from(c - b'0');
                    match significand
                        .checked_mul(10)
                        .and_then(|s| s.checked_add(digit))
                    {
                        Some(s) => {
                            self.at += 1;
                            significand = s;
                        }
                        None => return self.long_integer(positive, significand).map(Number::Float),
                    }
                }
                self.number_rest(positive, significand)
            }
            Some(_) => Err(self.error(INVALID_NUMBER)),
        }
    }

    #[inline(never)]
    fn number_rest(&mut self, positive: bool, significand: u64) -> Result<Number> {
        Ok(match self.peek_or_null() {
            b'.' => Number::Float(self.fraction(positive, significand, 0)?),
            b'e' | b'E' => Number::Float(self.exponent(positive, significand, 0)?),
            _ if positive => Number::Unsigned(significand),
            _ => {
                let negative = (significand as i64).wrapping_neg();
                // `-0` and values below i64::MIN are floats, as in serde_json.
                if negative >= 0 {
                    Number::Float(-(significand as f64))
                } else {
                    Number::Negative(negative)
                }
            }
        })
    }

    #[inline(never)]
    fn long_integer(&mut self, positive: bool, significand: u64) -> Result<f64> {
        let mut exponent = 0i32;
        loop {
            match self.peek_or_null() {
                b'0'..=b'9' => {
                    self.at += 1;
                    exponent = exponent.saturating_add(1);
                }
                b'.' => return self.fraction(positive, significand, exponent),
                b'e' | b'E' => return self.exponent(positive, significand, exponent),
                _ => return self.scaled(positive, significand, exponent),
            }
        }
    }

    #[inline(never)]
    fn fraction(&mut self, positive: bool, mut significand: u64, before: i32) -> Result<f64> {
        self.at += 1; // the '.'
        let mut after = 0i32;
        let mut overflowed = false;
        while let c @ b'0'..=b'9' = self.peek_or_null() {
            self.at += 1;
            if overflowed {
                continue;
            }
            match significand
                .checked_mul(10)
                .and_then(|s| s.checked_add(u64::from(c - b'0')))
            {
                Some(s) => {
                    significand = s;
                    after -= 1;
                }
                // Further digits are ignored, as in serde_json.
                None => overflowed = true,
            }
        }
        if after == 0 && !overflowed {
            return Err(match self.peek() {
                Some(_) => self.peek_error(INVALID_NUMBER),
                None => self.peek_error(EOF_VALUE),
            });
        }
        let exponent = before + after;
        match self.peek_or_null() {
            b'e' | b'E' => self.exponent(positive, significand, exponent),
            _ => self.scaled(positive, significand, exponent),
        }
    }

    #[inline(never)]
    fn exponent(&mut self, positive: bool, significand: u64, start: i32) -> Result<f64> {
        self.at += 1; // the 'e'
        let positive_exponent = match self.peek_or_null() {
            b'+' => {
                self.at += 1;
                true
            }
            b'-' => {
                self.at += 1;
                false
            }
            _ => true,
        };
        let mut exponent = match self.next_byte() {
            None => return Err(self.error(EOF_VALUE)),
            Some(c @ b'0'..=b'9') => i32::from(c - b'0'),
            Some(_) => return Err(self.error(INVALID_NUMBER)),
        };
        while let c @ b'0'..=b'9' = self.peek_or_null() {
            self.at += 1;
            match exponent
                .checked_mul(10)
                .and_then(|e| e.checked_add(i32::from(c - b'0')))
            {
                Some(e) => exponent = e,
                None => {
                    if significand != 0 && positive_exponent {
                        return Err(self.error("number out of range"));
                    }
                    while self.peek_or_null().is_ascii_digit() {
                        self.at += 1;
                    }
                    return Ok(if positive { 0.0 } else { -0.0 });
                }
            }
        }
        let exponent = if positive_exponent {
            start.saturating_add(exponent)
        } else {
            start.saturating_sub(exponent)
        };
        self.scaled(positive, significand, exponent)
    }

    /// significand × 10^exponent, as serde_json computes it.
    #[inline(never)]
    fn scaled(&self, positive: bool, significand: u64, mut exponent: i32) -> Result<f64> {
        let mut f = significand as f64;
        loop {
            let magnitude = exponent.unsigned_abs();
            if magnitude <= 308 {
                let pow = pow10(magnitude);
                if exponent >= 0 {
                    f *= pow;
                    if f.is_infinite() {
                        return Err(self.error("number out of range"));
                    }
                } else {
                    f /= pow;
                }
                break;
            }
            if f == 0.0 {
                break;
            }
            if exponent >= 0 {
                return Err(self.error("number out of range"));
            }
            f /= 1e308;
            exponent += 308;
        }
        Ok(if positive { f } else { -f })
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
    /// entries (a repeated key stays repeated), everything else dropped.
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
                let read = self.elements(usize::MAX, &mut |json, index| {
                    json.path.push(Step::Index(index));
                    json.loose_value()?;
                    json.path.pop();
                    Ok(())
                });
                self.close_array(read)?;
                Ok(Loose::Other)
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
    Other,
}

/// serde's list of names: `a`, `a` or `b`, one of `a`, `b`, `c`.
fn one_of(names: &[&str]) -> String {
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

/// A number as serde_json's messages show it: `integer `7``, `floating point `1.5``.
fn describe_number(n: &Number) -> String {
    match n {
        Number::Unsigned(n) => format!("integer `{n}`"),
        Number::Negative(n) => format!("integer `{n}`"),
        Number::Float(f) => format!("floating point `{}`", float_as_serde_json_writes(*f)),
    }
}

/// How serde_json writes a float in a message: the shortest digits, plain from
/// 1e-5 to below 1e16 with `.0` on whole numbers (`2.0`, `0.001`), else with an
/// exponent (`1e+20`, `1.5e-7`).
fn float_as_serde_json_writes(f: f64) -> String {
    let (negative, digits, exponent) = shortest_digits(f);
    let sign = if negative { "-" } else { "" };
    // The exponent of the first digit, in scientific notation.
    let first = exponent + digits.len() as i32 - 1;
    if (-5..=15).contains(&first) {
        let plain = plain_decimal(&digits, exponent);
        if plain.contains('.') {
            format!("{sign}{plain}")
        } else {
            format!("{sign}{plain}.0")
        }
    } else {
        let (head, tail) = digits.split_at(1);
        let dot = if tail.is_empty() { "" } else { "." };
        let exp_sign = if first < 0 { '-' } else { '+' };
        format!("{sign}{head}{dot}{tail}e{exp_sign}{}", first.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            r#"{"hash":["u",null,null,null,null,null,7]}"#,
            r#"{"hash":["u",null,null,null,null,null,]}"#,
            r#"{"hash":{"header":1.0e1}}"#,
            r#"{"hash":{"header":123456789.125}}"#,
            r#"{"hash":{"header":0.00001}}"#,
            r#"{"hash":{"header":1e16}}"#,
            r#"{"hash":{"header":1e-6}}"#,
            r#"{"anonymous":"sticky"}"#,
            r#"{"anonymous":7}"#,
            r#"{"anonymous":{"random":null}}"#,
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

    #[test]
    #[inline(never)]
    fn floats_in_messages_are_written_as_serde_json_writes_them() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            // At most 15 significant digits, the last at or above 10^-22: numbers
            // serde_json reads exactly, and so names exactly.
            let mut text = String::from("1");
            for _ in 0..rng.below(15) {
                text.push(char::from(b'0' + rng.below(10) as u8));
            }
            let point = 1 + rng.below(text.len());
            let fraction = (text.len() - point) as i32;
            if point < text.len() {
                text.insert(point, '.');
            }
            // The last digit at or above 10^-22, the value below 1e22.
            let exponent = rng.below((28 - fraction) as usize) as i32 - 22 + fraction;
            let text = format!("{text}e{exponent}");
            for number in [text.clone(), format!("-{text}")] {
                let Some(expected) = serde_json::from_str::<String>(&number).err() else {
                    continue;
                };
                let mut reader = Json::new(number.as_bytes());
                let found = reader.string().err().map(|e| reader.render(e).1);
                assert_eq!(found, Some(expected.to_string()), "{number}");
            }
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

    const BASES: &[&str] = &[
        r#"{"route_header":"x-v","versions":[{"name":"stable"},{"name":"canary","weight":10},{"name":"c2","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"10m","weight":5}],"interpolate":false}}],"override":{"header":"x-canary","cookie":"canary","token":{"header":"x-t","values":["0123456789abcdef"]},"trusted_sources":["10.0.0.0/8"]},"users":{"canary":["qa-alice","qa-bob"],"stable":["carol"]},"hash":{"header":"x-user-id","cookie":"uid","salt":"s","buckets":10000,"cookie_attributes":{"max_age":"30d","path":"/","domain":"example.com","same_site":"Strict","secure":true,"http_only":false}},"anonymous":"cookie","metrics_prefix":"canary","metrics":{"latency":true,"responses":false},"guard":{"version":"canary","max_error_rate":0.05,"baseline_margin":0.02,"min_requests":50,"window":"30s","status":["5xx",429],"hold":"10m"}}"#,
        r#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"hash":{"header":"x-user-id"}}"#,
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
