use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, Int32Array, LargeBinaryArray, StringArray,
};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

use super::convert::{is_uuid, parse_decimal};
use super::*;
use weir_testkit::capture::{user_event_body, Rng};

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/user_event.avsc")
}

fn example() -> BodySchema {
    match BodySchema::from_file(&example_path()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn schema(text: &str) -> BodySchema {
    match BodySchema::parse(text, "test.avsc") {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn bodies(items: &[Option<&str>]) -> BinaryArray {
    items.iter().map(|b| b.map(str::as_bytes)).collect()
}

fn decode(s: &BodySchema, items: &[Option<&str>]) -> ParsedBodies {
    match s.decode(&bodies(items)) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn col<'a>(p: &'a ParsedBodies, name: &str) -> &'a ArrayRef {
    p.batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"))
}

fn strings<'a>(p: &'a ParsedBodies, name: &str) -> &'a StringArray {
    col(p, name).as_string::<i32>()
}

fn rescued(p: &ParsedBodies, row: usize) -> Option<serde_json::Value> {
    let r = strings(p, RESCUED_COLUMN);
    r.is_valid(row).then(|| serde_json::from_str(r.value(row)).expect("rescued is JSON"))
}

/// The single failure reason of `row`.
fn reason(p: &ParsedBodies, row: usize) -> &str {
    let found: Vec<&str> = p.failures.iter().filter(|(r, _)| *r == row).map(|(_, m)| m.as_str()).collect();
    assert_eq!(found.len(), 1, "failures of row {row}: {:?}", p.failures);
    found[0]
}

fn assert_row_null(p: &ParsedBodies, row: usize) {
    for (i, c) in p.batch.columns().iter().enumerate() {
        assert!(c.is_null(row), "row {row} column {} is not null", p.batch.schema().field(i).name());
    }
}

const GOOD: &str = r#"{"eventId": "0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b", "eventName": "purchase", "eventTimestamp": "2026-11-01T08:00:01.250Z", "userId": "u-42", "sessionId": "s-1", "email": "a@example.com", "ipAddress": "10.0.0.1", "properties": {"page": "/checkout", "durationMs": 1500}, "amount": "12.34", "currency": "EUR"}"#;

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

#[test]
fn example_schema_maps_to_final_arrow_types() {
    let s = example();
    let a = s.arrow_schema();
    let names: Vec<&str> = a.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "eventId",
            "eventName",
            "eventTimestamp",
            "userId",
            "sessionId",
            "email",
            "ipAddress",
            "properties",
            "amount",
            "currency"
        ]
    );
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let f = |n: &str| a.field_with_name(n).expect("field").clone();
    assert_eq!(f("eventId").data_type(), &DataType::Utf8);
    assert!(!f("eventId").is_nullable());
    assert_eq!(f("eventName").data_type(), &DataType::Utf8);
    assert!(!f("eventName").is_nullable());
    assert_eq!(f("eventTimestamp").data_type(), &ts);
    assert!(!f("eventTimestamp").is_nullable());
    assert!(!f("userId").is_nullable());
    assert!(f("sessionId").is_nullable());
    assert_eq!(f("amount").data_type(), &DataType::Decimal128(18, 2));
    assert!(f("amount").is_nullable());
    let DataType::Struct(children) = f("properties").data_type().clone() else {
        panic!("properties is not a struct");
    };
    assert_eq!(children[0].name(), "page");
    assert_eq!(children[0].data_type(), &DataType::Utf8);
    assert_eq!(children[1].name(), "durationMs");
    assert_eq!(children[1].data_type(), &DataType::Int64);
    assert!(children.iter().all(|c| c.is_nullable()));

    assert_eq!(
        s.annotations("weir.pii"),
        vec![
            ("userId".to_string(), "subject".to_string()),
            ("email".to_string(), "email".to_string()),
            ("ipAddress".to_string(), "ip".to_string())
        ]
    );
    assert_eq!(s.annotations("weir.timestamp"), vec![("eventTimestamp".to_string(), "iso8601".to_string())]);
    assert!(s.annotations("nope").is_empty());

    // The output batch: same types, all nullable, then _rescued.
    let p = decode(&s, &[Some(GOOD)]);
    let out = p.batch.schema();
    assert_eq!(out.fields().len(), a.fields().len() + 1);
    for (o, f) in out.fields().iter().zip(a.fields()) {
        assert_eq!(o.name(), f.name());
        assert_eq!(o.data_type(), f.data_type());
        assert!(o.is_nullable());
    }
    let last = out.field(out.fields().len() - 1);
    assert_eq!(last.name(), RESCUED_COLUMN);
    assert_eq!(last.data_type(), &DataType::Utf8);
}

