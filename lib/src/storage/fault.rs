//! Fault-injecting storage for the fault tests: a wrapper around the local
//! object store that fails chosen operations, under every path Weir and
//! delta-rs read and write through. Inert unless the program [`arm`]s it
//! (the `weir` binary does) with `WEIR_STORE_FAULT` set.
//!
//! `WEIR_STORE_FAULT=OP:KIND:N[:TEXT]`, several separated by `,`:
//! - `OP`: `put` (a whole-object write, or the completion of a multipart
//!   one), `get` (reads and heads), `list`, `delete`, `copy`, `rename`;
//! - `KIND`: `error` (fails before the effect: an outage the retries gave
//!   up on), `after` (the effect happens, then the call fails: a timeout
//!   or a 500 after the store applied it), `denied` (403), `full` (disk
//!   full);
//! - `N`: the N-th matching call fails (1-based), once;
//! - `TEXT`: only calls on a path containing it count (`_delta_log`,
//!   `.parquet`, a table's folder).
//!
//! Hazard: only `file://` locations are wrapped; Azure's retries and
//! conditional requests are exercised against Azurite instead.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// A storage operation a rule can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    List,
    Delete,
    Copy,
    Rename,
}

/// How a rule fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    After,
    Denied,
    Full,
}

#[derive(Debug)]
struct Rule {
    op: Op,
    kind: Kind,
    nth: u64,
    text: Option<String>,
    seen: AtomicU64,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static RULES: OnceLock<Vec<Rule>> = OnceLock::new();

/// Parses `WEIR_STORE_FAULT` and, when it is set, puts the fault store
/// under every `file://` location. Called by the `weir` binary before any
/// job runs; a spec that does not parse is an error naming it.
pub fn arm() -> Result<(), String> {
    ARMED.store(true, Ordering::SeqCst);
    let Ok(spec) = std::env::var("WEIR_STORE_FAULT") else { return Ok(()) };
    let rules = parse(&spec)?;
    let _ = RULES.set(rules);
    let factory: Arc<dyn deltalake::logstore::ObjectStoreFactory> = Arc::new(Factory);
    let url = url::Url::parse("file://").map_err(|e| e.to_string())?;
    deltalake::logstore::object_store_factories().insert(url, factory);
    Ok(())
}

fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|one| {
            let bad = || format!("WEIR_STORE_FAULT: {one:?} is not OP:KIND:N[:TEXT]");
            let mut parts = one.trim().splitn(4, ':');
            let op = match parts.next() {
                Some("put") => Op::Put,
                Some("get") => Op::Get,
                Some("list") => Op::List,
                Some("delete") => Op::Delete,
                Some("copy") => Op::Copy,
                Some("rename") => Op::Rename,
                _ => return Err(bad()),
            };
            let kind = match parts.next() {
                Some("error") => Kind::Error,
                Some("after") => Kind::After,
                Some("denied") => Kind::Denied,
                Some("full") => Kind::Full,
                _ => return Err(bad()),
            };
            let nth = parts.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0).ok_or_else(bad)?;
            let text = parts.next().map(str::to_string);
            Ok(Rule { op, kind, nth, text, seen: AtomicU64::new(0) })
        })
        .collect()
}

/// The fault store around `store` when armed with rules, else `store`.
pub fn wrap(store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    match (ARMED.load(Ordering::SeqCst), RULES.get()) {
        (true, Some(_)) => Arc::new(FaultStore { inner: store }),
        _ => store,
    }
}

/// The fault a call of `op` on `path` meets, if any (counting it).
fn fault(op: Op, path: &str) -> Option<Kind> {
    let rules = RULES.get()?;
    let mut hit = None;
    for rule in rules.iter().filter(|r| r.op == op && r.text.as_deref().is_none_or(|t| path.contains(t))) {
        if rule.seen.fetch_add(1, Ordering::SeqCst) + 1 == rule.nth {
            hit = hit.or(Some(rule.kind));
        }
    }
    if let Some(kind) = hit {
        tracing::warn!(?op, ?kind, path, "injected storage fault");
    }
    hit
}

