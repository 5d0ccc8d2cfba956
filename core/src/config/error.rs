//! The error every section reports: the field's JSON path and what is wrong.

use std::fmt;

/// One problem in a config: the JSON path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    // Out of line: one copy per argument types instead of one per call site.
    #[cold]
    #[inline(never)]
    pub(super) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Adds an error to `errors` (out of line: one copy per argument types instead
    /// of one per call site).
    #[cold]
    #[inline(never)]
    pub(super) fn report(
        errors: &mut Vec<ConfigError>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        errors.push(ConfigError::new(field, message));
    }

    /// The same error about a field inside `outer` (`rollouts[2]`): `versions[0].name`
    /// becomes `rollouts[2].versions[0].name`.
    pub(super) fn within(mut self, outer: &str) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}
