//! The reader's state and its first steps: the text, the position, the path of
//! the value being read; peeking and taking bytes; and the errors, placed at the
//! position and named by the path, as serde_json and serde_path_to_error did.

use super::errors::{JsonError, Result, EOF_VALUE, TRAILING_CHARACTERS};

/// One step of the path to the value being read.
pub(super) enum Step {
    Key(String),
    Index(usize),
    /// A key that was not read (a syntax error where one should be).
    Unread,
}

pub(crate) struct Json<'a> {
    pub(super) text: &'a [u8],
    /// The next byte to read.
    pub(super) at: usize,
    pub(super) path: Vec<Step>,
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
    pub(super) fn field(&self) -> String {
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
    pub(super) fn error(&self, message: impl Into<String>) -> JsonError {
        self.error_at(self.at, message)
    }

    /// An error about the byte just looked at (serde_json's `peek_error`).
    #[inline(never)]
    pub(super) fn peek_error(&self, message: impl Into<String>) -> JsonError {
        self.error_at((self.at + 1).min(self.text.len()), message)
    }

    #[inline(never)]
    pub(super) fn error_at(&self, at: usize, message: impl Into<String>) -> JsonError {
        JsonError {
            field: self.field(),
            message: message.into(),
            at: Some(at),
        }
    }

    /// An error whose position is set where its value's container closes.
    #[inline(never)]
    pub(super) fn unplaced(&self, message: String) -> JsonError {
        JsonError {
            field: self.field(),
            message,
            at: None,
        }
    }

    /// Places an unplaced error here (serde_json's `fix_position`).
    #[inline(never)]
    pub(super) fn place(&self, mut err: JsonError) -> JsonError {
        err.at.get_or_insert(self.at);
        err
    }

    // ---- Bytes -----------------------------------------------------------------

    #[inline(never)]
    pub(super) fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    #[inline(never)]
    pub(super) fn peek_or_null(&self) -> u8 {
        self.peek().unwrap_or(0)
    }

    #[inline(never)]
    pub(super) fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    /// Skips whitespace; the next byte, not consumed.
    #[inline(never)]
    pub(super) fn skip_whitespace(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
        self.peek()
    }

    #[inline(never)]
    pub(super) fn literal(&mut self, rest: &[u8]) -> Result<()> {
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
}
