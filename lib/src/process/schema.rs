//! The processed table's schema against the one the pipeline now produces:
//! optional fields added to the body schema are added to the table, any
//! other change stops the run (and is a problem for `weir validate`).

use deltalake::arrow::datatypes::Schema;
use deltalake::DeltaTable;

use crate::delta;
use crate::lake::conform::schema_changes;
use crate::lake::contract;
use crate::pipeline::LoadedPipeline;
use crate::storage::Location;
use crate::{Error, Result};

/// Checks each processed table (a route's, with routes; when it exists)
/// against the schema the pipeline now produces. Breaking changes are
/// problems for `weir validate`.
pub async fn check_table_schema(loaded: &LoadedPipeline) -> Result<Vec<(String, String)>> {
    let mut problems = Vec::new();
    for unit in loaded.process_units() {
        if unit.table.is_none() {
            continue;
        }
        let Ok(Some(body)) = loaded.unit_body_schema(&unit) else { continue };
        let location = loaded.location(&unit.table_key)?;
        let Some(table) = delta::open(&location).await? else { continue };
        let wanted = contract::processed_schema_for_check(&body, &unit.process.pii);
        let (_, breaking) = schema_changes(delta::arrow_schema(&table)?.as_ref(), &wanted);
        problems.extend(
            breaking
                .into_iter()
                .map(|m| (unit.schema_key.clone(), format!("incompatible with the processed table {location}: {m}"))),
        );
    }
    Ok(problems)
}

/// Stops a run before it writes when the processed table cannot take the
/// rows the pipeline now produces; optional fields the body schema gained
/// are added to the table by the first write (schema merge).
pub(super) fn check_processed_table(table: &DeltaTable, location: &Location, produced: &Schema) -> Result<()> {
    let (added, breaking) = schema_changes(delta::arrow_schema(table)?.as_ref(), produced);
    if !breaking.is_empty() {
        return Err(Error::SchemaChange { table: location.to_string(), changes: breaking });
    }
    if !added.is_empty() {
        tracing::info!(columns = ?added, "the body schema gained optional fields: adding them to the processed table");
    }
    Ok(())
}