#[test]
fn unions_other_than_null_t_are_refused() {
    for ty in [r#"["string", "long"]"#, r#"["null", "string", "long"]"#, r#"["null"]"#, r#"["null", "null", "string"]"#]
    {
        let text = format!(
            r#"{{"type": "record", "name": "R", "fields": [{{"name": "ok", "type": "string"}}, {{"name": "inner", "type": {{"type": "record", "name": "In", "fields": [{{"name": "bad", "type": {ty}}}]}}}}]}}"#
        );
        let e = BodySchema::parse(&text, "u.avsc").expect_err(ty);
        assert_eq!(e.origin, "u.avsc");
        assert_eq!(e.path, "inner.bad", "{ty}");
        assert!(e.message.contains("unions other than [null, T] are not supported"), "{ty}: {e}");
        assert!(e.to_string().starts_with("u.avsc: field 'inner.bad': unions other"));
    }
    // [T, "null"] is fine and nullable.
    let s = schema(r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": ["long", "null"]}]}"#);
    assert!(s.arrow_schema().field(0).is_nullable());
    assert_eq!(s.arrow_schema().field(0).data_type(), &DataType::Int64);
}

#[test]
fn schema_errors_name_file_and_field() {
    let e = BodySchema::from_file(std::path::Path::new("/nonexistent/x.avsc")).expect_err("no file");
    assert_eq!(e.origin, "/nonexistent/x.avsc");
    assert!(e.message.contains("cannot read"), "{e}");

    let cases = [
        (r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}"#, "a", "unknown type \"Nope\""),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 2}}]}"#,
            "d",
            "precision 40",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 5}}]}"#,
            "d",
            "scale",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "t", "type": "long", "weir.timestamp": "iso8601"}]}"#,
            "t",
            "weir.timestamp",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "t", "type": "string", "weir.timestamp": "epoch"}]}"#,
            "t",
            "must be \"iso8601\"",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "n", "type": {"type": "record", "name": "R2", "fields": [{"name": "self", "type": ["null", "R2"]}]}}]}"#,
            "n.self",
            "recursive",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}, {"name": "a", "type": "long"}]}"#,
            "a",
            "duplicate",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "_rescued", "type": "string"}]}"#,
            "_rescued",
            "reserved",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "l", "type": {"type": "array", "items": ["int", "string"]}}]}"#,
            "l[]",
            "unions other",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "f", "type": {"type": "fixed", "name": "F", "size": 2, "logicalType": "decimal", "precision": 9}}]}"#,
            "f",
            "does not fit",
        ),
        (r#""string""#, "", "must be a record"),
        (r#"{"type": "record""#, "", "not valid JSON"),
    ];
    for (text, path, needle) in cases {
        let e = BodySchema::parse(text, "s.avsc").expect_err(text);
        assert_eq!(e.path, path, "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
        assert!(e.to_string().starts_with("s.avsc: "), "{e}");
    }
}

#[test]
fn named_types_are_reused_by_short_and_full_name() {
    let s = schema(
        r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
            {"name": "billing", "type": {"type": "record", "name": "Address", "fields": [
                {"name": "city", "type": "string"},
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "namespace": "other", "symbols": ["home", "work"]}}
            ]}},
            {"name": "shipping", "type": ["null", "Address"]},
            {"name": "legacy", "type": ["null", "shop.Address"]},
            {"name": "price", "type": {"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "tax", "type": ["null", "Money"]},
            {"name": "kind2", "type": "other.Kind"},
            {"name": "kind3", "type": "Kind"}
        ]}"#,
    );
    let a = s.arrow_schema();
    assert_eq!(a.field(0).data_type(), a.field(1).data_type());
    assert_eq!(a.field(0).data_type(), a.field(2).data_type());
    assert!(!a.field(0).is_nullable());
    assert!(a.field(1).is_nullable());
    assert_eq!(a.field(3).data_type(), &DataType::Decimal128(10, 2));
    assert_eq!(a.field(4).data_type(), &DataType::Decimal128(10, 2));
    assert_eq!(a.field(5).data_type(), &DataType::Utf8);

    let p = decode(
        &s,
        &[
            Some(
                r#"{"billing": {"city": "Oslo", "kind": "home"}, "shipping": {"city": "Bergen", "kind": "work"}, "price": 9.5, "tax": "1.25", "kind2": "work", "kind3": "home"}"#,
            ),
            Some(
                r#"{"billing": {"city": "Oslo", "kind": "home"}, "shipping": {"city": "Bergen", "kind": "moon"}, "price": 1, "kind2": "work", "kind3": "home"}"#,
            ),
        ],
    );
    assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
    assert_eq!(reason(&p, 1), "field 'shipping.kind': 'moon' is not a symbol of enum Kind (home, work)");
    let shipping = col(&p, "shipping").as_struct();
    assert_eq!(shipping.column(0).as_string::<i32>().value(0), "Bergen");
    assert_eq!(col(&p, "price").as_primitive::<Decimal128Type>().value(0), 950);
    assert_eq!(col(&p, "tax").as_primitive::<Decimal128Type>().value(0), 125);
    assert_row_null(&p, 1);

    // The same short name in two namespaces is ambiguous without a namespace.
    let e = BodySchema::parse(
        r#"{"type": "record", "name": "R", "namespace": "n0", "fields": [
            {"name": "a", "type": {"type": "enum", "name": "E", "namespace": "n1", "symbols": ["x"]}},
            {"name": "b", "type": {"type": "enum", "name": "E", "namespace": "n2", "symbols": ["y"]}},
            {"name": "c", "type": "E"}
        ]}"#,
        "amb.avsc",
    )
    .expect_err("ambiguous");
    assert!(e.message.contains("ambiguous"), "{e}");
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

