//! The Capture path format, as configuration.
//!
//! Event Hubs lets users reorder the tokens of the capture file name; the
//! default is `{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/
//! {Hour}/{Minute}/{Second}`. A source URL usually points below the event hub
//! folder, so Weir's default starts at `{PartitionId}`. Object names that do
//! not match are reported, never guessed at.

use chrono::{DateTime, NaiveDate, Utc};
use regex::Regex;

const TOKENS: &[(&str, &str)] = &[
    ("Namespace", r"[^/]+"),
    ("EventHub", r"[^/]+"),
    ("PartitionId", r"[^/]+"),
    ("Year", r"\d{4}"),
    ("Month", r"\d{2}"),
    ("Day", r"\d{2}"),
    ("Hour", r"\d{2}"),
    ("Minute", r"\d{2}"),
    ("Second", r"\d{2}"),
];

const REQUIRED: &[&str] = &["PartitionId", "Year", "Month", "Day", "Hour", "Minute", "Second"];

/// A compiled path format.
#[derive(Debug, Clone)]
pub struct PathFormat {
    format: String,
    regex: Regex,
}

/// A folder level above `{Year}` in a prunable path format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderLevel {
    /// `{PartitionId}`.
    Partition,
    /// `{Namespace}` or `{EventHub}`.
    Other,
}

/// What a capture object name says about its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// Event Hub partition id.
    pub partition_id: String,
    /// Start of the capture window.
    pub window: DateTime<Utc>,
    /// `{Namespace}/{EventHub}` when the format names them.
    pub hub: Option<String>,
}

impl PathFormat {
    /// Capture's default file name format below the container, without
    /// `.avro` (namespace and hub folders are part of the source URL).
    pub const CAPTURE_DEFAULT: &'static str = "{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}";

    /// Compiles a format; the error says which token is unknown or missing.
    pub fn parse(format: &str) -> Result<Self, String> {
        let mut pattern = String::from("^");
        let mut seen = Vec::new();
        let mut rest = format;
        while let Some(open) = rest.find('{') {
            pattern.push_str(&regex::escape(&rest[..open]));
            let close =
                rest[open..].find('}').ok_or_else(|| format!("unterminated '{{' in path format {format:?}"))? + open;
            let name = &rest[open + 1..close];
            let Some((_, re)) = TOKENS.iter().find(|(t, _)| *t == name) else {
                let known: Vec<&str> = TOKENS.iter().map(|(t, _)| *t).collect();
                return Err(format!("unknown token {{{name}}} (known: {})", known.join(", ")));
            };
            if seen.contains(&name) {
                return Err(format!("token {{{name}}} appears twice"));
            }
            seen.push(name);
            pattern.push_str(&format!("(?P<{name}>{re})"));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray '}}' in path format {format:?}"));
        }
        pattern.push_str(&regex::escape(rest));
        pattern.push_str(r"\.avro$");
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|t| !seen.contains(t)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "path format {format:?} lacks {}; Weir needs the partition and the window time",
                missing.iter().map(|t| format!("{{{t}}}")).collect::<Vec<_>>().join(", ")
            ));
        }
        let regex = Regex::new(&pattern).map_err(|e| format!("path format {format:?}: {e}"))?;
        Ok(PathFormat { format: format.to_string(), regex })
    }

    /// The format as written.
    pub fn as_str(&self) -> &str {
        &self.format
    }

    /// How the folders above the files are laid out, when they allow
    /// listing only recent days: the first segments are whole tokens among
    /// `{Namespace}`, `{EventHub}`, `{PartitionId}` (the partition among
    /// them), then `{Year}/{Month}/{Day}`. `None` for other formats, which
    /// are listed in full.
    pub fn folder_levels(&self) -> Option<(Vec<FolderLevel>, usize)> {
        let segments: Vec<&str> = self.format.split('/').collect();
        let year = segments.iter().position(|s| *s == "{Year}")?;
        if segments.get(year + 1) != Some(&"{Month}")
            || segments.get(year + 2) != Some(&"{Day}")
            || segments.len() < year + 4
        {
            return None;
        }
        let levels = segments[..year]
            .iter()
            .map(|s| match *s {
                "{PartitionId}" => Some(FolderLevel::Partition),
                "{Namespace}" | "{EventHub}" => Some(FolderLevel::Other),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        levels.contains(&FolderLevel::Partition).then_some((levels, year))
    }

    /// Matches a name relative to the source folder (`3/2026/11/22/04/05/00.avro`).
    pub fn parse_path(&self, relative: &str) -> Option<PathInfo> {
        let caps = self.regex.captures(relative)?;
        let num = |n: &str| caps.name(n).and_then(|m| m.as_str().parse::<u32>().ok());
        let date = NaiveDate::from_ymd_opt(num("Year")? as i32, num("Month")?, num("Day")?)?;
        let window = date.and_hms_opt(num("Hour")?, num("Minute")?, num("Second")?)?.and_utc();
        let hub = match (caps.name("Namespace"), caps.name("EventHub")) {
            (None, None) => None,
            (ns, hub) => Some(format!("{}/{}", ns.map_or("", |m| m.as_str()), hub.map_or("", |m| m.as_str()))),
        };
        Some(PathInfo { partition_id: caps["PartitionId"].to_string(), window, hub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format_matches_capture_names() {
        let f = PathFormat::parse(PathFormat::CAPTURE_DEFAULT).unwrap();
        let info = f.parse_path("12/2016/11/16/16/44/05.avro").unwrap();
        assert_eq!(info.partition_id, "12");
        assert_eq!(info.window.to_rfc3339(), "2016-11-16T16:44:05+00:00");
        assert_eq!(f.parse_path("12/2016/11/16/16/44/05.json"), None);
        assert_eq!(f.parse_path("12/2016/13/16/16/44/05.avro"), None, "month 13");
        assert_eq!(f.parse_path("x/12/2016/11/16/16/44/05.avro"), None);
    }

    #[test]
    fn reordered_tokens_and_errors() {
        let f = PathFormat::parse("{Namespace}/{EventHub}/{Year}-{Month}-{Day}/{PartitionId}/{Hour}{Minute}{Second}")
            .unwrap();
        let info = f.parse_path("ns/hub/2026-11-22/7/040500.avro").unwrap();
        assert_eq!(info.partition_id, "7");
        assert_eq!(info.hub.as_deref(), Some("ns/hub"));
        assert_eq!(info.window.to_rfc3339(), "2026-11-22T04:05:00+00:00");

        assert!(PathFormat::parse("{PartitionId}/{Year}").unwrap_err().contains("lacks {Month}"));
        assert_eq!(f.folder_levels(), None, "dates not in folders of their own: listed in full");
        let default = PathFormat::parse(PathFormat::CAPTURE_DEFAULT).unwrap();
        assert_eq!(default.folder_levels(), Some((vec![FolderLevel::Partition], 1)));
        let full =
            PathFormat::parse("{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}")
                .unwrap();
        assert_eq!(
            full.folder_levels(),
            Some((vec![FolderLevel::Other, FolderLevel::Other, FolderLevel::Partition], 3))
        );
        assert!(PathFormat::parse("{Partition}/x").unwrap_err().contains("unknown token {Partition}"));
    }
}
