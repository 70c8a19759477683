//! Configuration: a TOML file (optional) layered under `TURBOCHAT_*`
//! environment variables, deserialized into the caller's serde struct.
//!
//! Nested keys use `__` in variable names: `TURBOCHAT_STORE__URL` sets
//! `store.url`, `TURBOCHAT_ROUTER__NODES='["http://127.0.0.1:7101"]'` sets a
//! list. Only variables of that shape are configuration: `TURBOCHAT_CONFIG`,
//! `TURBOCHAT_LOG_FORMAT` and the like are for the launcher and logs. Errors
//! name the dotted key, the reason and where the value came from; an unknown
//! key is an error, not a silent no-op.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named on the command line does not exist.
    #[error("config file {0} not found")]
    FileNotFound(String),
    /// A key is missing, mistyped or has a bad value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        let all: Vec<String> = err.into_iter().map(describe).collect();
        ConfigError::Invalid(all.join("; "))
    }
}

/// `section.key: what is wrong (from where)`.
fn describe(err: figment::Error) -> String {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let what = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key (known here: {})", expected.join(", "))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing".to_string()
        }
        other => other.to_string(),
    };
    let key = if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.join(".")
    };
    let from = match &err.metadata {
        Some(metadata) => match &metadata.source {
            Some(file) => format!(" (in {file})"),
            None if metadata.name.contains("environment") && !path.is_empty() => {
                format!(" (from TURBOCHAT_{})", path.join("__").to_uppercase())
            }
            None => format!(" (from {})", metadata.name),
        },
        None => String::new(),
    };
    format!("{key}: {what}{from}")
}

/// The built-in configuration: `configs/dev.toml`, the embedded default
/// (SQLite under `data/`, HS256 with the public development secret). A
/// binary started with no `--config` and no `TURBOCHAT_CONFIG` runs on it,
/// with `TURBOCHAT_*` variables over it.
pub const BUILTIN: &str = include_str!("../../configs/dev.toml");

/// Loads `T` from the file at `path` (or, with none, from [`BUILTIN`]) and
/// the environment. Variables win over the file; struct defaults fill the
/// rest.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, ConfigError> {
    load_or(path, BUILTIN)
}

/// [`load`] with another built-in configuration (TOML text) for when no
/// file is given.
pub fn load_or<T: DeserializeOwned>(path: Option<&Path>, builtin: &str) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    match path {
        Some(path) => {
            if !path.exists() {
                return Err(ConfigError::FileNotFound(path.display().to_string()));
            }
            figment = figment.merge(Toml::file(path));
        }
        None => figment = figment.merge(Toml::string(builtin)),
    }
    figment = figment.merge(
        Env::prefixed("TURBOCHAT_")
            .filter(|key| key.as_str().contains("__"))
            .split("__"),
    );
    Ok(figment.extract()?)
}

/// A validation failure for one key, e.g. `ConfigError::key("store.url", "must be set")`.
impl ConfigError {
    /// Builds an `Invalid` error naming the key and the reason.
    pub fn key(key: &str, reason: impl std::fmt::Display) -> Self {
        ConfigError::Invalid(format!("{key}: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        port: u16,
        #[serde(default)]
        name: String,
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[inner]\nport = 1\nname = \"file\"\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_INNER__PORT", "2");
            let conf: Conf = load(Some(&file)).map_err(|e| e.to_string())?;
            assert_eq!(conf.inner.port, 2);
            assert_eq!(conf.inner.name, "file");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn bad_value_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[inner]\nport = \"x\"\n").unwrap();
        // Inside a jail: another test sets TURBOCHAT_* variables in one.
        figment::Jail::expect_with(|_| {
            let err = load::<Conf>(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("inner.port"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[inner]\nprot = 1\n").unwrap();
        figment::Jail::expect_with(|_| {
            let err = load::<Conf>(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("inner.prot: unknown key"), "{err}");
            assert!(err.contains("port"), "says what is known: {err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_INNER__NAEM", "x");
            let err = load_or::<Conf>(None, "").unwrap_err().to_string();
            assert!(err.contains("inner.naem: unknown key"), "{err}");
            assert!(
                err.contains("TURBOCHAT_INNER__NAEM"),
                "names the variable: {err}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn variables_that_are_not_keys_are_not_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_CONFIG", "/etc/turbochat.toml");
            jail.set_env("TURBOCHAT_LOG_FORMAT", "json");
            jail.set_env("TURBOCHAT_INNER__PORT", "7");
            let conf: Conf = load_or(None, "").map_err(|e| e.to_string())?;
            assert_eq!(conf.inner.port, 7);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn with_no_file_the_builtin_development_config_applies() {
        #[derive(Debug, Deserialize)]
        struct Node {
            node: NodeId,
        }
        #[derive(Debug, Deserialize)]
        struct NodeId {
            id: String,
        }
        figment::Jail::expect_with(|_| {
            let node: Node = load(None).map_err(|e| e.to_string())?;
            assert_eq!(node.node.id, "node-1");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Conf>(Some(Path::new("/nonexistent/x.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::FileNotFound(_)));
    }
}
