//! A hand-over of freshly committed table versions between two stages of
//! one run: the writer publishes each version it committed with the rows
//! that version appended, and the reader takes them from memory instead of
//! reading the table's files back.
//!
//! `weir run` uses it between ingest (writer of raw versions) and process
//! (their reader) so both run at once: process starts on the first raw
//! commit while ingest decodes the next files.
//!
//! What a version means does not change: the writer publishes a version
//! only after its commit landed, with exactly the rows that commit added,
//! and the reader still commits its own progress markers. The feed is only
//! a shortcut for reading: a version it does not hold (committed before the
//! run, or by another writer in between) is read from the table as usual.
//!
//! Hazards:
//! - Memory: published rows wait in memory until taken. [`AppendFeed::publish`]
//!   waits while the feed holds more than its budget, so the writer cannot
//!   run more than about a budget ahead of the reader.
//! - A reader that stops (it failed, or a `fail` rule stopped it) must
//!   [`AppendFeed::detach`]: the writer then publishes into nothing and
//!   never waits. A writer that stops, however it stops, must be followed
//!   by [`AppendFeed::close`], or the reader waits for versions that never
//!   come. The guards of [`AppendFeed::detach_on_drop`] and
//!   [`AppendFeed::close_on_drop`] do it on every path, panics included.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use deltalake::arrow::array::RecordBatch;
use tokio::sync::Notify;

/// One end of the hand-over; clones share it.
#[derive(Clone)]
pub struct AppendFeed {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken on every publish, take, close and detach.
    changed: Notify,
    /// Bytes of rows the feed holds before a publish waits.
    budget: u64,
}

#[derive(Default)]
struct State {
    /// Published and not yet taken, by version.
    versions: BTreeMap<u64, Vec<RecordBatch>>,
    /// Arrow memory of `versions`.
    held: u64,
    /// Newest version published.
    latest: Option<u64>,
    /// The writer is done: nothing more will be published.
    closed: bool,
    /// The reader is gone: nothing published is kept.
    detached: bool,
}

impl fmt::Debug for AppendFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("AppendFeed")
            .field("versions", &s.versions.keys().collect::<Vec<_>>())
            .field("held", &s.held)
            .field("closed", &s.closed)
            .field("detached", &s.detached)
            .finish()
    }
}

