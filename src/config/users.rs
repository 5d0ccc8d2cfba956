//! `users`: user IDs pinned to a version, checked against the versions and the
//! hash config that reads the user ID.

use super::error::ConfigError;
use super::hash::HashConfig;
use super::versions::Version;
use std::collections::{BTreeMap, HashMap};

/// User ID -> version index; empty without `users`.
#[cold]
#[inline(never)]
pub(super) fn validate_users(
    users: Option<BTreeMap<String, Vec<String>>>,
    hash: &HashConfig,
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> HashMap<Box<[u8]>, usize> {
    let Some(users) = users else {
        return HashMap::new();
    };
    if !users.is_empty() && hash.header.is_none() && hash.cookie.is_none() {
        errors.push(ConfigError::new(
            "users",
            "needs hash.header or hash.cookie to read the user ID from",
        ));
    }
    users_by_id(&users, versions, errors)
}

#[cold]
#[inline(never)]
fn users_by_id(
    users: &BTreeMap<String, Vec<String>>,
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> HashMap<Box<[u8]>, usize> {
    let mut map: HashMap<Box<[u8]>, usize> = HashMap::new();
    let mut listed_under: HashMap<&str, &str> = HashMap::new();
    for (version, ids) in users {
        let field = format!("users.{version}");
        let Some(index) = versions.iter().position(|v| &v.name == version) else {
            errors.push(ConfigError::new(
                field,
                format!("no version is named `{version}`"),
            ));
            continue;
        };
        for (j, id) in ids.iter().enumerate() {
            if id.is_empty() {
                errors.push(ConfigError::new(
                    format!("{field}[{j}]"),
                    "an empty user ID never matches (an empty value counts as no user ID)",
                ));
                continue;
            }
            match listed_under.insert(id.as_str(), version.as_str()) {
                Some(other) if other != version => errors.push(ConfigError::new(
                    format!("{field}[{j}]"),
                    format!("this user ID is also listed under users.{other}"),
                )),
                _ => {
                    map.insert(id.as_bytes().into(), index);
                }
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use crate::config::tests::assert_rejected;

    #[test]
    fn user_list_errors_name_their_field() {
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"hash":{"header":"u"},"users":{"canary":["a"]}}"#,
            "users.canary: no version is named `canary`",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"hash":{"header":"u"},"users":{"c":["a",""]}}"#,
            "users.c[1]: an empty user ID never matches",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"hash":{"header":"u"},"users":{"c":["a"],"s":["b","a"]}}"#,
            "users.s[1]: this user ID is also listed under users.c",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"users":{"c":["a"]}}"#,
            "users: needs hash.header or hash.cookie",
        );
    }
}
