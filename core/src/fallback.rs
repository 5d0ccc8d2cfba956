//! What serves when a config is refused. Pure: no host calls.
//!
//! In a mesh a refused config must not turn into 500s. Istio delivers the plugin
//! config by ECDS without a default config, so when the filter refuses an update
//! (returns `false` from `on_configure`), Envoy NACKs it and every listener created
//! afterwards gets Envoy's missing-config filter, which answers 500 to every
//! request (istio/istio#38313). So by default the filter takes the update and, in
//! the new root context, keeps serving the plugin's last good config; a plugin that
//! never had one runs in [`SafeMode`]. Refusing stays available as an opt-in
//! ([`OnBadConfig::Refuse`]), for a static bootstrap that should not start.
//!
//! Envoy creates a new root context for every new filter config, in the same VM (the
//! VM is keyed by its code and VM config, not by the plugin config); every worker has
//! its own copy of the VM. So the last good config must outlive the root context
//! that loaded it: [`LoadHistory`] is kept once per VM, keyed by the plugin (its
//! name and root id), and every VM copy sees the same sequence of loads. A VM that
//! has not seen the plugin's good config (Envoy's base VM on the main thread, which
//! is made anew to check each config; a VM restarted under FAIL_RELOAD) finds its
//! text in the proxy-wide shared data, where every good load leaves it.

use crate::config::json::{Json, Loose};

/// The environment variable (`vm_config.environment_variables`, Istio's
/// `vmConfig.env`) that chooses what a bad config does.
pub const ON_BAD_CONFIG_ENV: &str = "CANARY_ROUTER_ON_BAD_CONFIG";

/// What the filter does with a config it cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadConfig {
    /// Take it, log why it is bad, and keep serving the last good config (or run in
    /// safe mode): no listener ever ends up without a filter.
    #[default]
    Keep,
    /// Refuse it: Envoy does not start with it, and NACKs it as an xDS update.
    Refuse,
}

impl OnBadConfig {
    /// Reads the variable's value; anything but `refuse` (any case) keeps, so a
    /// typo there never makes Envoy refuse configs.
    pub fn from_env_value(value: Option<&str>) -> OnBadConfig {
        match value {
            Some(v) if v.trim().eq_ignore_ascii_case("refuse") => OnBadConfig::Refuse,
            _ => OnBadConfig::Keep,
        }
    }
}

/// What a root context with a refused config serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback<T> {
    /// The plugin's last good config in this VM.
    LastGood(T),
    /// None was ever loaded here.
    SafeMode,
}

#[derive(Debug, Clone)]
struct Plugin<T> {
    last_good: Option<T>,
    /// The newest config loaded for this plugin was refused.
    newest_refused: bool,
    /// Root contexts of this plugin alive in this VM.
    roots: u32,
}

/// The config loads of every plugin in one VM.
#[derive(Debug, Clone)]
pub struct LoadHistory<T> {
    /// By plugin key. A list: a VM serves a handful of plugins, and a map type
    /// would add its code to the `.wasm` for nothing.
    plugins: Vec<(String, Plugin<T>)>,
}

impl<T> Default for LoadHistory<T> {
    fn default() -> Self {
        LoadHistory {
            plugins: Vec::new(),
        }
    }
}

impl<T: Clone> LoadHistory<T> {
    fn plugin(&mut self, key: &str) -> &mut Plugin<T> {
        let index = match self.plugins.iter().position(|(k, _)| k == key) {
            Some(index) => index,
            None => {
                self.plugins.push((
                    key.to_string(),
                    Plugin {
                        last_good: None,
                        newest_refused: false,
                        roots: 0,
                    },
                ));
                self.plugins.len() - 1
            }
        };
        &mut self.plugins[index].1
    }

    /// A root context of `key` loaded a good config.
    pub fn loaded(&mut self, key: &str, config: T) {
        let plugin = self.plugin(key);
        plugin.last_good = Some(config);
        plugin.newest_refused = false;
        plugin.roots = plugin.roots.saturating_add(1);
    }

    /// A root context of `key` got a config it cannot use: what it serves instead.
    pub fn refused(&mut self, key: &str) -> Fallback<T> {
        let plugin = self.plugin(key);
        plugin.newest_refused = true;
        plugin.roots = plugin.roots.saturating_add(1);
        match &plugin.last_good {
            Some(config) => Fallback::LastGood(config.clone()),
            None => Fallback::SafeMode,
        }
    }

    /// A refused root context of `key` that had no last good config in this VM
    /// found one elsewhere (the proxy-wide copy): it is this VM's last good config now.
    pub fn adopted(&mut self, key: &str, config: T) {
        self.plugin(key).last_good = Some(config);
    }

