//! The crate's error type.
//!
//! Every error knows its [`ErrorClass`], which is what the binary turns into
//! an exit code: schedulers retry `Retryable`, never retry `Config`, and page a
//! human for `Data`. Messages name the file, record or key they are about and
//! never contain secrets (storage errors are rendered from the URL without
//! query string or credentials).

use std::path::PathBuf;

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a scheduler should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Invalid usage or configuration: retrying cannot help.
    Config,
    /// The input data is bad (corrupt file, failed expectation): a human must look.
    Data,
    /// Storage or concurrency trouble that a later run may not see.
    Retryable,
    /// A defect in Weir itself.
    Internal,
}

/// Errors raised by Weir.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file could not be read, parsed or validated.
    #[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    InvalidPipeline {
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },

    /// A location in the pipeline is not usable.
    #[error("invalid location {location:?}: {reason}")]
    InvalidLocation {
        /// The location as written (without secrets).
        location: String,
        /// Why it was refused.
        reason: String,
    },

    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// Object storage failed (listing or reading source files).
    #[error("storage error at {url}: {message}")]
    Storage {
        /// The URL involved, without credentials.
        url: String,
        /// The cause, rendered.
        message: String,
    },

    /// Storage refused the credentials (authentication or permission).
    #[error("storage at {url} refused access: {message}; check the AZURE_* credentials and the identity's role on the container")]
    StorageAccess {
        /// The URL involved, without credentials.
        url: String,
        /// The cause, rendered without secrets.
        message: String,
    },

    /// A Delta table operation failed.
    #[error("delta table {table}: {}", crate::redact::scrub(&without_backtrace(&source.to_string())))]
    Delta {
        /// The table URL.
        table: String,
        /// The cause.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// A file of a table's log cannot be read as a commit: the table needs
    /// a human (restore the file from a backup or the store's versioning).
    #[error("delta table {table}: its log file {file} is damaged ({reason}); restore it from a backup or the store's object versioning — nothing is read or written until it is readable")]
    DamagedLog {
        /// The table URL.
        table: String,
        /// The damaged file, relative to the table.
        file: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Another writer committed the same progress marker first.
    #[error("delta table {table}: another job committed to it while this one worked ({app_id}); this commit was not made and nothing was written twice; rerun to continue")]
    ConcurrentProgress {
        /// The table URL.
        table: String,
        /// The application transaction id that conflicted.
        app_id: String,
    },

    /// A secret the pipeline needs is missing or unusable. The message names
    /// the environment variable, never its value.
    #[error("{message}")]
    Secret {
        /// What is wrong.
        message: String,
    },

    /// The pipeline now produces rows the existing table cannot take.
    #[error("table {table}: the schema change is not compatible:\n  {}", changes.join("\n  "))]
    SchemaChange {
        /// The table (without secrets).
        table: String,
        /// Each breaking change with what to do.
        changes: Vec<String>,
    },

    /// A repair run would mix the outputs of two pipeline configurations.
    #[error("{message}")]
    RepairConflict {
        /// What happened and what to do.
        message: String,
    },

    /// An expectation could not be evaluated on the data (e.g. a division by
    /// zero or a strict cast of bad text inside its SQL).
    #[error("rule {rule:?} could not be evaluated: {message}; make the expression total (e.g. NULLIF, TRY_CAST) or fix the data")]
    RuleError {
        /// The rule name.
        rule: String,
        /// What DataFusion said.
        message: String,
    },

    /// A curated model could not run or produced rows its declaration
    /// forbids (duplicate or null keys, rows outside the recomputed scope).
    #[error("curated table {table:?}: {message}")]
    Model {
        /// The curated table name.
        table: String,
        /// What went wrong and what to do.
        message: String,
    },

    /// A vacuum would delete files younger than the table's safety window.
    #[error("table {table}: {message}")]
    UnsafeVacuum {
        /// The table name.
        table: String,
        /// Why, and what to do.
        message: String,
    },

    /// A file given on the command line cannot be used.
    #[error("{}: {message}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// Another job holds the table's rewrite lease (see
    /// [`crate::delta::REWRITE_APP_ID`]).
    #[error("delta table {table}: another job (weir maintain, {holder}) is rewriting its files, holding it until {until} at the latest; nothing was written; rerun after it")]
    TableBusy {
        /// The table URL.
        table: String,
        /// When the lease runs out (RFC 3339).
        until: String,
        /// Who holds it: process, host and run.
        holder: String,
    },

    /// A request that cannot be carried out as given (e.g. an erase naming
    /// a field that is not a subject key).
    #[error("{message}")]
    Request {
        /// What is wrong, and what to give instead.
        message: String,
    },

    /// An unexpected internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// What a scheduler should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidPipeline { .. }
            | Error::InvalidLocation { .. }
            | Error::Secret { .. }
            | Error::SchemaChange { .. }
            | Error::Model { .. }
            | Error::StorageAccess { .. }
            | Error::UnsafeVacuum { .. }
            | Error::BadInput { .. }
            | Error::Request { .. }
            | Error::RepairConflict { .. } => ErrorClass::Config,
            // Disk full, read-only mount, permissions: an operator fixes it, then a rerun works.
            Error::Io { .. } => ErrorClass::Retryable,
            Error::Storage { .. } | Error::ConcurrentProgress { .. } | Error::TableBusy { .. } => ErrorClass::Retryable,
            Error::Delta { source, .. } => delta_error_class(source),
            Error::RuleError { .. } | Error::DamagedLog { .. } => ErrorClass::Data,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// An object-store failure at `url`: access problems are configuration,
    /// everything else (outages, throttling past the retries) retryable.
    pub(crate) fn storage(url: &impl std::fmt::Display, e: object_store::Error) -> Self {
        let url = crate::redact::redact(&url.to_string());
        let message = crate::redact::scrub(&e.to_string());
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                Error::StorageAccess { url, message }
            }
            _ => Error::Storage { url, message },
        }
    }

    /// A query engine error (DataFusion, Arrow, Parquet) on `url`: classified
    /// by the storage failure in its chain when there is one (retryable, or
    /// access refused), else `otherwise` — so a storage outage in the middle
    /// of a query is a storage error wherever the query runs.
    pub(crate) fn query(
        url: &impl std::fmt::Display,
        cause: &(dyn std::error::Error + 'static),
        otherwise: impl FnOnce() -> Error,
    ) -> Self {
        let url = crate::redact::redact(&url.to_string());
        let message = crate::redact::scrub(&without_backtrace(&cause.to_string()));
        match storage_class(cause) {
            Some(ErrorClass::Config) => Error::StorageAccess { url, message },
            Some(_) => Error::Storage { url, message },
            None => otherwise(),
        }
    }

    pub(crate) fn delta(table: &impl std::fmt::Display, source: deltalake::DeltaTableError) -> Self {
        Error::Delta { table: crate::redact::redact(&table.to_string()), source: Box::new(source) }
    }
}

