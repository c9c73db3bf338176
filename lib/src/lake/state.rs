//! Weir's own state beside a table's data: small JSON files under the
//! table's `_weir/` folder, which Delta readers and vacuum leave alone
//! (a folder starting with `_` is hidden to both).
//!
//! Each file is a cache a run can lose without losing data (the ingested
//! files of [`crate::ingest`], the z-order record of [`crate::maintain`]):
//! a file that is missing or cannot be read or parsed reads as `None`, with
//! a warning naming what it costs, and a failed write is a warning too.

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The folder, relative to a table's root.
pub const FOLDER: &str = "_weir";

/// `_weir/<parts...>` in a table's folder.
pub fn path(parts: &[&str]) -> ObjectPath {
    ObjectPath::from_iter(std::iter::once(FOLDER).chain(parts.iter().copied()))
}

/// Reads `path`; `what` names the file and `cost` what losing it costs,
/// for the warning.
pub async fn read<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    what: &str,
    cost: &str,
) -> Option<T> {
    let bytes = match store.get(path).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => return None,
        Err(e) => {
            tracing::warn!(file = %path, error = %e, "could not read {what}; {cost}");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(file = %path, error = %e, "{what} is not readable; {cost}");
            None
        }
    }
}

/// Writes `value` to `path`; a failure is a warning (see [`read`]).
pub async fn write<T: Serialize>(store: &dyn ObjectStore, path: &ObjectPath, value: &T, what: &str, cost: &str) {
    let bytes = serde_json::to_vec(value).expect("state files serialise");
    if let Err(e) = store.put(path, PutPayload::from(bytes)).await {
        tracing::warn!(file = %path, error = %e, "could not write {what}; {cost}");
    }
}