    /// True while some root context is alive in this VM. A VM with none (one that
    /// only validated a config, or one going away) has nothing to report.
    pub fn has_roots(&self) -> bool {
        self.plugins.iter().any(|(_, p)| p.roots > 0)
    }

    /// A root context of `key` is gone (its listener drained, or its config was
    /// replaced). A plugin with no root context left is no longer reported stale;
    /// its last good config stays, for a listener that brings it back.
    pub fn released(&mut self, key: &str) {
        if let Some((_, plugin)) = self.plugins.iter_mut().find(|(k, _)| k == key) {
            plugin.roots = plugin.roots.saturating_sub(1);
            if plugin.roots == 0 {
                plugin.newest_refused = false;
            }
        }
    }

    /// Plugins whose newest config was refused, so that something older (or safe
    /// mode) serves: the `canary_config_stale` gauge.
    pub fn stale(&self) -> usize {
        self.plugins
            .iter()
            .filter(|(_, p)| p.roots > 0 && p.newest_refused)
            .count()
    }

    /// Of those, the plugins with no good config at all: the
    /// `canary_config_safe_mode` gauge.
    pub fn in_safe_mode(&self) -> usize {
        self.plugins
            .iter()
            .filter(|(_, p)| p.roots > 0 && p.newest_refused && p.last_good.is_none())
            .count()
    }
}

/// Safe mode: the request passes on without a decision, so the route table's
/// default route (the baseline, in every shipped route table) serves it. The
/// headers below are removed first, so that a client cannot pick a version by
/// sending the route header itself, and an override secret never reaches the
/// upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeMode {
    /// Lower-case header names to remove from every request.
    pub remove: Vec<String>,
}

impl SafeMode {
    /// From the refused config's text: the default route header, plus the
    /// `route_header`, `override.token.header` and `hash.pick_header` it names, at
    /// the top level and in every rollout, where they can be read as header names
    /// (whatever else is wrong with the config, as long as it is JSON).
    #[cold]
    #[inline(never)]
    pub fn from_refused(config: &[u8]) -> SafeMode {
        let mut remove = vec![crate::config::DEFAULT_ROUTE_HEADER.to_string()];
        // Pick mode's header too: a client-sent pick value must not decide either.
        let read = Json::new(config).loose_value();
        let mut names = Vec::new();
        if let Ok(config) = &read {
            for path in [
                &["route_header"][..],
                &["override", "token", "header"],
                &["hash", "pick_header"],
                &["rollouts", EVERY, "route_header"],
                &["rollouts", EVERY, "override", "token", "header"],
                &["rollouts", EVERY, "hash", "pick_header"],
            ] {
                strings_at(config, path, &mut names);
            }
        }
        for name in names {
            let name = name.to_ascii_lowercase();
            if is_header_name(&name) && !remove.contains(&name) {
                remove.push(name);
            }
        }
        SafeMode { remove }
    }
}

/// In a path of [`strings_at`]: every element of an array.
const EVERY: &str = "[]";

