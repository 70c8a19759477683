//! Configuration: a TOML file (optional) layered under `TURBOCHAT_*`
//! environment variables, deserialized into the caller's serde struct.
//!
//! Nested keys use `__` in variable names: `TURBOCHAT_STORE__URL` sets
//! `store.url`, `TURBOCHAT_ROUTER__NODES='["http://127.0.0.1:7101"]'` sets a
//! list. Errors name the key and the reason.

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
        // figment's error names the key path and the source (file or env var).
        let all: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Invalid(all.join("; "))
    }
}

/// Loads `T` from the file at `path` (if given) and the environment.
/// Variables win over the file; struct defaults fill the rest.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::FileNotFound(path.display().to_string()));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed("TURBOCHAT_").split("__"));
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
    struct Conf {
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize)]
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
    fn missing_file_is_an_error() {
        let err = load::<Conf>(Some(Path::new("/nonexistent/x.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::FileNotFound(_)));
    }
}