/// An error's text without the backtrace some libraries render into it
/// (the Delta kernel does when `RUST_BACKTRACE` is set): reports and logs
/// carry the message, not the frames.
pub(crate) fn without_backtrace(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("0: ") || t == "stack backtrace:" {
            break;
        }
        out.push(line);
    }
    out.join("\n").trim_end().to_string()
}

fn delta_error_class(e: &deltalake::DeltaTableError) -> ErrorClass {
    use deltalake::DeltaTableError as E;
    match e {
        E::ObjectStore { source, .. } => match source {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                ErrorClass::Config
            }
            _ => ErrorClass::Retryable,
        },
        E::Transaction { source } => match source {
            deltalake::kernel::transaction::TransactionError::CommitConflict(_)
            | deltalake::kernel::transaction::TransactionError::VersionAlreadyExists(_)
            | deltalake::kernel::transaction::TransactionError::MaxCommitAttempts(_)
            | deltalake::kernel::transaction::TransactionError::ObjectStore { .. } => ErrorClass::Retryable,
            _ => ErrorClass::Config,
        },
        E::VersionAlreadyExists(_) => ErrorClass::Retryable,
        E::Io { .. } => ErrorClass::Retryable,
        E::InvalidTableLocation(_) | E::NotATable(_) => ErrorClass::Config,
        E::SchemaMismatch { .. } => ErrorClass::Config,
        // Storage failures reach Weir wrapped in kernel and generic errors.
        other => storage_class(other).unwrap_or(ErrorClass::Internal),
    }
}

