//! Progress markers: the Delta application transactions (`txn`) through
//! which each stage records, in the same commit as its rows, how far it
//! got. One type names every marker Weir writes, so a stage, `weir status`,
//! `weir plan` and erasure all read the same ids.
//!
//! Hazard: an app id is part of every lake already written. Changing one
//! makes the stage start over (ingest would re-read everything in its
//! lookback and rely on dedup by sequence number; process would reprocess
//! the whole raw table).

/// A progress marker of one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// On the raw table: the highest sequence number ingested from a
    /// partition, committed with the rows.
    IngestWatermark {
        /// Pipeline name.
        pipeline: &'a str,
        /// Event Hub partition id.
        partition: &'a str,
    },
    /// On the raw table: the newest capture window (epoch seconds)
    /// ingested from a partition; files far older are not read again.
    IngestWindow {
        /// Pipeline name.
        pipeline: &'a str,
        /// Event Hub partition id.
        partition: &'a str,
    },
    /// On each of processed, quarantine and quality metrics: the last raw
    /// version whose output the table holds.
    Process {
        /// Pipeline name.
        pipeline: &'a str,
    },
    /// With `process.routes`: on a route's processed table and on the
    /// shared quarantine and quality-metrics tables, the last raw version
    /// whose output for that route the table holds.
    ProcessRoute {
        /// Pipeline name.
        pipeline: &'a str,
        /// The route's name.
        route: &'a str,
    },
    /// On a curated table: the last version of its source it reflects.
    Curate {
        /// Pipeline name.
        pipeline: &'a str,
        /// The curated table's name.
        table: &'a str,
    },
}

impl Marker<'_> {
    /// The application transaction id.
    pub fn app_id(&self) -> String {
        match self {
            Marker::IngestWatermark { pipeline, partition } => format!("weir/{pipeline}/ingest/{partition}"),
            Marker::IngestWindow { pipeline, partition } => format!("weir/{pipeline}/ingest/{partition}/window"),
            Marker::Process { pipeline } => format!("weir/{pipeline}/process"),
            Marker::ProcessRoute { pipeline, route } => format!("weir/{pipeline}/process/{route}"),
            Marker::Curate { pipeline, table } => format!("weir/{pipeline}/curate/{table}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Marker;

    /// The ids of lakes already written: these strings must never change.
    #[test]
    fn app_ids_are_stable() {
        let pipeline = "user_events";
        assert_eq!(Marker::IngestWatermark { pipeline, partition: "3" }.app_id(), "weir/user_events/ingest/3");
        assert_eq!(Marker::IngestWindow { pipeline, partition: "3" }.app_id(), "weir/user_events/ingest/3/window");
        assert_eq!(Marker::Process { pipeline }.app_id(), "weir/user_events/process");
        assert_eq!(Marker::ProcessRoute { pipeline, route: "purchase" }.app_id(), "weir/user_events/process/purchase");
        assert_eq!(Marker::Curate { pipeline, table: "f" }.app_id(), "weir/user_events/curate/f");
    }
}