/// RFC 9110 token characters, as the config's header names are checked.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Every string at `path` in a config read leniently: an object key that is
/// there twice gives both values, [`EVERY`] walks each element of an array, and
/// a value of another type is skipped.
#[cold]
#[inline(never)]
fn strings_at<'a>(value: &'a Loose, path: &[&str], out: &mut Vec<&'a str>) {
    match (value, path) {
        (Loose::String(s), []) => out.push(s),
        (Loose::Array(elements), [step, rest @ ..]) if *step == EVERY => {
            for element in elements {
                strings_at(element, rest, out);
            }
        }
        (Loose::Object(entries), [key, rest @ ..]) => {
            for (k, v) in entries {
                if k == key {
                    strings_at(v, rest, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_config_falls_back_to_the_last_good_one_of_the_same_plugin() {
        let mut history = LoadHistory::default();
        assert_eq!(history.refused("a"), Fallback::SafeMode);
        assert_eq!((history.stale(), history.in_safe_mode()), (1, 1));
        history.loaded("a", 1);
        assert_eq!((history.stale(), history.in_safe_mode()), (0, 0));
        history.released("a");
        assert_eq!(history.refused("a"), Fallback::LastGood(1));
        assert_eq!((history.stale(), history.in_safe_mode()), (1, 0));
        // Another plugin in the same VM never borrows a's config.
        assert_eq!(history.refused("b"), Fallback::SafeMode);
        assert_eq!((history.stale(), history.in_safe_mode()), (2, 1));
        history.loaded("a", 2);
        assert_eq!(history.stale(), 1);
        assert_eq!(history.refused("a"), Fallback::LastGood(2));
    }

    #[test]
    fn a_plugin_with_no_root_context_left_is_not_stale_but_keeps_its_last_good_config() {
        let mut history = LoadHistory::default();
        history.loaded("a", 1);
        assert_eq!(history.refused("a"), Fallback::LastGood(1));
        history.released("a"); // the good root context drains
        assert_eq!(history.stale(), 1);
        history.released("a"); // the plugin is gone
        assert_eq!(history.stale(), 0);
        history.released("a"); // never below zero
        assert_eq!(history.refused("a"), Fallback::LastGood(1));
        assert_eq!(history.stale(), 1);
        history.released("unknown");
    }

    #[test]
    fn a_good_config_after_a_refused_one_clears_stale_even_before_the_refused_root_goes() {
        let mut history = LoadHistory::default();
        history.loaded("a", 1);
        history.refused("a");
        history.released("a");
        history.loaded("a", 3);
        assert_eq!(history.stale(), 0);
        history.released("a");
        assert_eq!(history.stale(), 0);
    }

    #[test]
    fn a_config_adopted_from_elsewhere_ends_safe_mode() {
        let mut history = LoadHistory::default();
        assert!(!history.has_roots());
        assert_eq!(history.refused("a"), Fallback::SafeMode);
        history.adopted("a", 7);
        assert!(history.has_roots());
        assert_eq!((history.stale(), history.in_safe_mode()), (1, 0));
        history.released("a");
        assert!(!history.has_roots());
        assert_eq!(history.refused("a"), Fallback::LastGood(7));
    }

    #[test]
    fn only_refuse_refuses() {
        assert_eq!(OnBadConfig::from_env_value(None), OnBadConfig::Keep);
        assert_eq!(OnBadConfig::from_env_value(Some("keep")), OnBadConfig::Keep);
        assert_eq!(
            OnBadConfig::from_env_value(Some("refuze")),
            OnBadConfig::Keep
        );
        assert_eq!(
            OnBadConfig::from_env_value(Some(" Refuse\n")),
            OnBadConfig::Refuse
        );
    }

    #[test]
    fn safe_mode_removes_the_route_and_token_headers_it_can_read() {
        let remove = |json: &str| SafeMode::from_refused(json.as_bytes()).remove;
        assert_eq!(remove(""), ["x-canary-version"]);
        assert_eq!(remove("{\"versions\":"), ["x-canary-version"]);
        assert_eq!(
            remove(
                r#"{"route_header":"X-Version","versions":[],"override":{"token":{"header":"x-token","values":[]}},"bogus":1}"#
            ),
            ["x-canary-version", "x-version", "x-token"]
        );
        // Unreadable or malformed names are skipped, the default stays.
        assert_eq!(
            remove(r#"{"route_header":7,"override":{"token":{"header":"bad name"}}}"#),
            ["x-canary-version"]
        );
        assert_eq!(
            remove(r#"{"route_header":{"a":[1]},"override":{"token":{"header":"X-Secret"}}}"#),
            ["x-canary-version", "x-secret"]
        );
        assert_eq!(
            remove(r#"{"route_header":"x-canary-version"}"#),
            ["x-canary-version"]
        );
        assert_eq!(remove(r#"[1,2]"#), ["x-canary-version"]);
        assert_eq!(
            remove(r#"{"versions":[],"hash":{"pick_header":"X-Canary-Pick","pick_total":0}}"#),
            ["x-canary-version", "x-canary-pick"]
        );
        // Nesting deeper than serde_json's limit is refused, not followed (the
        // stack of a Wasm VM is small).
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(remove(&deep), ["x-canary-version"]);
        let deep = format!(
            r#"{{"route_header":"x-a","z":{}1{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        );
        assert_eq!(remove(&deep), ["x-canary-version", "x-a"]);
        // Every rollout's headers, whatever else is wrong with it.
        assert_eq!(
            remove(
                r#"{"rollouts":[{"name":"a","route_header":"X-A","hash":{"pick_header":"x-pick-a"}},
                   7, {"route_header":"x-b","override":{"token":{"header":"x-tok"}},"versions":"bad"},
                   {"route_header":["x-c"]}, {"route_header":"x-canary-version"}],
                  "route_header":"x-top"}"#
            ),
            [
                "x-canary-version",
                "x-top",
                "x-a",
                "x-b",
                "x-tok",
                "x-pick-a"
            ]
        );
        assert_eq!(
            remove(r#"{"rollouts":{"route_header":"x-not-a-list"}}"#),
            ["x-canary-version"]
        );
        // A section of the wrong type hides nothing else, and a name given twice
        // is removed both times.
        assert_eq!(
            remove(
                r#"{"hash":7,"versions":"x","route_header":"x-a","override":[],"route_header":"x-b"}"#
            ),
            ["x-canary-version", "x-a", "x-b"]
        );
    }
}
