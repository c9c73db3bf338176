//! Locations: local paths and object-store URLs, one type for both.
//!
//! Every place that takes a location (capture source, tables) goes through
//! [`Location`]. Local paths are made absolute against the working directory
//! and become `file://` URLs, so the rest of Weir sees URLs only.
//!
//! Hazard: URLs can carry secrets (a SAS token in the query, a password in
//! the authority). [`Location`]'s `Display` never shows them; credentials come
//! from the environment (object_store's `AZURE_*` variables), not the file.

pub mod azure;
pub mod emulator;
pub mod fault;

use std::collections::HashMap;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use url::Url;

pub use crate::redact::{redact, scrub};
use crate::{Error, Result};

/// URL schemes Weir accepts, and what they are.
const SCHEMES: &[(&str, &str)] = &[
    ("file", "local file system"),
    ("abfss", "Azure Data Lake Storage Gen2"),
    ("abfs", "Azure Data Lake Storage Gen2"),
    ("az", "Azure Blob Storage"),
    ("azure", "Azure Blob Storage"),
    ("adl", "Azure Data Lake"),
];

/// A data location: a local folder or an object-store URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    url: Url,
}

impl Location {
    /// Parses a location as written in a pipeline file, as the crate's
    /// configuration error naming it.
    pub fn resolve(s: &str) -> Result<Location> {
        Location::parse(s).map_err(|reason| Error::InvalidLocation { location: s.to_string(), reason })
    }

    /// Parses a location as written in a pipeline file.
    pub fn parse(s: &str) -> std::result::Result<Location, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("location is empty".to_string());
        }
        if s.contains("://") {
            let url = Url::parse(s).map_err(|e| format!("{}: not a valid URL: {e}", redact(s)))?;
            if !SCHEMES.iter().any(|(scheme, _)| *scheme == url.scheme()) {
                let known: Vec<&str> = SCHEMES.iter().map(|(s, _)| *s).collect();
                return Err(format!(
                    "unsupported URL scheme '{}' (supported: {}, or a local path)",
                    url.scheme(),
                    known.join(", ")
                ));
            }
            return Ok(Location { url });
        }
        let path = std::path::Path::new(s);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(|e| format!("cannot resolve relative path {s:?}: {e}"))?.join(path)
        };
        let abs = normalize(&abs);
        let url = Url::from_directory_path(&abs).map_err(|_| format!("{s:?} is not a usable local path"))?;
        Ok(Location { url })
    }

    /// The location as a URL (may hold secrets: do not print it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// True for `file://` locations.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    /// The local folder, for `file://` locations.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        if self.is_local() {
            self.url.to_file_path().ok()
        } else {
            None
        }
    }

    /// A child location (`name` is a relative path with `/` separators).
    pub fn join(&self, name: &str) -> Location {
        let mut url = self.url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Location { url: url.join(name).unwrap_or_else(|_| self.url.clone()) }
    }

    /// An object store rooted at the store's root, and the prefix of this
    /// location inside it.
    pub fn object_store(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        if let Some(dir) = self.local_path() {
            let store = object_store::local::LocalFileSystem::new();
            let prefix = ObjectPath::from_filesystem_path(&dir)
                .map_err(|e| Error::InvalidLocation { location: self.to_string(), reason: e.to_string() })?;
            return Ok((fault::wrap(Arc::new(store)), prefix));
        }
        let invalid = |e: &dyn std::fmt::Display| Error::InvalidLocation {
            location: self.to_string(),
            reason: scrub(&e.to_string()),
        };
        let (scheme, prefix) = object_store::ObjectStoreScheme::parse(&self.url).map_err(|e| invalid(&e))?;
        if scheme == object_store::ObjectStoreScheme::MicrosoftAzure {
            use std::str::FromStr as _;
            let mut builder = object_store::azure::MicrosoftAzureBuilder::new()
                .with_url(self.url.as_str())
                .with_retry(retry_config());
            for (key, value) in storage_options_from_env() {
                if let Ok(key) = object_store::azure::AzureConfigKey::from_str(&key) {
                    builder = builder.with_config(key, value);
                }
            }
            return Ok((Arc::new(builder.build().map_err(|e| invalid(&e))?), prefix));
        }
        let (store, prefix) = object_store::parse_url_opts(&self.url, storage_options_from_env())
            .map_err(|e| Error::InvalidLocation { location: self.to_string(), reason: scrub(&e.to_string()) })?;
        Ok((Arc::from(store), prefix))
    }
}

/// Storage options for delta-rs and object_store, from the environment:
/// the `AZURE_*` variables (credentials, emulator switch) and the retry
/// policy. Nothing is logged.
pub fn storage_options_from_env() -> HashMap<String, String> {
    let retry = retry_config();
    let mut options: HashMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("AZURE_")).map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    options.insert("max_retries".into(), retry.max_retries.to_string());
    options.insert("retry_timeout".into(), format!("{}s", retry.retry_timeout.as_secs()));
    options
}

/// How storage requests are retried: object_store's exponential backoff
/// (100 ms doubling up to 15 s) on throttling, server errors and timeouts,
/// at most `WEIR_STORAGE_MAX_RETRIES` times (default 10) and for at most
/// `WEIR_STORAGE_RETRY_TIMEOUT` seconds from the first attempt (default
/// 180). What still fails is a retryable error (exit 75) naming the URL.
pub fn retry_config() -> object_store::RetryConfig {
    let number =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default);
    object_store::RetryConfig {
        max_retries: number("WEIR_STORAGE_MAX_RETRIES", 10) as usize,
        retry_timeout: std::time::Duration::from_secs(number("WEIR_STORAGE_RETRY_TIMEOUT", 180)),
        ..Default::default()
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(self.url.as_str()))
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

/// Lexically removes `.` and `..` components.
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_urls() {
        let loc = Location::parse("/tmp/x/../lake/raw").unwrap();
        assert_eq!(loc.url().as_str(), "file:///tmp/lake/raw/");
        assert!(loc.is_local());
        assert_eq!(loc.join("_delta_log").url().as_str(), "file:///tmp/lake/raw/_delta_log");
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        let loc = Location::parse("az://container/path?sv=2024&sig=SECRET").unwrap();
        assert!(!loc.to_string().contains("SECRET"), "{loc}");
        let msg = scrub("Error performing GET https://acct.blob.core.windows.net/c/x?sv=2024&sig=SECRET in 1s");
        assert_eq!(msg, "Error performing GET https://acct.blob.core.windows.net/c/x?REDACTED in 1s");
        assert!(!scrub("token sv=1&sig=SECRET rejected").contains("SECRET"));
        let err = Location::parse("ftp://host/x").unwrap_err();
        assert!(err.contains("unsupported URL scheme 'ftp'"), "{err}");
        assert!(Location::parse("").is_err());
    }
}