#[test]
fn decodes_testgen_bodies_with_exact_values() {
    let s = example();
    let mut rng = Rng::new(7);
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).single().expect("time");
    let times: Vec<DateTime<Utc>> = (0..300).map(|i| start + chrono::Duration::milliseconds(i * 1_337)).collect();
    let raw: Vec<Vec<u8>> = times.iter().enumerate().map(|(i, t)| user_event_body(&mut rng, i as i64, *t)).collect();
    let array: BinaryArray = raw.iter().map(|b| Some(b.as_slice())).collect();
    let p = s.decode(&array).expect("decode");
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    assert_eq!(p.batch.num_rows(), 300);

    let ids = strings(&p, "eventId");
    let names = strings(&p, "eventName");
    let ts = col(&p, "eventTimestamp").as_primitive::<TimestampMicrosecondType>();
    let users = strings(&p, "userId");
    let props = col(&p, "properties").as_struct();
    let pages = props.column(0).as_string::<i32>();
    let durations = props.column(1).as_primitive::<Int64Type>();
    let amounts = col(&p, "amount").as_primitive::<Decimal128Type>();
    let currencies = strings(&p, "currency");
    let mut purchases = 0;
    for (i, body) in raw.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        assert_eq!(ids.value(i), v["eventId"].as_str().expect("id"));
        assert_eq!(names.value(i), v["eventName"].as_str().expect("name"));
        assert_eq!(ts.value(i), times[i].timestamp_micros());
        assert_eq!(users.value(i), v["userId"].as_str().expect("user"));
        assert_eq!(pages.value(i), v["properties"]["page"].as_str().expect("page"));
        assert_eq!(durations.value(i), v["properties"]["durationMs"].as_i64().expect("duration"));
        match v.get("amount") {
            Some(a) => {
                purchases += 1;
                let text = a.as_str().expect("amount string");
                let (units, cents) = text.split_once('.').expect("two decimals");
                let want = units.parse::<i128>().expect("units") * 100 + cents.parse::<i128>().expect("cents");
                assert_eq!(amounts.value(i), want, "{text}");
                assert_eq!(currencies.value(i), v["currency"].as_str().expect("cur"));
            }
            None => {
                assert!(amounts.is_null(i));
                assert!(currencies.is_null(i));
            }
        }
        assert!(strings(&p, RESCUED_COLUMN).is_null(i));
    }
    assert!(purchases > 0, "the sample has purchases");
    assert_eq!(col(&p, "eventTimestamp").data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
}

#[test]
fn decodes_a_handwritten_body_exactly() {
    let s = example();
    let p = decode(&s, &[Some(GOOD)]);
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    let amount = col(&p, "amount").as_primitive::<Decimal128Type>();
    assert_eq!(amount.value(0), 1234);
    assert_eq!(amount.precision(), 18);
    assert_eq!(amount.scale(), 2);
    // 2026-11-01T08:00:01.250Z
    let want = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 1).single().expect("time").timestamp_micros() + 250_000;
    let ts = col(&p, "eventTimestamp").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), want);
    let props = col(&p, "properties").as_struct();
    assert_eq!(props.column(0).as_string::<i32>().value(0), "/checkout");
    assert_eq!(props.column(1).as_primitive::<Int64Type>().value(0), 1500);
    assert_eq!(strings(&p, "currency").value(0), "EUR");
    assert!(strings(&p, RESCUED_COLUMN).is_null(0));
}

#[test]
fn body_column_types_binary_large_and_view() {
    let s = example();
    let large: LargeBinaryArray = vec![Some(GOOD.as_bytes()), None].into();
    let view: BinaryViewArray = vec![Some(GOOD.as_bytes()), None].into_iter().collect();
    let utf8 = StringArray::from(vec![Some(GOOD), None]);
    for array in [&large as &dyn Array, &view, &utf8] {
        let p = s.decode(array).expect("decode");
        assert_eq!(p.batch.num_rows(), 2);
        assert_eq!(p.failures, vec![(1, "body is null".to_string())]);
        assert_eq!(strings(&p, "userId").value(0), "u-42");
    }
    let e = s.decode(&Int32Array::from(vec![1, 2])).expect_err("ints are no bodies");
    assert!(e.message.contains("Binary"), "{e}");

    let empty = s.decode(&bodies(&[])).expect("empty");
    assert_eq!(empty.batch.num_rows(), 0);
    assert_eq!(empty.batch.num_columns(), 11);
}

#[test]
fn timestamps_with_offsets_and_without_zone() {
    let s = example();
    let body = |t: &str| GOOD.replace("2026-11-01T08:00:01.250Z", t);
    let cases = [
        "2026-11-01T08:00:01.250Z",
        "2026-11-01T09:00:01.250+01:00",
        "2026-11-01T08:00:01.250",
        "2026-11-01T08:00:01.25Z",
        "2026-11-01T08:00:01.250000Z",
    ];
    let texts: Vec<String> = cases.iter().map(|c| body(c)).collect();
    let items: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let p = decode(&s, &items);
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    let ts = col(&p, "eventTimestamp").as_primitive::<TimestampMicrosecondType>();
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(ts.value(i), ts.value(0), "{case}");
    }
}