impl AppendFeed {
    /// A feed that holds at most about `budget` bytes of rows.
    pub fn new(budget: u64) -> AppendFeed {
        AppendFeed { shared: Arc::new(Shared { state: Mutex::new(State::default()), changed: Notify::new(), budget }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves plain data behind.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands over `version`, committed with exactly `rows` appended. Waits
    /// while the feed is over its budget (unless it is empty: one version
    /// always fits) and the reader is still there.
    pub async fn publish(&self, version: u64, rows: Vec<RecordBatch>) {
        let size = rows.iter().map(RecordBatch::get_array_memory_size).sum::<usize>() as u64;
        loop {
            let changed = self.shared.changed.notified();
            {
                let mut s = self.state();
                if s.detached {
                    return;
                }
                if s.held == 0 || s.held + size <= self.shared.budget {
                    s.held += size;
                    s.latest = s.latest.max(Some(version));
                    s.versions.insert(version, rows);
                    drop(s);
                    self.shared.changed.notify_waiters();
                    return;
                }
            }
            changed.await;
        }
    }

    /// The writer is done (also after a failure): the reader stops
    /// waiting once it has taken what was published.
    pub fn close(&self) {
        self.state().closed = true;
        self.shared.changed.notify_waiters();
    }

    /// The reader is gone: what is held is dropped and the writer never
    /// waits again.
    pub fn detach(&self) {
        let mut s = self.state();
        s.detached = true;
        s.versions.clear();
        s.held = 0;
        drop(s);
        self.shared.changed.notify_waiters();
    }

    /// A guard that detaches the feed when dropped: the reader's end,
    /// however it stops (an error, a panic).
    pub fn detach_on_drop(&self) -> FeedEnd {
        FeedEnd { feed: self.clone(), reader: true }
    }

    /// A guard that closes the feed when dropped: the writer's end.
    pub fn close_on_drop(&self) -> FeedEnd {
        FeedEnd { feed: self.clone(), reader: false }
    }

    /// Waits until something is published or the writer closed; the
    /// newest version published so far, if any.
    pub async fn started(&self) -> Option<u64> {
        loop {
            let changed = self.shared.changed.notified();
            {
                let s = self.state();
                if s.latest.is_some() || s.closed {
                    return s.latest;
                }
            }
            changed.await;
        }
    }

    /// Waits for a version newer than `after`: the newest published, or
    /// `None` once the writer closed without publishing one.
    /// Versions up to `after` are done with: any still held leaves the
    /// feed (it would otherwise hold the writer back for good).
    pub async fn newer_than(&self, after: u64) -> Option<u64> {
        {
            let mut s = self.state();
            if s.versions.first_key_value().is_some_and(|(v, _)| *v <= after) {
                s.versions = s.versions.split_off(&(after + 1));
                s.held = held(&s.versions);
                drop(s);
                self.shared.changed.notify_waiters();
            }
        }
        loop {
            let changed = self.shared.changed.notified();
            {
                let s = self.state();
                match s.latest {
                    Some(v) if v > after => return Some(v),
                    _ if s.closed => return None,
                    _ => {}
                }
            }
            changed.await;
        }
    }

    /// The rows of versions `from..=to`, each with its version, when the
    /// feed holds every one of them; `None` otherwise. Either way every
    /// version up to `to` leaves the feed: the reader reads the range from
    /// the table when it is not all here.
    pub fn take(&self, from: u64, to: u64) -> Option<Vec<(u64, Vec<RecordBatch>)>> {
        let mut s = self.state();
        let rest = s.versions.split_off(&(to + 1));
        let taken = std::mem::replace(&mut s.versions, rest);
        s.held = held(&s.versions);
        drop(s);
        self.shared.changed.notify_waiters();
        let complete = (from..=to).all(|v| taken.contains_key(&v));
        complete.then(|| taken.into_iter().filter(|(v, _)| *v >= from).collect())
    }
}

/// One end of a feed, let go of when dropped ([`AppendFeed::detach_on_drop`],
/// [`AppendFeed::close_on_drop`]).
pub struct FeedEnd {
    feed: AppendFeed,
    reader: bool,
}

impl Drop for FeedEnd {
    fn drop(&mut self) {
        match self.reader {
            true => self.feed.detach(),
            false => self.feed.close(),
        }
    }
}

/// Arrow memory of the rows held.
fn held(versions: &BTreeMap<u64, Vec<RecordBatch>>) -> u64 {
    versions.values().flatten().map(|b| b.get_array_memory_size() as u64).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use deltalake::arrow::array::{Int64Array, RecordBatch};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::AppendFeed;

    fn rows(n: i64) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        vec![RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap()]
    }

    #[tokio::test]
    async fn a_range_comes_from_the_feed_only_when_every_version_is_there() {
        let feed = AppendFeed::new(u64::MAX);
        feed.publish(3, rows(10)).await;
        feed.publish(5, rows(20)).await;
        assert_eq!(feed.started().await, Some(5));
        // Version 4 was committed by someone else: the range is read from
        // the table, and versions 3 and 5 leave the feed all the same.
        assert!(feed.take(3, 5).is_none());
        assert!(feed.take(5, 5).is_none());
        feed.publish(6, rows(1)).await;
        feed.publish(7, rows(2)).await;
        let got = feed.take(6, 7).unwrap();
        assert_eq!(got.iter().map(|(v, b)| (*v, b[0].num_rows())).collect::<Vec<_>>(), vec![(6, 1), (7, 2)]);
        // Versions a reader is past never hold the writer back.
        let small = AppendFeed::new(1);
        small.publish(1, rows(10)).await;
        assert_eq!(small.newer_than(0).await, Some(1));
        let writer = small.clone();
        let next = tokio::spawn(async move { writer.publish(2, rows(10)).await });
        assert_eq!(small.newer_than(1).await, Some(2));
        tokio::time::timeout(Duration::from_secs(5), next).await.unwrap().unwrap();
        feed.close();
        assert_eq!(feed.newer_than(7).await, None);
        assert_eq!(feed.newer_than(6).await, Some(7));
    }

    #[tokio::test]
    async fn the_writer_waits_for_the_reader_beyond_the_budget_and_never_once_it_detached() {
        let one = rows(1000);
        let size = one[0].get_array_memory_size() as u64;
        let feed = AppendFeed::new(size);
        feed.publish(0, rows(1000)).await;
        // Over the budget: the second publish waits until the first is taken.
        let writer = feed.clone();
        let second = tokio::spawn(async move { writer.publish(1, rows(1000)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        assert_eq!(feed.take(0, 0).unwrap().len(), 1);
        tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap();
        assert_eq!(feed.newer_than(0).await, Some(1));
        // A detached reader (its guard dropped, as on a panic): publishing
        // never waits and keeps nothing.
        drop(feed.detach_on_drop());
        for v in 2..10 {
            tokio::time::timeout(Duration::from_secs(5), feed.publish(v, rows(1000))).await.unwrap();
        }
        assert!(feed.take(2, 2).is_none());
    }

    #[tokio::test]
    async fn a_reader_waiting_for_more_wakes_on_close() {
        let feed = AppendFeed::new(u64::MAX);
        let reader = feed.clone();
        let waiting = tokio::spawn(async move { reader.started().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(feed.close_on_drop());
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap(), None);
    }
}