fn error(op: Op, kind: Kind, path: &str) -> object_store::Error {
    let path = path.to_string();
    match kind {
        Kind::Denied => object_store::Error::PermissionDenied {
            path,
            source: format!("injected fault: {op:?} refused (403)").into(),
        },
        Kind::Full => object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("injected fault: {op:?} of {path}: No space left on device"),
            )),
        },
        Kind::Error | Kind::After => object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!(
                "injected fault: {op:?} of {path} {}",
                if kind == Kind::After { "failed after it was applied" } else { "failed (503)" }
            )
            .into(),
        },
    }
}

/// Runs `call` unless the fault says to fail before it; fails after it
/// for `after`.
async fn guarded<T>(
    op: Op,
    path: &Path,
    call: impl std::future::Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    match fault(op, path.as_ref()) {
        None => call.await,
        Some(Kind::After) => {
            call.await?;
            Err(error(op, Kind::After, path.as_ref()))
        }
        Some(kind) => Err(error(op, kind, path.as_ref())),
    }
}

#[derive(Debug)]
struct FaultStore {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        guarded(Op::Put, location, self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload { inner, path: location.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        guarded(Op::Get, location, self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        guarded(Op::Get, location, self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // A delete that faults before its effect is taken out of the stream.
        let checked = locations.map(|p| {
            let p = p?;
            match fault(Op::Delete, p.as_ref()) {
                None => Ok((p, false)),
                Some(Kind::After) => Ok((p, true)),
                Some(kind) => Err(error(Op::Delete, kind, p.as_ref())),
            }
        });
        let inner = self.inner.clone();
        checked
            .then(move |item| {
                let inner = inner.clone();
                async move {
                    let (path, after) = item?;
                    let mut done = inner.delete_stream(futures::stream::iter([Ok(path.clone())]).boxed());
                    while let Some(result) = done.next().await {
                        result?;
                    }
                    if after {
                        return Err(error(Op::Delete, Kind::After, path.as_ref()));
                    }
                    Ok(path)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.map(|p| p.to_string()).unwrap_or_default();
        match fault(Op::List, &at) {
            None => self.inner.list(prefix),
            Some(kind) => futures::stream::once(async move { Err(error(Op::List, kind, &at)) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.map(|p| p.to_string()).unwrap_or_default();
        match fault(Op::List, &at) {
            None => self.inner.list_with_offset(prefix, offset),
            Some(kind) => futures::stream::once(async move { Err(error(Op::List, kind, &at)) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let at = prefix.cloned().unwrap_or_default();
        guarded(Op::List, &at, self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        guarded(Op::Copy, to, self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        guarded(Op::Rename, to, self.inner.rename_opts(from, to, options)).await
    }
}

/// A multipart upload whose completion counts as a `put`.
#[derive(Debug)]
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    path: Path,
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        match fault(Op::Put, self.path.as_ref()) {
            None => self.inner.complete().await,
            Some(Kind::After) => {
                self.inner.complete().await?;
                Err(error(Op::Put, Kind::After, self.path.as_ref()))
            }
            Some(kind) => Err(error(Op::Put, kind, self.path.as_ref())),
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// delta-rs's store for `file://` tables, with the faults under it.
struct Factory;

impl deltalake::logstore::ObjectStoreFactory for Factory {
    fn parse_url_opts(
        &self,
        url: &url::Url,
        config: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<(deltalake::logstore::ObjectStoreRef, Path)> {
        let (store, path) = object_store::parse_url_opts(url, &config.raw)?;
        Ok((wrap(Arc::from(store)), path))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, Kind, Op};

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        let rules = parse("put:after:2:_delta_log, delete:error:1").unwrap();
        assert_eq!((rules[0].op, rules[0].kind, rules[0].nth), (Op::Put, Kind::After, 2));
        assert_eq!(rules[0].text.as_deref(), Some("_delta_log"));
        assert_eq!(
            (rules[1].op, rules[1].kind, rules[1].nth, rules[1].text.as_deref()),
            (Op::Delete, Kind::Error, 1, None)
        );
        for bad in ["put", "put:after", "put:after:0", "write:error:1", "put:maybe:1"] {
            assert!(parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }
}
