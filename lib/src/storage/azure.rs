//! Azure commits that survive the difference between Azure and its emulator.
//!
//! Delta commits on Azure are create-if-absent copies (`If-None-Match: *`):
//! the loser of a commit race must see "already exists" so that delta-rs
//! checks for conflicts and retries at the next version. Azurite answers the
//! losing create with 409, which object_store reports as `AlreadyExists`;
//! real Azure may answer 412, which object_store reports as `Precondition`,
//! and delta-rs would fail the commit instead of retrying. And a 409 is not
//! always a race: a full store answers 409 too, and treating that as a race
//! would retry commits that can never land.
//!
//! [`CreateGuard`] wraps the Azure object store delta-rs uses and makes
//! every create-if-absent (put, copy, rename) report `AlreadyExists` exactly
//! when the target exists: a 412 becomes `AlreadyExists`, a 409 whose target
//! is absent becomes a plain storage error naming the object.

use std::fmt;
use std::sync::{Arc, Once};

use async_trait::async_trait;
use deltalake::logstore::{object_store_factories, ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use deltalake::{DeltaResult, Path as DeltaPath};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt as _, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    RenameTargetMode, Result,
};
use url::Url;

/// An object store whose create-if-absent operations fail with
/// `AlreadyExists` if and only if the target exists.
#[derive(Debug)]
pub struct CreateGuard {
    inner: Arc<dyn ObjectStore>,
}

impl CreateGuard {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CreateGuard { inner }
    }

    /// The error a create-if-absent at `target` should report for `err`.
    async fn create_error(&self, target: &Path, err: object_store::Error) -> object_store::Error {
        match err {
            object_store::Error::Precondition { path, source } => object_store::Error::AlreadyExists { path, source },
            object_store::Error::AlreadyExists { path, source } => match self.inner.head(target).await {
                Err(object_store::Error::NotFound { .. }) => object_store::Error::Generic {
                    store: "Azure",
                    source: format!(
                        "the store refused to create {path} (409) although nothing exists there: not a lost commit race (is the account full or read-only?): {source}"
                    )
                    .into(),
                },
                _ => object_store::Error::AlreadyExists { path, source },
            },
            other => other,
        }
    }
}

impl fmt::Display for CreateGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreateGuard({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CreateGuard {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let create = matches!(opts.mode, PutMode::Create);
        match self.inner.put_opts(location, payload, opts).await {
            Err(e) if create => Err(self.create_error(location, e).await),
            other => other,
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let create = matches!(options.mode, CopyMode::Create);
        match self.inner.copy_opts(from, to, options).await {
            Err(e) if create => Err(self.create_error(to, e).await),
            other => other,
        }
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let mode = match options.target_mode {
            RenameTargetMode::Overwrite => CopyMode::Overwrite,
            RenameTargetMode::Create => CopyMode::Create,
        };
        self.copy_opts(from, to, CopyOptions { mode, extensions: options.extensions }).await?;
        self.inner.delete(from).await
    }
}

/// delta-rs's Azure store factory, with every store wrapped in a
/// [`CreateGuard`].
#[derive(Debug, Default)]
struct GuardedAzureFactory;

impl ObjectStoreFactory for GuardedAzureFactory {
    fn parse_url_opts(&self, url: &Url, config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, DeltaPath)> {
        let (store, prefix) = deltalake::azure::AzureFactory::default().parse_url_opts(url, config)?;
        Ok((Arc::new(CreateGuard::new(store)), prefix))
    }
}

/// Makes delta-rs open Azure tables through [`CreateGuard`]. Idempotent;
/// every table access in Weir calls it first.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["az", "adl", "azure", "abfs", "abfss"] {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                object_store_factories().insert(url, Arc::new(GuardedAzureFactory));
            }
        }
    });
}