/// The class of a storage failure somewhere in `e`'s chain: access refused
/// is configuration, anything else storage did (outage, throttling past the
/// retries, a failed upload, disk full, a read-only mount) is retryable.
/// `None` when storage is not involved.
///
/// Hazard: Parquet's writer wraps object-store errors in an `io::Error`,
/// whose `source()` skips the wrapped error itself; the walk looks inside.
fn storage_class(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(os) = err.downcast_ref::<object_store::Error>() {
            return Some(match os {
                object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                    ErrorClass::Config
                }
                _ => ErrorClass::Retryable,
            });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let inner = io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static));
            return Some(inner.and_then(storage_class).unwrap_or(ErrorClass::Retryable));
        }
        current = err.source();
    }
    // The kernel renders object-store errors into text.
    let text = e.to_string();
    if text.contains("lacked the necessary privileges") || text.contains("not authenticated") {
        Some(ErrorClass::Config)
    } else if text.contains("Error interacting with object store")
        || text.contains("error sending request")
        // DataFusion's Parquet reader renders the object-store error into text.
        || text.contains("Object Store error")
    {
        Some(ErrorClass::Retryable)
    } else {
        None
    }
}

/// A problem found in a pipeline file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `tables.raw.path` (empty for the whole file).
    pub path: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, ErrorClass};

    /// As Parquet's async writer reports a failed upload: the object-store
    /// error inside an `io::Error` inside `ParquetError::External`.
    fn failed_upload(store: object_store::Error) -> Error {
        let wrapped = std::io::Error::other(store);
        let parquet = deltalake::parquet::errors::ParquetError::External(Box::new(wrapped));
        Error::delta(&"file:///lake/raw/", deltalake::DeltaTableError::from(parquet))
    }

    /// A query that fails because storage failed under it is storage's
    /// failure wherever it runs (a curated model, a dedup read, an erase);
    /// any other query failure is what the caller says it is.
    #[test]
    fn query_errors_are_classified_by_the_storage_failure_in_their_chain() {
        use deltalake::datafusion::error::DataFusionError;
        let outage = object_store::Error::Generic { store: "MicrosoftAzure", source: "503 Service Unavailable".into() };
        let wrapped =
            DataFusionError::Context("scanning".into(), Box::new(DataFusionError::ObjectStore(Box::new(outage))));
        let model = || Error::Model { table: "t".into(), message: "bad SQL".into() };
        assert_eq!(Error::query(&"az://lake/t", &wrapped, model).class(), ErrorClass::Retryable);
        let refused = object_store::Error::PermissionDenied { path: "t".into(), source: "403".into() };
        let refused = DataFusionError::External(Box::new(refused));
        assert_eq!(Error::query(&"az://lake/t", &refused, model).class(), ErrorClass::Config);
        let plan = DataFusionError::Plan("no column x".into());
        assert!(matches!(Error::query(&"az://lake/t", &plan, model), Error::Model { .. }));
    }

    #[test]
    fn a_failed_parquet_upload_is_classified_by_the_storage_error_inside() {
        let io = std::io::Error::new(std::io::ErrorKind::NotADirectory, "Not a directory (os error 20)");
        let e = failed_upload(object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(io) });
        assert_eq!(e.class(), ErrorClass::Retryable, "{e}");
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = failed_upload(object_store::Error::PermissionDenied { path: "x".into(), source: Box::new(denied) });
        assert_eq!(e.class(), ErrorClass::Config, "{e}");
        // An I/O failure with nothing inside (disk full) is retryable too.
        let full = deltalake::parquet::errors::ParquetError::External(Box::new(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "No space left on device",
        )));
        let e = Error::delta(&"file:///lake/raw/", deltalake::DeltaTableError::from(full));
        assert_eq!(e.class(), ErrorClass::Retryable, "{e}");
    }
}
