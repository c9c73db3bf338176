//! Writes in the background: a range's commits land while the next range
//! is read and checked.

use crate::{Error, Result};

/// Outputs whose writes run on a task of their own, one range at a time:
/// the next range's writes (and anything that reads the tables) wait for
/// the previous range's.
pub(super) struct Background<T> {
    out: Option<T>,
    writing: Option<tokio::task::JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Background<T> {
    pub(super) fn new(out: T) -> Self {
        Background { out: Some(out), writing: None }
    }

    /// The outputs, once the writes in flight (if any) have landed; their
    /// error is returned here.
    pub(super) async fn get(&mut self) -> Result<&mut T> {
        if let Some(handle) = self.writing.take() {
            let out = handle.await.map_err(|e| Error::Internal(format!("the output tables' writer: {e}")))??;
            self.out = Some(out);
        }
        self.out.as_mut().ok_or_else(|| Error::Internal("the output tables' writer failed earlier in this run".into()))
    }

    /// Waits for the write in flight, if any, whatever its outcome.
    pub(super) async fn settle(&mut self) {
        if let Some(handle) = self.writing.take() {
            if let Ok(Ok(out)) = handle.await {
                self.out = Some(out);
            }
        }
    }

    /// Starts `write` on the outputs; call after [`get`](Self::get).
    pub(super) fn start<F, Fut>(&mut self, write: F)
    where
        F: FnOnce(T) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let out = self.out.take().expect("get() before start()");
        self.writing = Some(tokio::spawn(write(out)));
    }
}
