//! Numbers: read as serde_json's parser reads them, and written in messages as
//! serde_json wrote them.

use super::cursor::Json;
use super::errors::{Result, EOF_VALUE, INVALID_NUMBER};
use crate::units::{plain_decimal, pow10, shortest_digits};

/// A number as serde_json's parser classifies it.
pub(super) enum Number {
    Unsigned(u64),
    Negative(i64),
    Float(f64),
}

impl Json<'_> {
    // ---- Numbers (serde_json's parser, without float_roundtrip) -----------------

    /// A number whose `-`, if any, was consumed.
    #[inline(never)]
    pub(super) fn number(&mut self, positive: bool) -> Result<Number> {
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
}

/// A number as serde_json's messages show it: `integer `7``, `floating point `1.5``.
pub(super) fn describe_number(n: &Number) -> String {
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
    use super::super::{Json, Rng};

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
}