#[test]
fn unknown_fields_are_rescued_top_level_and_nested() {
    let s = example();
    let body = r#"{"eventId": "0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b", "eventName": "click", "eventTimestamp": "2026-11-01T08:00:01Z", "userId": "u-1", "referrer": "https://x.example/?q=\"a\"", "properties": {"page": "/p", "extra": {"deep": [1, 2]}, "durationMs": 5}, "we\"ird": null, "n": 1.50}"#;
    let p = decode(&s, &[Some(body), Some(GOOD)]);
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    let r = rescued(&p, 0).expect("rescued");
    assert_eq!(
        r,
        serde_json::json!({
            "referrer": "https://x.example/?q=\"a\"",
            "properties.extra": {"deep": [1, 2]},
            "we\"ird": null,
            "n": 1.50
        })
    );
    // Raw values are kept as received.
    assert!(strings(&p, RESCUED_COLUMN).value(0).contains(r#""n":1.50"#));
    assert_eq!(rescued(&p, 1), None);
    // The known fields still decode.
    let props = col(&p, "properties").as_struct();
    assert_eq!(props.column(0).as_string::<i32>().value(0), "/p");
    assert_eq!(props.column(1).as_primitive::<Int64Type>().value(0), 5);
}

#[test]
fn every_failure_kind_has_its_reason() {
    let s = example();
    let with = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replace(from, to)
    };
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "body is null"),
        (Some("{\"userId\": \"\u{ff}\"".to_string()), "body is not valid JSON: EOF while parsing"),
        (Some(with(r#""currency": "EUR"}"#, r#""currency": "EUR",}"#)), "body is not valid JSON: trailing comma"),
        (Some("[1, 2]".to_string()), "body is not a JSON object"),
        (Some("\"text\"".to_string()), "body is not a JSON object"),
        (Some("42".to_string()), "body is not a JSON object"),
        (Some(String::new()), "body is not valid JSON: EOF while parsing a value"),
        (Some(with(r#""userId": "u-42", "#, "")), "missing required field 'userId'"),
        (Some(with(r#""userId": "u-42""#, r#""userId": null"#)), "missing required field 'userId'"),
        (Some(with(r#""durationMs": 1500"#, r#""durationMs": "1500""#)), "field 'properties.durationMs': expected long, found string"),
        (Some(with(r#""durationMs": 1500"#, r#""durationMs": 1.5"#)), "field 'properties.durationMs': expected long, found non-integer number 1.5"),
        (Some(with(r#""durationMs": 1500"#, r#""durationMs": 99999999999999999999"#)), "field 'properties.durationMs': 99999999999999999999 is out of range for long"),
        (Some(with(r#""properties": {"page": "/checkout", "durationMs": 1500}"#, r#""properties": ["x"]"#)), "field 'properties': expected record EventProperties (object), found array"),
        (Some(with(r#""userId": "u-42""#, r#""userId": {"id": 1}"#)), "field 'userId': expected string, found object"),
        (Some(with(r#""sessionId": "s-1""#, r#""sessionId": true"#)), "field 'sessionId': expected string, found boolean"),
        (Some(with("2026-11-01T08:00:01.250Z", "yesterday")), "field 'eventTimestamp': 'yesterday' is not an ISO-8601 timestamp"),
        (Some(with("0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b", "not-a-uuid")), "field 'eventId': 'not-a-uuid' is not a UUID"),
        (Some(with(r#""eventName": "purchase""#, r#""eventName": "refund""#)), "field 'eventName': 'refund' is not a symbol of enum EventName (page_view, click, add_to_cart, purchase, login, logout, search)"),
        (Some(with(r#""amount": "12.34""#, r#""amount": "12.345""#)), "field 'amount': '12.345' has more fractional digits than the scale 2 allows (decimal(18, 2)); it is not rounded"),
        (Some(with(r#""amount": "12.34""#, r#""amount": "12345678901234567.00""#)), "field 'amount': '12345678901234567.00' has more digits than the precision 18 allows (decimal(18, 2))"),
        (Some(with(r#""amount": "12.34""#, r#""amount": "twelve""#)), "field 'amount': 'twelve' is not a decimal number"),
        (Some(with(r#""amount": "12.34""#, r#""amount": [12]"#)), "field 'amount': expected decimal (string or number), found array"),
    ];
    let texts: Vec<Option<&str>> = cases.iter().map(|(b, _)| b.as_deref()).collect();
    let p = decode(&s, &texts);
    assert_eq!(p.batch.num_rows(), cases.len());
    assert_eq!(p.failures.len(), cases.len(), "{:#?}", p.failures);
    for (row, (_, want)) in cases.iter().enumerate() {
        let got = reason(&p, row);
        assert!(got.starts_with(want), "row {row}: got {got:?}, want {want:?}");
        assert_row_null(&p, row);
    }

    // Long values are truncated in reasons.
    let long = "x".repeat(200);
    let body = with("0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b", &long);
    let p = decode(&s, &[Some(&body)]);
    let got = reason(&p, 0);
    assert!(got.contains(&format!("'{}…'", "x".repeat(60))), "{got}");
    assert!(got.len() < 120, "{got}");
}

#[test]
fn non_utf8_body_is_reported() {
    let s = example();
    let array: BinaryArray = vec![Some(&[0xFF, 0xFE, b'{'][..]), Some(GOOD.as_bytes())].into();
    let p = s.decode(&array).expect("decode");
    assert_eq!(p.failures.len(), 1);
    assert!(reason(&p, 0).starts_with("body is not valid JSON: invalid utf-8"), "{}", reason(&p, 0));
    assert_eq!(strings(&p, "userId").value(1), "u-42");
}

#[test]
fn good_and_bad_rows_interleave() {
    let s = example();
    let mut rng = Rng::new(99);
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("time");
    let n = 20_000;
    let good: Vec<Vec<u8>> = (0..n).map(|i| user_event_body(&mut rng, i as i64, at)).collect();
    // Every 7th row is bad in turn: null, broken JSON, bad enum (post-decode), bad kind.
    let mut items: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
    let mut bad = Vec::new();
    for (i, b) in good.iter().enumerate() {
        if i % 7 == 3 {
            bad.push(i);
            items.push(match (i / 7) % 4 {
                0 => None,
                1 => Some(b[..b.len() / 2].to_vec()),
                2 => {
                    let t = String::from_utf8(b.clone()).expect("utf8");
                    let name = serde_json::from_slice::<serde_json::Value>(b).expect("json")["eventName"]
                        .as_str()
                        .expect("name")
                        .to_string();
                    Some(t.replace(&format!("\"eventName\": \"{name}\""), "\"eventName\": \"nope\"").into_bytes())
                }
                _ => {
                    let t = String::from_utf8(b.clone()).expect("utf8");
                    Some(t.replacen("\"durationMs\": ", "\"durationMs\": \"", 1).replacen("}", "\"}", 1).into_bytes())
                }
            });
        } else {
            items.push(Some(b.clone()));
        }
    }
    let array: BinaryArray = items.iter().map(|b| b.as_deref()).collect();
    let p = s.decode(&array).expect("decode");
    assert_eq!(p.batch.num_rows(), n);
    let failed_rows: Vec<usize> = p.failures.iter().map(|(r, _)| *r).collect();
    assert_eq!(failed_rows, bad, "failures sorted by row, exactly the bad rows");
    let users = strings(&p, "userId");
    let durations = col(&p, "properties").as_struct().column(1).as_primitive::<Int64Type>().clone();
    for (i, b) in good.iter().enumerate() {
        if i % 7 == 3 {
            assert_row_null(&p, i);
        } else {
            let v: serde_json::Value = serde_json::from_slice(b).expect("json");
            assert_eq!(users.value(i), v["userId"].as_str().expect("user"), "row {i}");
            assert_eq!(durations.value(i), v["properties"]["durationMs"].as_i64().expect("d"));
        }
    }
    let enum_row = bad.iter().copied().find(|r| (r / 7) % 4 == 2).expect("an enum row");
    assert!(reason(&p, enum_row).starts_with("field 'eventName': 'nope' is not a symbol"));
    let kind_row = bad.iter().copied().find(|r| (r / 7) % 4 == 3).expect("a kind row");
    assert!(
        reason(&p, kind_row).starts_with("field 'properties.durationMs': expected long, found string"),
        "{}",
        reason(&p, kind_row)
    );
}

#[test]
fn bisection_isolates_rows_arrow_json_rejects() {
    // Rows that skipped the pre-pass: arrow-json rejects a string for a long.
    let s = example();
    let bad = GOOD.replace(r#""durationMs": 1500"#, r#""durationMs": "abc""#);
    let items: Vec<&[u8]> = (0..37).map(|i| if i == 5 || i == 30 { bad.as_bytes() } else { GOOD.as_bytes() }).collect();
    let values: Vec<Option<&[u8]>> = items.iter().map(|b| Some(*b)).collect();
    let rows: Vec<usize> = (0..items.len()).collect();
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let mut buf = Vec::new();
    s.decode_isolating(&rows, &values, &mut buf, &mut out, &mut failures).expect("no schema error");
    let failed: Vec<usize> = failures.iter().map(|(r, _)| *r).collect();
    assert_eq!(failed, vec![5, 30]);
    assert!(failures[0].1.starts_with("body could not be decoded: "), "{}", failures[0].1);
    assert!(failures[0].1.contains("abc"), "{}", failures[0].1);
    let decoded: Vec<usize> = out.iter().flat_map(|(r, _)| r.iter().copied()).collect();
    assert_eq!(decoded, (0..37).filter(|r| *r != 5 && *r != 30).collect::<Vec<_>>());
    for (rows, batch) in &out {
        assert_eq!(rows.len(), batch.num_rows());
    }

    // And end to end: the assembled batch has the good rows in place.
    let pieces: Vec<(Vec<usize>, RecordBatch)> =
        out.iter().map(|(r, b)| (r.clone(), s.convert_batch(b).expect("convert").0)).collect();
    let rescued = vec![None; 37];
    let batch = s.assemble(37, pieces, &failures, &rescued).expect("assemble");
    assert_eq!(batch.num_rows(), 37);
    let users = batch.column(3).as_string::<i32>();
    assert!(users.is_null(5) && users.is_null(30));
    assert_eq!(users.value(6), "u-42");
    assert_eq!(users.value(36), "u-42");
}

#[test]
fn decimals_are_exact_or_refused() {
    assert_eq!(parse_decimal("12.34", 18, 2), Ok(1234));
    assert_eq!(parse_decimal("12.3", 18, 2), Ok(1230));
    assert_eq!(parse_decimal("12", 18, 2), Ok(1200));
    assert_eq!(parse_decimal("-0.05", 18, 2), Ok(-5));
    assert_eq!(parse_decimal("+7.00", 18, 2), Ok(700));
    assert_eq!(parse_decimal("12.340", 18, 2), Ok(1234));
    assert_eq!(parse_decimal("1.5e2", 18, 2), Ok(15000));
    assert_eq!(parse_decimal("1234E-2", 18, 2), Ok(1234));
    assert_eq!(parse_decimal("0.000", 4, 2), Ok(0));
    assert_eq!(parse_decimal("00012.34", 4, 2), Ok(1234));
    assert_eq!(parse_decimal(".5", 4, 2), Ok(50));
    assert_eq!(parse_decimal("99.99", 4, 2), Ok(9999));
    assert_eq!(
        parse_decimal("99999999999999999999999999999999999999", 38, 0),
        Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
    );
    for bad in ["12.345", "0.001", "1e-3"] {
        let e = parse_decimal(bad, 18, 2).expect_err(bad);
        assert!(e.contains("more fractional digits than the scale 2"), "{bad}: {e}");
    }
    for bad in ["100.00", "1e2", "123"] {
        let e = parse_decimal(bad, 4, 2).expect_err(bad);
        assert!(e.contains("more digits than the precision 4"), "{bad}: {e}");
    }
    for bad in ["", "-", ".", "1.2.3", "1e", "12a", " 12", "1,5", "NaN", "1e+"] {
        let e = parse_decimal(bad, 18, 2).expect_err(bad);
        assert!(e.contains("is not a decimal number"), "{bad}: {e}");
    }
    assert!(parse_decimal("1e999999999999999999999", 38, 0).is_err());
    assert!(parse_decimal("1e-999999999999999999999", 38, 0).is_err());
    assert_eq!(parse_decimal("0e999999999999999999999", 38, 0), Ok(0));

    // Through decode, JSON numbers included.
    let s = schema(
        r#"{"type": "record", "name": "R", "fields": [{"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}}]}"#,
    );
    let p = decode(
        &s,
        &[
            Some(r#"{"d": 12.34}"#),
            Some(r#"{"d": "-999.99"}"#),
            Some(r#"{"d": 1000}"#),
            Some(r#"{"d": 0.125}"#),
            Some(r#"{"d": 3}"#),
        ],
    );
    let d = col(&p, "d").as_primitive::<Decimal128Type>();
    assert_eq!(d.value(0), 1234);
    assert_eq!(d.value(1), -99999);
    assert_eq!(d.value(4), 300);
    assert_eq!(
        p.failures,
        vec![
            (2, "field 'd': '1000' has more digits than the precision 5 allows (decimal(5, 2))".to_string()),
            (3, "field 'd': '0.125' has more fractional digits than the scale 2 allows (decimal(5, 2)); it is not rounded".to_string()),
        ]
    );
    assert_row_null(&p, 2);
    assert_row_null(&p, 3);
}

#[test]
fn enums_with_many_symbols_list_ten() {
    let symbols: Vec<String> = (0..20).map(|i| format!("\"s{i}\"")).collect();
    let s = schema(&format!(
        r#"{{"type": "record", "name": "R", "fields": [{{"name": "e", "type": {{"type": "enum", "name": "E", "symbols": [{}]}}}}]}}"#,
        symbols.join(",")
    ));
    let p = decode(&s, &[Some(r#"{"e": "s19"}"#), Some(r#"{"e": "s20"}"#)]);
    assert_eq!(strings(&p, "e").value(0), "s19");
    assert_eq!(
        reason(&p, 1),
        "field 'e': 's20' is not a symbol of enum E (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, … (20 in all))"
    );
}

#[test]
fn arrays_and_maps() {
    let s = schema(
        r#"{"type": "record", "name": "R", "fields": [
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "prices", "type": ["null", {"type": "array", "items": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}}]},
            {"name": "items", "type": ["null", {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
                {"name": "sku", "type": "string"},
                {"name": "at", "type": ["null", "string"], "weir.timestamp": "iso8601"}
            ]}}]},
            {"name": "attrs", "type": ["null", {"type": "map", "values": "long"}]},
            {"name": "seen", "type": ["null", {"type": "map", "values": ["null", {"type": "long", "logicalType": "timestamp-millis"}]}]}
        ]}"#,
    );
    let a = s.arrow_schema();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(a.field(0).data_type(), &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))));
    let DataType::Map(entries, false) = a.field(4).data_type() else {
        panic!("not a map");
    };
    let DataType::Struct(kv) = entries.data_type() else {
        panic!("entries not a struct");
    };
    assert_eq!(entries.name(), "entries");
    assert_eq!(kv[0].name(), "keys");
    assert!(!kv[0].is_nullable());
    assert_eq!(kv[1].name(), "values");
    assert_eq!(kv[1].data_type(), &ts);

    let p = decode(
        &s,
        &[
            Some(
                r#"{"tags": ["a", "b"], "prices": ["1.50", 2], "items": [{"sku": "x", "at": "2026-01-01T00:00:00Z"}, {"sku": "y", "extra": 1}], "attrs": {"k": 5}, "seen": {"a": 1000, "b": null}}"#,
            ),
            Some(r#"{"tags": [], "prices": null}"#),
            Some(r#"{"tags": ["a", 5]}"#),
            Some(r#"{"tags": ["a", null]}"#),
            Some(r#"{"tags": [], "prices": ["1.00", "1.001"]}"#),
            Some(r#"{"tags": [], "items": [{"sku": "x"}, {"sku": "y", "at": "soon"}]}"#),
            Some(r#"{"tags": [], "items": [{"at": null}]}"#),
            Some(r#"{"tags": [], "attrs": {"k": "v"}}"#),
            Some(r#"{"tags": "a"}"#),
            Some(r#"{"tags": [], "attrs": {"a": 1, "b": 2}, "seen": {"z": 1}}"#),
        ],
    );
    let reasons: Vec<(usize, &str)> = p.failures.iter().map(|(r, m)| (*r, m.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            (2, "field 'tags[1]': expected string, found number"),
            (3, "field 'tags[1]': expected string, found null"),
            (4, "field 'prices[1]': '1.001' has more fractional digits than the scale 2 allows (decimal(6, 2)); it is not rounded"),
            (5, "field 'items[1].at': 'soon' is not an ISO-8601 timestamp"),
            (6, "missing required field 'items[0].sku'"),
            (7, "field 'attrs.k': expected long, found string"),
            (8, "field 'tags': expected array, found string"),
        ]
    );
    // Row 0 values.
    let tags = col(&p, "tags").as_list::<i32>();
    let t0 = tags.value(0);
    assert_eq!(t0.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("a"), Some("b")]);
    assert_eq!(tags.value(1).len(), 0);
    let prices = col(&p, "prices").as_list::<i32>();
    let p0 = prices.value(0);
    assert_eq!(p0.as_primitive::<Decimal128Type>().values().to_vec(), vec![150, 200]);
    assert!(prices.is_null(1));
    let items = col(&p, "items").as_list::<i32>();
    let i0 = items.value(0);
    let i0 = i0.as_struct();
    assert_eq!(i0.column(0).as_string::<i32>().value(1), "y");
    assert_eq!(
        i0.column(1).as_primitive::<TimestampMicrosecondType>().value(0),
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("t").timestamp_micros()
    );
    assert_eq!(rescued(&p, 0), Some(serde_json::json!({"items[1].extra": 1})));
    let attrs = col(&p, "attrs").as_map();
    assert_eq!(attrs.value(0).column(0).as_string::<i32>().value(0), "k");
    assert_eq!(attrs.value(0).column(1).as_primitive::<Int64Type>().value(0), 5);
    let seen = col(&p, "seen").as_map();
    let s0 = seen.value(0);
    let s0v = s0.column(1).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(s0v.value(0), 1_000_000);
    assert!(s0v.is_null(1));
    let s9 = seen.value(9);
    assert_eq!(s9.column(1).as_primitive::<TimestampMicrosecondType>().value(0), 1000);
    assert_eq!(attrs.value(9).len(), 2);
    for row in 2..=8 {
        assert_row_null(&p, row);
    }
}

#[test]
fn timestamp_millis_micros_and_dates() {
    let s = schema(
        r#"{"type": "record", "name": "R", "fields": [
            {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
            {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {"name": "n", "type": ["null", "int"]},
            {"name": "x", "type": ["null", "double"]},
            {"name": "b", "type": ["null", "boolean"]},
            {"name": "raw", "type": ["null", "bytes"]}
        ]}"#,
    );
    let a = s.arrow_schema();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(a.field(0).data_type(), &ts);
    assert_eq!(a.field(1).data_type(), &ts);
    assert_eq!(a.field(2).data_type(), &DataType::Date32);
    assert_eq!(a.field(3).data_type(), &DataType::Int32);
    assert_eq!(a.field(6).data_type(), &DataType::Utf8);
    let p = decode(
        &s,
        &[
            Some(
                r#"{"ms": 1767225600123, "us": 1767225600123456, "day": "2026-01-31", "n": -5, "x": 1.5, "b": true, "raw": "\u00ff\u0001"}"#,
            ),
            Some(r#"{"ms": 0, "day": 20484}"#),
            Some(r#"{"ms": "2026-01-01T00:00:00Z"}"#),
            Some(r#"{"ms": 9223372036854775807}"#),
            Some(r#"{"ms": 0, "day": "31/01/2026"}"#),
            Some(r#"{"ms": 0, "n": 3000000000}"#),
            Some(r#"{"ms": 0, "x": "1.5"}"#),
        ],
    );
    let ms = col(&p, "ms").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ms.value(0), 1_767_225_600_123_000);
    assert_eq!(ms.value(1), 0);
    assert_eq!(col(&p, "us").as_primitive::<TimestampMicrosecondType>().value(0), 1_767_225_600_123_456);
    let day = col(&p, "day").as_primitive::<Date32Type>();
    assert_eq!(day.value(0), 20484);
    assert_eq!(day.value(1), 20484);
    assert_eq!(col(&p, "n").as_primitive::<Int32Type>().value(0), -5);
    assert_eq!(col(&p, "x").as_primitive::<Float64Type>().value(0), 1.5);
    assert!(col(&p, "b").as_boolean().value(0));
    assert_eq!(strings(&p, "raw").value(0), "\u{ff}\u{1}");
    let reasons: Vec<(usize, &str)> = p.failures.iter().map(|(r, m)| (*r, m.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            (2, "field 'ms': expected timestamp-millis long, found string"),
            (3, "field 'ms': 9223372036854775807 is out of range for timestamp-millis"),
            (4, "field 'day': '31/01/2026' is not a date (days since 1970-01-01 or YYYY-MM-DD)"),
            (5, "field 'n': 3000000000 is out of range for int"),
            (6, "field 'x': expected double, found string"),
        ]
    );
}

#[test]
fn nested_required_fields_and_null_records() {
    let s = schema(
        r#"{"type": "record", "name": "R", "fields": [
            {"name": "outer", "type": ["null", {"type": "record", "name": "O", "fields": [
                {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
                {"name": "inner", "type": {"type": "record", "name": "I", "fields": [{"name": "v", "type": "long"}]}}
            ]}]}
        ]}"#,
    );
    let p = decode(
        &s,
        &[
            Some(r#"{"outer": null}"#),
            Some(r#"{}"#),
            Some(r#"{"outer": {"id": "0B7C1C5E-2F1A-4C3E-9D2B-8A6F1E2D3C4B", "inner": {"v": 7}}}"#),
            Some(r#"{"outer": {"id": "0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b", "inner": {}}}"#),
            Some(r#"{"outer": {"id": "0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b"}}"#),
            Some(r#"{"outer": {"id": "0b7c1c5e2f1a4c3e9d2b8a6f1e2d3c4b", "inner": {"v": 1}}}"#),
        ],
    );
    let reasons: Vec<(usize, &str)> = p.failures.iter().map(|(r, m)| (*r, m.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            (3, "missing required field 'outer.inner.v'"),
            (4, "missing required field 'outer.inner'"),
            (5, "field 'outer.id': '0b7c1c5e2f1a4c3e9d2b8a6f1e2d3c4b' is not a UUID"),
        ]
    );
    let outer = col(&p, "outer").as_struct();
    assert!(outer.is_null(0));
    assert!(outer.is_null(1));
    assert!(outer.is_valid(2));
    let inner = outer.column(1).as_struct();
    assert_eq!(inner.column(0).as_primitive::<Int64Type>().value(2), 7);
    assert!(is_uuid("0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4b"));
    assert!(!is_uuid("0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4"));
    assert!(!is_uuid("0b7c1c5e-2f1a-4c3e-9d2b-8a6f1e2d3c4g"));
}

#[test]
#[ignore = "throughput measurement; run with --ignored --nocapture"]
fn throughput_200k_testgen_bodies() {
    let s = example();
    let mut rng = Rng::new(1);
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).single().expect("time");
    let raw: Vec<Vec<u8>> =
        (0..200_000).map(|i| user_event_body(&mut rng, i, at + chrono::Duration::milliseconds(i))).collect();
    let bytes: usize = raw.iter().map(Vec::len).sum();
    let array: BinaryArray = raw.iter().map(|b| Some(b.as_slice())).collect();
    // Warm up, then measure.
    let _ = s.decode(&array.slice(0, 10_000)).expect("decode");
    let start = std::time::Instant::now();
    let p = s.decode(&array).expect("decode");
    let secs = start.elapsed().as_secs_f64();
    assert!(p.failures.is_empty());
    println!(
        "body::decode: {} bodies ({:.0} bytes avg) in {:.3} s = {:.0} bodies/s, {:.1} MB/s",
        raw.len(),
        bytes as f64 / raw.len() as f64,
        secs,
        raw.len() as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

#[test]
fn parallel_decode_equals_decode_row_for_row() {
    use weir_testkit::capture::{user_event_body, Rng};
    let s = example();
    let at = DateTime::from_timestamp(1_793_000_000, 0).unwrap();
    let mut rng = Rng::new(5);
    let owned: Vec<Option<Vec<u8>>> = (0..40_000)
        .map(|i| match i % 97 {
            0 => None,
            1 => Some(b"{\"eventId\": \"cut".to_vec()),
            2 => Some(br#"{"eventId": "x", "unknownField": 1, "userId": "u-1"}"#.to_vec()),
            _ => Some(user_event_body(&mut rng, i, at)),
        })
        .collect();
    let array = BinaryArray::from(owned.iter().map(|b| b.as_deref()).collect::<Vec<_>>());
    let one = s.decode(&array).unwrap();
    for threads in [2, 3, 8] {
        let many = s.decode_parallel(&array, threads).unwrap();
        assert_eq!(many.failures, one.failures, "{threads} threads");
        assert_eq!(many.batch, one.batch, "{threads} threads");
    }
    assert!(!one.failures.is_empty() && one.failures.iter().any(|(r, _)| *r > 20_000));
}

#[test]
fn a_key_repeated_in_any_object_fails_the_row_naming_it() {
    let s = schema(
        r#"{"type": "record", "name": "R", "fields": [
            {"name": "userId", "type": "string"},
            {"name": "props", "type": ["null", {"type": "record", "name": "P", "fields": [{"name": "page", "type": ["null", "string"]}]}]},
            {"name": "items", "type": ["null", {"type": "array", "items": {"type": "record", "name": "I", "fields": [{"name": "sku", "type": "string"}]}}]},
            {"name": "attrs", "type": ["null", {"type": "map", "values": "long"}]}
        ]}"#,
    );
    let many: String = (0..40).map(|i| format!(r#""k{i}": {i}, "#)).collect();
    let many_repeated = format!(r#"{{"userId": "u", "attrs": {{{many}"k7": 0}}}}"#);
    let many_distinct = format!(r#"{{"userId": "u", "attrs": {{{many}"k40": 0}}}}"#);
    let rows = [
        r#"{"userId": "alice", "props": {"page": "/"}, "userId": "bob"}"#,
        r#"{"userId": "bob", "userId": null}"#,
        r#"{"user\u0049d": "alice", "userId": "alice"}"#,
        r#"{"userId": "u", "props": {"page": "/a", "page": "/b"}}"#,
        r#"{"userId": "u", "items": [{"sku": "x"}, {"sku": "y", "sku": "z"}]}"#,
        r#"{"userId": "u", "attrs": {"a": 1, "b": 2, "a": 3}}"#,
        r#"{"userId": "u", "extra": 1, "extra": 2}"#,
        r#"{"userId": "u", "props": {"note": {"x": [{"y": 1, "y": 2}]}}}"#,
        many_repeated.as_str(),
        // Not repeats: the same key in different objects, and many keys.
        r#"{"userId": "u", "props": {"page": "/", "userId": "v"}, "extra": {"userId": "w", "x": {"userId": 1}}}"#,
        many_distinct.as_str(),
    ];
    let p = decode(&s, &rows.iter().map(|r| Some(*r)).collect::<Vec<_>>());
    let reasons: Vec<(usize, &str)> = p.failures.iter().map(|(r, m)| (*r, m.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            (0, r#"duplicate key "userId""#),
            (1, r#"duplicate key "userId""#),
            (2, r#"duplicate key "userId""#),
            (3, r#"duplicate key "props.page""#),
            (4, r#"duplicate key "items[1].sku""#),
            (5, r#"duplicate key "attrs.a""#),
            (6, r#"duplicate key "extra""#),
            (7, r#"duplicate key "props.note.x[0].y""#),
            (8, r#"duplicate key "attrs.k7""#),
        ]
    );
    for row in 0..9 {
        assert_row_null(&p, row);
    }
    assert_eq!(strings(&p, "userId").value(9), "u");
    assert_eq!(
        rescued(&p, 9),
        Some(serde_json::json!({"props.userId": "v", "extra": {"userId": "w", "x": {"userId": 1}}}))
    );
    assert_eq!(col(&p, "attrs").as_map().value(10).len(), 41);
}
