//! How a table computed from another table's versions catches up: not at
//! all (its progress marker has reached the source's version), from the
//! versions after its marker, or from scratch, and why.
//!
//! Curate runs a model by this decision; `weir plan` predicts it with what
//! it can know without reading the models (see [`Definition`]). One
//! function decides for both, so the plan cannot drift from the run.

use std::fmt;

/// What the model that computes the table is, next to what the table's last
/// run stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definition {
    /// The same as at the last run (or not compared).
    Same,
    /// Changed since the last run: the stored rows are not what it computes.
    Changed,
    /// Nothing stored to compare with (no run's commit in the recent
    /// history).
    NotStored,
}

/// What is known before anything is read.
#[derive(Debug, Clone, Copy)]
pub struct Catchup {
    /// The table being computed exists.
    pub target_exists: bool,
    /// Its progress marker: the last source version consumed.
    pub marker: Option<i64>,
    /// The source's current version.
    pub source_version: u64,
    /// It can be computed from the changed versions alone (a curated table
    /// with `incremental:`).
    pub incremental: bool,
    /// A recompute from scratch was asked for (`--full-refresh`).
    pub full_refresh: bool,
    /// Its model, against the stored one.
    pub definition: Definition,
}

/// Why a table is computed from scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    /// `--full-refresh`.
    FullRefresh,
    /// No table, or no progress marker in it.
    FirstRun,
    /// [`Definition::Changed`].
    ModelChanged,
    /// [`Definition::NotStored`].
    NoModelStored,
    /// The table has no incremental scope.
    NotIncremental,
}

impl fmt::Display for FullReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FullReason::FullRefresh => "--full-refresh",
            FullReason::FirstRun => "first run",
            FullReason::ModelChanged => "the model (SQL, key or scope) changed since the last run",
            FullReason::NoModelStored => "no curate commit found in the table's recent history",
            FullReason::NotIncremental => "the model has no incremental: scope",
        })
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing to do.
    UpToDate,
    /// Recompute what source versions `from..=to` touched.
    Incremental {
        /// First source version to read.
        from: u64,
        /// Last one (the source's current version).
        to: u64,
    },
    /// Recompute everything.
    Full(FullReason),
}

impl Catchup {
    /// The first source version not yet consumed.
    pub fn from(&self) -> u64 {
        self.marker.map_or(0, |m| (m + 1) as u64)
    }

    /// Decides how the table catches up. A forced or changed-model
    /// recompute runs even when the source has not moved; of several
    /// reasons for a full recompute, the first in [`FullReason`]'s order is
    /// given.
    pub fn decide(&self) -> Refresh {
        let caught_up = self.target_exists && self.marker.is_some_and(|m| m >= self.source_version as i64);
        if caught_up && !self.full_refresh && self.definition != Definition::Changed {
            return Refresh::UpToDate;
        }
        let full = if self.full_refresh {
            FullReason::FullRefresh
        } else if !self.target_exists || self.marker.is_none() {
            FullReason::FirstRun
        } else if self.definition == Definition::Changed {
            FullReason::ModelChanged
        } else if self.definition == Definition::NotStored {
            FullReason::NoModelStored
        } else if !self.incremental {
            FullReason::NotIncremental
        } else {
            return Refresh::Incremental { from: self.from(), to: self.source_version };
        };
        Refresh::Full(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An incremental table whose marker is at version 4, unchanged model.
    fn at_4(source_version: u64) -> Catchup {
        Catchup {
            target_exists: true,
            marker: Some(4),
            source_version,
            incremental: true,
            full_refresh: false,
            definition: Definition::Same,
        }
    }

    #[test]
    fn first_run_is_full_with_its_reason() {
        let none = Catchup { target_exists: false, marker: None, ..at_4(0) };
        assert_eq!(none.decide(), Refresh::Full(FullReason::FirstRun));
        assert_eq!(none.from(), 0);
        let no_marker = Catchup { marker: None, ..at_4(7) };
        assert_eq!(no_marker.decide(), Refresh::Full(FullReason::FirstRun));
        assert_eq!(FullReason::FirstRun.to_string(), "first run");
    }

    #[test]
    fn source_unchanged_is_up_to_date() {
        assert_eq!(at_4(4).decide(), Refresh::UpToDate);
        assert_eq!(at_4(3).decide(), Refresh::UpToDate);
        // Neither a missing stored model nor a missing scope matters when
        // there is nothing to read.
        assert_eq!(Catchup { definition: Definition::NotStored, ..at_4(4) }.decide(), Refresh::UpToDate);
        assert_eq!(Catchup { incremental: false, ..at_4(4) }.decide(), Refresh::UpToDate);
    }

    #[test]
    fn new_versions_are_read_incrementally_from_after_the_marker() {
        assert_eq!(at_4(9).decide(), Refresh::Incremental { from: 5, to: 9 });
        assert_eq!(at_4(5).decide(), Refresh::Incremental { from: 5, to: 5 });
    }

    #[test]
    fn a_changed_model_is_recomputed_even_without_new_versions() {
        let changed = Catchup { definition: Definition::Changed, ..at_4(4) };
        assert_eq!(changed.decide(), Refresh::Full(FullReason::ModelChanged));
        assert_eq!(FullReason::ModelChanged.to_string(), "the model (SQL, key or scope) changed since the last run");
        assert_eq!(
            Catchup { definition: Definition::Changed, ..at_4(9) }.decide(),
            Refresh::Full(FullReason::ModelChanged)
        );
    }

    #[test]
    fn full_refresh_wins_over_every_other_reason() {
        assert_eq!(Catchup { full_refresh: true, ..at_4(4) }.decide(), Refresh::Full(FullReason::FullRefresh));
        let first = Catchup { target_exists: false, marker: None, full_refresh: true, ..at_4(0) };
        assert_eq!(first.decide(), Refresh::Full(FullReason::FullRefresh));
        assert_eq!(FullReason::FullRefresh.to_string(), "--full-refresh");
    }

    #[test]
    fn new_versions_without_a_stored_model_or_a_scope_are_full() {
        assert_eq!(
            Catchup { definition: Definition::NotStored, ..at_4(9) }.decide(),
            Refresh::Full(FullReason::NoModelStored)
        );
        assert_eq!(Catchup { incremental: false, ..at_4(9) }.decide(), Refresh::Full(FullReason::NotIncremental));
        // A changed model is named before a missing scope.
        let both = Catchup { incremental: false, definition: Definition::Changed, ..at_4(9) };
        assert_eq!(both.decide(), Refresh::Full(FullReason::ModelChanged));
    }
}
