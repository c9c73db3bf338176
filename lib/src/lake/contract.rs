//! Table contracts: the columns, partitioning and schemas of every table
//! Weir owns. Stages write these tables and other stages, jobs and
//! consumers read them, so what a column is called lives here, once.
//!
//! Hazard: a contract is a promise to existing lakes and to consumers.
//! Renaming or retyping a column here breaks tables already written; add
//! nullable columns instead (every writer evolves the schema on append).

use std::sync::{Arc, OnceLock};

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::body::{subject, BodySchema, RESCUED_COLUMN};
use crate::capture::decode::{capture_schema, utc_micros};
use crate::pii::PiiConfig;

/// The column the raw table is partitioned by.
pub const RAW_PARTITION_COLUMN: &str = "enqueued_date";

/// Schema of the raw table without subject-key columns.
pub fn raw_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let capture = capture_schema();
            let field = |n: &str| capture.field_with_name(n).expect("capture column").clone();
            Arc::new(Schema::new(vec![
                Field::new("partition_id", DataType::Utf8, false),
                field("sequence_number"),
                field("offset"),
                field("enqueued_time"),
                Field::new(RAW_PARTITION_COLUMN, DataType::Date32, false),
                field("system_properties"),
                field("properties"),
                field("body"),
                Field::new("source_file", DataType::Utf8, false),
                Field::new("ingested_at", utc_micros(), false),
                Field::new("run_id", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of the raw table of a pipeline whose body schema declares
/// `subjects` (`"weir.pii": "subject"` fields): one nullable Utf8 column
/// `subject_<field>` each, after the base columns.
pub fn raw_schema_with(subjects: &[String]) -> SchemaRef {
    if subjects.is_empty() {
        return raw_schema();
    }
    let base = raw_schema();
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(subjects.iter().map(|s| Field::new(subject::column_name(s), DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// The processed table's partition column: the UTC date of `event_time`.
pub const PROCESSED_PARTITION_COLUMN: &str = "event_date";

/// The quarantine table's partition column.
pub const QUARANTINE_PARTITION_COLUMN: &str = "enqueued_date";

/// Rule name under which parse failures are reported and quarantined.
pub const SCHEMA_RULE: &str = "schema";

/// Rule name under which dedup is reported in the metrics table.
pub const DEDUP_RULE: &str = "dedup";

/// Rule name under which a pipeline with routes quarantines (and reports)
/// the events no route takes.
pub const ROUTE_RULE: &str = "route";

/// The quality-metrics column naming the route a row is about (only in the
/// tables of pipelines with routes; null elsewhere).
pub const METRICS_ROUTE_COLUMN: &str = "route";

/// Lineage columns every processed and quarantined row carries.
pub fn lineage_fields() -> Vec<Field> {
    vec![
        Field::new("_partition_id", DataType::Utf8, false),
        Field::new("_sequence_number", DataType::Int64, false),
        Field::new("_enqueued_time", utc_micros(), false),
        Field::new("_source_file", DataType::Utf8, false),
    ]
}

/// The rows the expectations see: body fields (all nullable), `_rescued`
/// and the lineage columns.
pub fn checked_schema(body: &BodySchema) -> SchemaRef {
    let mut fields: Vec<Field> =
        body.arrow_schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    fields.push(Field::new(RESCUED_COLUMN, DataType::Utf8, true));
    fields.extend(lineage_fields());
    Arc::new(Schema::new(fields))
}

/// The processed rows before PII rules: body fields as the schema types
/// them, `_rescued`, lineage, run and partition columns.
pub fn pre_pii_schema(body: &BodySchema) -> SchemaRef {
    let mut fields: Vec<Field> = body.arrow_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(RESCUED_COLUMN, DataType::Utf8, true));
    fields.extend(lineage_fields());
    fields.push(Field::new("_run_id", DataType::Utf8, false));
    fields.push(Field::new("_processed_at", utc_micros(), false));
    fields.push(Field::new(PROCESSED_PARTITION_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// The processed schema with a stand-in key: hashing changes types, not
/// names, so this is good for structural checks without the secret.
pub fn processed_schema_for_check(body: &BodySchema, pii: &PiiConfig) -> SchemaRef {
    let pre = pre_pii_schema(body);
    match pii.build_with_key(&body.arrow_schema(), Some(&[0u8; 32])) {
        Ok(rules) => rules.output_schema(&pre),
        Err(_) => pre,
    }
}

/// Schema of the quarantine table.
pub fn quarantine_schema() -> SchemaRef {
    let mut fields = lineage_fields();
    fields.push(Field::new("_raw_version", DataType::Int64, false));
    fields.push(Field::new("body", DataType::Binary, true));
    fields.push(Field::new("rules", DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))), false));
    fields.push(Field::new("reason", DataType::Utf8, false));
    fields.push(Field::new("_run_id", DataType::Utf8, false));
    fields.push(Field::new("_quarantined_at", utc_micros(), false));
    fields.push(Field::new(QUARANTINE_PARTITION_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// Schema of the quality-metrics table.
pub fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("raw_version_from", DataType::Int64, false),
        Field::new("raw_version_to", DataType::Int64, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("expression", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, false),
        Field::new("rows_checked", DataType::Int64, false),
        Field::new("rows_failed", DataType::Int64, false),
        Field::new("failure_rate", DataType::Float64, true),
        Field::new("max_failure_rate", DataType::Float64, true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("published", DataType::Boolean, false),
        Field::new("recorded_at", utc_micros(), false),
    ]))
}

/// Schema of the quality-metrics table of a pipeline with routes: the
/// columns of [`metrics_schema`] and a nullable [`METRICS_ROUTE_COLUMN`].
pub fn metrics_schema_with_route() -> SchemaRef {
    let mut fields: Vec<Field> = metrics_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(METRICS_ROUTE_COLUMN, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Schema of the runs table.
pub fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("started_at", utc_micros(), false),
        Field::new("finished_at", utc_micros(), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("exit_code", DataType::Int32, false),
        Field::new("error_class", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("events_read", DataType::Int64, false),
        Field::new("events_written", DataType::Int64, false),
        Field::new("files_read", DataType::Int64, false),
        Field::new("bytes_read", DataType::Int64, false),
        Field::new("partitions", DataType::Utf8, true),
        Field::new("host", DataType::Utf8, false),
        Field::new("weir_version", DataType::Utf8, false),
        Field::new("report", DataType::Utf8, false),
    ]))
}

/// The erasure log table's schema: one row per subject and table.
pub fn erasure_log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("erasure_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("requested_at", utc_micros(), false),
        Field::new("subject_field", DataType::Utf8, false),
        Field::new("subject_hash", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("table_version", DataType::Int64, true),
        Field::new("rows_deleted", DataType::Int64, false),
        Field::new("purged", DataType::Boolean, false),
        Field::new("unreadable_after", utc_micros(), true),
    ]))
}
