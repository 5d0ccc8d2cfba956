//! `users`: user IDs pinned to a version, checked against the versions and the
//! hash config that reads the user ID.

use super::error::ConfigError;
use super::hash::HashConfig;
use super::versions::Version;
use std::collections::BTreeMap;

/// `users` as written: version name -> user IDs, in name order; a name given
/// twice keeps its last list, as with any JSON object read into a map. A list
/// rather than a map type: the filter only walks it once, and a map type would
/// add its code to the `.wasm` (config/json/ builds it).
pub(super) struct UserLists(pub(super) Vec<(String, Vec<String>)>);

// The serde shape, for the reference the reader is tested against and for the
// schema: a map from version name to user IDs. Never called in the filter.
impl<'de> serde::Deserialize<'de> for UserLists {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, Vec<String>>::deserialize(d).map(|m| UserLists(m.into_iter().collect()))
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for UserLists {
    fn inline_schema() -> bool {
        <BTreeMap<String, Vec<String>>>::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, Vec<String>>>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, Vec<String>>>::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, Vec<String>>>::json_schema(generator)
    }
}

/// User ID -> version index, looked up for every request that carries a user ID.
/// hashbrown's map with its default hasher (foldhash), which the SDK links into
/// the `.wasm` anyway, rather than std's (SipHash, keyed from the host's random
/// source): less code, and a cheaper hash per lookup. Flooding is no concern: the
/// keys come from the config alone, and a request only looks one up.
pub type UserIndex = hashbrown::HashMap<Box<[u8]>, usize>;

/// User ID -> version index; empty without `users`.
#[cold]
#[inline(never)]
pub(super) fn validate_users(
    users: Option<UserLists>,
    hash: &HashConfig,
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> UserIndex {
    let Some(UserLists(users)) = users else {
        return UserIndex::new();
    };
    if !users.is_empty() && hash.header.is_none() && hash.cookie.is_none() {
        ConfigError::report(
            errors,
            "users",
            "needs hash.header or hash.cookie to read the user ID from",
        );
    }
    users_by_id(&users, versions, errors)
}

#[cold]
#[inline(never)]
fn users_by_id(
    users: &[(String, Vec<String>)],
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> UserIndex {
    let mut map = UserIndex::new();
    for (version, ids) in users {
        let field = format!("users.{version}");
        let Some(index) = versions.iter().position(|v| &v.name == version) else {
            ConfigError::report(errors, field, format!("no version is named `{version}`"));
            continue;
        };
        for (j, id) in ids.iter().enumerate() {
            if id.is_empty() {
                ConfigError::report(
                    errors,
                    format!("{field}[{j}]"),
                    "an empty user ID never matches (an empty value counts as no user ID)",
                );
                continue;
            }
            // The first version that lists an ID keeps it; a later one is named.
            match map.get(id.as_bytes()) {
                Some(&first) if first != index => {
                    let other = versions.get(first).map_or("?", |v| v.name.as_str());
                    ConfigError::report(
                        errors,
                        format!("{field}[{j}]"),
                        format!("this user ID is also listed under users.{other}"),
                    );
                }
                Some(_) => {}
                None => {
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
