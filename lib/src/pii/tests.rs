use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Date32Array, Decimal128Array, Float64Array, Int64Array, Int8Array,
    LargeStringArray, RecordBatch, StringArray, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt32Array,
};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int64Type, Schema, TimeUnit as ArrowTimeUnit,
    TimestampMicrosecondType, TimestampNanosecondType, TimestampSecondType, UInt32Type,
};

use super::*;

const KEY: &[u8] = b"unit-test-key-0123456789abcdef";
const OTHER_KEY: &[u8] = b"another-unit-test-key-98765432";

fn rule(column: &str, action: PiiAction) -> PiiRuleConfig {
    PiiRuleConfig { column: column.to_owned(), action, mask: None, to: None, bucket: None }
}

fn masked(column: &str, kind: MaskKind) -> PiiRuleConfig {
    PiiRuleConfig { mask: Some(kind), ..rule(column, PiiAction::Mask) }
}

fn truncated(column: &str, to: TimeUnit) -> PiiRuleConfig {
    PiiRuleConfig { to: Some(to), ..rule(column, PiiAction::Generalize) }
}

fn bucketed(column: &str, bucket: f64) -> PiiRuleConfig {
    PiiRuleConfig { bucket: Some(bucket), ..rule(column, PiiAction::Generalize) }
}

fn config(rules: Vec<PiiRuleConfig>) -> PiiConfig {
    PiiConfig { rules, ..PiiConfig::default() }
}

/// A batch of nullable columns.
fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> =
        columns.iter().map(|(name, array)| Field::new(*name, array.data_type().clone(), true)).collect();
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

/// Builds the rules for the batch's schema with [`KEY`] and applies them.
fn run(rules: Vec<PiiRuleConfig>, input: &RecordBatch) -> RecordBatch {
    config(rules).build_with_key(&input.schema(), Some(KEY)).unwrap().apply(input).unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch.column_by_name(column).unwrap();
    assert_eq!(array.data_type(), &DataType::Utf8);
    array.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect()
}

fn micros(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, s).unwrap().and_utc().timestamp_micros()
}

fn days(y: i32, mo: u32, d: u32) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    (NaiveDate::from_ymd_opt(y, mo, d).unwrap() - epoch).num_days() as i32
}

// ---------------------------------------------------------------- config --

#[test]
fn config_parses_from_pipeline_yaml() {
    let yaml = r#"
key_env: MY_PII_KEY
rules:
  - column: email
    action: hash
  - column: ipAddress
    action: mask
    mask: ip
  - column: eventTimestamp
    action: generalize
    to: month
  - column: durationMs
    action: generalize
    bucket: 1000
  - column: notes
    action: drop
"#;
    let cfg: PiiConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(cfg.key_env, "MY_PII_KEY");
    assert_eq!(cfg.rules.len(), 5);
    assert_eq!(cfg.rules[0].action, PiiAction::Hash);
    assert_eq!(cfg.rules[1].mask, Some(MaskKind::Ip));
    assert_eq!(cfg.rules[2].to, Some(TimeUnit::Month));
    assert_eq!(cfg.rules[3].bucket, Some(1000.0));
    assert_eq!(cfg.rules[4].action, PiiAction::Drop);
    assert!(cfg.needs_key());

    let defaults: PiiConfig = serde_yaml_ng::from_str("rules: []").unwrap();
    assert_eq!(defaults.key_env, DEFAULT_KEY_ENV);
    assert_eq!(PiiConfig::default().key_env, "WEIR_PII_KEY");
    assert!(!defaults.needs_key());

    let typo = serde_yaml_ng::from_str::<PiiConfig>("rules:\n  - column: a\n    action: hash\n    maks: ip\n");
    assert!(typo.unwrap_err().to_string().contains("maks"));
    let bad_kind = serde_yaml_ng::from_str::<PiiConfig>("rules:\n  - column: a\n    action: mask\n    mask: ssn\n");
    assert!(bad_kind.is_err());
}

// ------------------------------------------------------------------ hash --

#[test]
fn hash_is_deterministic_keyed_and_keeps_nulls() {
    let input = batch(vec![(
        "email",
        Arc::new(StringArray::from(vec![
            Some("a@example.com"),
            None,
            Some("a@example.com"),
            Some("b@example.com"),
            Some(""),
        ])) as ArrayRef,
    )]);
    let rules = vec![rule("email", PiiAction::Hash)];
    let out = strings(&run(rules.clone(), &input), "email");

    assert_eq!(out[0], out[2]);
    assert_ne!(out[0], out[3]);
    assert_eq!(out[1], None);
    for token in out.iter().flatten() {
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    // Same key, new build: same tokens.
    assert_eq!(strings(&run(rules.clone(), &input), "email"), out);
    // Different key: different tokens.
    let other = config(rules.clone()).build_with_key(&input.schema(), Some(OTHER_KEY)).unwrap().apply(&input).unwrap();
    let other = strings(&other, "email");
    assert_ne!(other[0], out[0]);
    assert_eq!(other[1], None);

    // hash_value agrees with the column.
    let built = config(rules).build_with_key(&input.schema(), Some(KEY)).unwrap();
    assert_eq!(built.hash_value("a@example.com"), out[0]);
    assert_eq!(built.hash_value(""), out[4]);
    // It is HMAC-SHA256(key, value).
    assert_eq!(built.hash_value("a@example.com").unwrap(), {
        let mut buf = [0u8; 64];
        HmacSha256::new(KEY).mac_hex(b"a@example.com", &mut buf).to_owned()
    });
}

#[test]
fn hash_covers_string_binary_and_non_string_columns() {
    let values = vec![Some("alice"), None, Some("bob")];
    let input = batch(vec![
        ("utf8", Arc::new(StringArray::from(values.clone())) as ArrayRef),
        ("large", Arc::new(LargeStringArray::from(values.clone())) as ArrayRef),
        ("view", Arc::new(StringViewArray::from(values.clone())) as ArrayRef),
        ("bin", Arc::new(BinaryArray::from(vec![Some(&b"alice"[..]), None, Some(&b"bob"[..])])) as ArrayRef),
        ("id", Arc::new(Int64Array::from(vec![Some(42), None, Some(-7)])) as ArrayRef),
        (
            "amount",
            Arc::new(Decimal128Array::from(vec![Some(1250), None, Some(-5)]).with_precision_and_scale(10, 2).unwrap())
                as ArrayRef,
        ),
    ]);
    let names = ["utf8", "large", "view", "bin", "id", "amount"];
    let rules = names.iter().map(|n| rule(n, PiiAction::Hash)).collect();
    let cfg = config(rules);
    let built = cfg.build_with_key(&input.schema(), Some(KEY)).unwrap();
    let out = built.apply(&input).unwrap();

    let reference = strings(&out, "utf8");
    for name in ["large", "view", "bin"] {
        assert_eq!(strings(&out, name), reference, "{name}");
    }
    assert_eq!(reference[0], built.hash_value("alice"));
    assert_eq!(strings(&out, "id"), vec![built.hash_value("42"), None, built.hash_value("-7")]);
    assert_eq!(strings(&out, "amount"), vec![built.hash_value("12.50"), None, built.hash_value("-0.05")]);
}

#[test]
fn hash_value_is_none_without_key() {
    let schema = Schema::new(vec![Field::new("notes", DataType::Utf8, true)]);
    let built = config(vec![rule("notes", PiiAction::Drop)]).build_with_key(&schema, None).unwrap();
    assert_eq!(built.hash_value("x"), None);
}

// ------------------------------------------------------------------ mask --

#[test]
fn mask_email_column() {
    let input = batch(vec![(
        "email",
        Arc::new(StringArray::from(vec![
            Some("john.doe@example.com"),
            None,
            Some("x@y.org"),
            Some("no-at-sign"),
            Some(""),
        ])) as ArrayRef,
    )]);
    let out = run(vec![masked("email", MaskKind::Email)], &input);
    assert_eq!(
        strings(&out, "email"),
        vec![
            Some("j***@example.com".to_owned()),
            None,
            Some("x***@y.org".to_owned()),
            Some("***".to_owned()),
            Some("***".to_owned()),
        ]
    );
}

#[test]
fn mask_ip_column() {
    let input = batch(vec![(
        "ip",
        Arc::new(StringArray::from(vec![
            Some("10.1.2.3"),
            Some("2001:db8:85a3::8a2e:370:7334"),
            None,
            Some("10.1.2"),
            Some("not an ip"),
            Some("fe80::1"),
        ])) as ArrayRef,
    )]);
    let out = run(vec![masked("ip", MaskKind::Ip)], &input);
    assert_eq!(
        strings(&out, "ip"),
        vec![
            Some("10.1.2.0".to_owned()),
            Some("2001:db8:85a3::".to_owned()),
            None,
            Some("***".to_owned()),
            Some("***".to_owned()),
            Some("fe80::".to_owned()),
        ]
    );
}

#[test]
fn mask_phone_column() {
    let input = batch(vec![(
        "phone",
        Arc::new(StringArray::from(vec![Some("+44 20 7946 0958"), Some("555-0100"), None, Some("n/a")])) as ArrayRef,
    )]);
    let out = run(vec![masked("phone", MaskKind::Phone)], &input);
    assert_eq!(
        strings(&out, "phone"),
        vec![Some("+** ** **** **58".to_owned()), Some("***-**00".to_owned()), None, Some("***".to_owned()),]
    );
}

#[test]
fn mask_card_column() {
    let input = batch(vec![(
        "card",
        Arc::new(StringArray::from(vec![
            Some("4111 1111 1111 1234"),
            Some("5500-0000-0000-0004"),
            None,
            Some("unknown"),
        ])) as ArrayRef,
    )]);
    let out = run(vec![masked("card", MaskKind::Card)], &input);
    assert_eq!(
        strings(&out, "card"),
        vec![
            Some("**** **** **** 1234".to_owned()),
            Some("****-****-****-0004".to_owned()),
            None,
            Some("***".to_owned()),
        ]
    );
}

#[test]
fn mask_accepts_large_and_view_strings_and_outputs_utf8() {
    let values = vec![Some("john.doe@example.com"), None];
    let input = batch(vec![
        ("large", Arc::new(LargeStringArray::from(values.clone())) as ArrayRef),
        ("view", Arc::new(StringViewArray::from(values)) as ArrayRef),
    ]);
    let out = run(vec![masked("large", MaskKind::Email), masked("view", MaskKind::Email)], &input);
    let expected = vec![Some("j***@example.com".to_owned()), None];
    assert_eq!(strings(&out, "large"), expected);
    assert_eq!(strings(&out, "view"), expected);
}

// ------------------------------------------------------------ generalize --

#[test]
fn generalize_timestamps_truncate_in_utc_and_keep_timezone() {
    // 23:30 UTC on 31 March is already 1 April 01:30 in +02:00: truncation
    // happens on the UTC instant, the timezone is kept on the type.
    let near_midnight = micros(2024, 3, 31, 23, 30, 15);
    // Before 1970: negative values must floor, not truncate towards zero.
    let before_epoch = micros(1969, 12, 31, 23, 59, 59) + 500_000;
    let column = || {
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(near_midnight), None, Some(before_epoch)])
                .with_timezone("+02:00"),
        ) as ArrayRef
    };
    let input = batch(vec![("h", column()), ("d", column()), ("m", column()), ("y", column())]);
    let out = run(
        vec![
            truncated("h", TimeUnit::Hour),
            truncated("d", TimeUnit::Day),
            truncated("m", TimeUnit::Month),
            truncated("y", TimeUnit::Year),
        ],
        &input,
    );
    let expected = [
        ("h", micros(2024, 3, 31, 23, 0, 0), micros(1969, 12, 31, 23, 0, 0)),
        ("d", micros(2024, 3, 31, 0, 0, 0), micros(1969, 12, 31, 0, 0, 0)),
        ("m", micros(2024, 3, 1, 0, 0, 0), micros(1969, 12, 1, 0, 0, 0)),
        ("y", micros(2024, 1, 1, 0, 0, 0), micros(1969, 1, 1, 0, 0, 0)),
    ];
    for (name, first, second) in expected {
        let array = out.column_by_name(name).unwrap();
        assert_eq!(array.data_type(), &DataType::Timestamp(ArrowTimeUnit::Microsecond, Some("+02:00".into())));
        let values: Vec<Option<i64>> = array.as_primitive::<TimestampMicrosecondType>().iter().collect();
        assert_eq!(values, vec![Some(first), None, Some(second)], "{name}");
    }
}

#[test]
fn generalize_timestamps_in_other_units() {
    let s = micros(2024, 2, 29, 13, 45, 59) / 1_000_000;
    let ns = micros(2024, 2, 29, 13, 45, 59) * 1_000 + 123;
    let input = batch(vec![
        ("s", Arc::new(TimestampSecondArray::from(vec![s])) as ArrayRef),
        ("ns", Arc::new(TimestampNanosecondArray::from(vec![ns]).with_timezone("UTC")) as ArrayRef),
    ]);
    let out = run(vec![truncated("s", TimeUnit::Hour), truncated("ns", TimeUnit::Month)], &input);
    assert_eq!(
        out.column_by_name("s").unwrap().as_primitive::<TimestampSecondType>().value(0),
        micros(2024, 2, 29, 13, 0, 0) / 1_000_000
    );
    let ns_out = out.column_by_name("ns").unwrap();
    assert_eq!(ns_out.data_type(), &DataType::Timestamp(ArrowTimeUnit::Nanosecond, Some("UTC".into())));
    assert_eq!(ns_out.as_primitive::<TimestampNanosecondType>().value(0), micros(2024, 2, 1, 0, 0, 0) * 1_000);
}

#[test]
fn generalize_dates() {
    let column =
        || Arc::new(Date32Array::from(vec![Some(days(2024, 3, 31)), None, Some(days(1969, 7, 20))])) as ArrayRef;
    let input = batch(vec![("m", column()), ("y", column()), ("d", column())]);
    let out = run(
        vec![truncated("m", TimeUnit::Month), truncated("y", TimeUnit::Year), truncated("d", TimeUnit::Day)],
        &input,
    );
    let get = |name: &str| -> Vec<Option<i32>> {
        out.column_by_name(name).unwrap().as_primitive::<Date32Type>().iter().collect()
    };
    assert_eq!(get("m"), vec![Some(days(2024, 3, 1)), None, Some(days(1969, 7, 1))]);
    assert_eq!(get("y"), vec![Some(days(2024, 1, 1)), None, Some(days(1969, 1, 1))]);
    assert_eq!(get("d"), vec![Some(days(2024, 3, 31)), None, Some(days(1969, 7, 20))]);
}

#[test]
fn generalize_integers_floor_including_negatives() {
    let input = batch(vec![
        (
            "ms",
            Arc::new(Int64Array::from(vec![Some(1999), Some(1000), Some(0), Some(-1), Some(-1000), Some(-1001), None]))
                as ArrayRef,
        ),
        (
            "u",
            Arc::new(UInt32Array::from(vec![Some(7), Some(4), None, Some(5), Some(0), Some(u32::MAX), Some(14)]))
                as ArrayRef,
        ),
    ]);
    let out = run(vec![bucketed("ms", 1000.0), bucketed("u", 5.0)], &input);
    let ms: Vec<Option<i64>> = out.column_by_name("ms").unwrap().as_primitive::<Int64Type>().iter().collect();
    assert_eq!(ms, vec![Some(1000), Some(1000), Some(0), Some(-1000), Some(-1000), Some(-2000), None]);
    let u: Vec<Option<u32>> = out.column_by_name("u").unwrap().as_primitive::<UInt32Type>().iter().collect();
    assert_eq!(u, vec![Some(5), Some(0), None, Some(5), Some(0), Some(u32::MAX / 5 * 5), Some(10)]);
}

#[test]
fn generalize_floats_floor() {
    let input = batch(vec![(
        "x",
        Arc::new(Float64Array::from(vec![Some(2.7), Some(-0.1), Some(3.0), None, Some(f64::INFINITY)])) as ArrayRef,
    )]);
    let out = run(vec![bucketed("x", 0.5)], &input);
    let x: Vec<Option<f64>> = out.column_by_name("x").unwrap().as_primitive::<Float64Type>().iter().collect();
    assert_eq!(x, vec![Some(2.5), Some(-0.5), Some(3.0), None, Some(f64::INFINITY)]);
}

#[test]
fn generalize_decimals_use_the_scale() {
    let input = batch(vec![(
        "amount",
        Arc::new(
            Decimal128Array::from(vec![Some(1234), Some(-1), Some(50), None]).with_precision_and_scale(10, 2).unwrap(),
        ) as ArrayRef,
    )]);
    // 0.5 at scale 2 is 50 units: 12.34 → 12.00, -0.01 → -0.50, 0.50 → 0.50.
    let out = run(vec![bucketed("amount", 0.5)], &input);
    let array = out.column_by_name("amount").unwrap();
    assert_eq!(array.data_type(), &DataType::Decimal128(10, 2));
    let values: Vec<Option<i128>> = array.as_primitive::<Decimal128Type>().iter().collect();
    assert_eq!(values, vec![Some(1200), Some(-50), Some(50), None]);
}

#[test]
fn generalize_out_of_range_is_an_error_without_the_value() {
    let input = batch(vec![("small", Arc::new(Int8Array::from(vec![-128i8])) as ArrayRef)]);
    let built = config(vec![bucketed("small", 3.0)]).build_with_key(&input.schema(), None).unwrap();
    let err = built.apply(&input).unwrap_err();
    assert!(matches!(err, PiiError::Apply { .. }), "{err:?}");
    assert!(!err.to_string().contains("128"), "{err}");

    let input = batch(vec![(
        "d",
        Arc::new(Decimal128Array::from(vec![-999]).with_precision_and_scale(3, 0).unwrap()) as ArrayRef,
    )]);
    let err =
        config(vec![bucketed("d", 10.0)]).build_with_key(&input.schema(), None).unwrap().apply(&input).unwrap_err();
    assert!(matches!(err, PiiError::Apply { .. }), "{err:?}");
    assert!(!err.to_string().contains("999"), "{err}");
}

// ------------------------------------------------------ drop and schema --

#[test]
fn drop_removes_the_column_and_keeps_rows() {
    let input = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ("notes", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
    ]);
    let out = run(vec![rule("notes", PiiAction::Drop)], &input);
    assert_eq!(out.num_columns(), 1);
    assert!(out.column_by_name("notes").is_none());
    assert_eq!(out.column(0).as_ref(), input.column(0).as_ref());

    let out = run(vec![rule("notes", PiiAction::Drop), rule("id", PiiAction::Drop)], &input);
    assert_eq!(out.num_columns(), 0);
    assert_eq!(out.num_rows(), 3);
}

#[test]
fn output_schema_matches_applied_batch() {
    let ts_type = DataType::Timestamp(ArrowTimeUnit::Millisecond, Some("UTC".into()));
    let checked = Schema::new(vec![
        Field::new("email", DataType::Utf8, false)
            .with_metadata(HashMap::from([("comment".to_owned(), "contact".to_owned())])),
        Field::new("ipAddress", DataType::LargeUtf8, true),
        Field::new("eventTimestamp", ts_type.clone(), false),
        Field::new("durationMs", DataType::Int64, true),
        Field::new("notes", DataType::Utf8, true),
        Field::new("userId", DataType::Int64, false),
    ]);
    // The batch carries an extra lineage column the rules never saw.
    let mut fields: Vec<Field> = checked.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.insert(3, Field::new("_source_file", DataType::Utf8, false));
    let batch_schema =
        Arc::new(Schema::new_with_metadata(fields, HashMap::from([("weir".to_owned(), "1".to_owned())])));
    let input = RecordBatch::try_new(
        batch_schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a@b.c", "d@e.f"])),
            Arc::new(LargeStringArray::from(vec![Some("10.0.0.7"), None])),
            Arc::new(
                deltalake::arrow::array::TimestampMillisecondArray::from(vec![1_700_000_000_123, 1_700_000_999_000])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["f1", "f2"])),
            Arc::new(Int64Array::from(vec![Some(1234), None])),
            Arc::new(StringArray::from(vec![Some("secret"), None])),
            Arc::new(Int64Array::from(vec![7, 8])),
        ],
    )
    .unwrap();
    let cfg = config(vec![
        rule("email", PiiAction::Hash),
        masked("ipAddress", MaskKind::Ip),
        truncated("eventTimestamp", TimeUnit::Day),
        bucketed("durationMs", 1000.0),
        rule("notes", PiiAction::Drop),
        rule("userId", PiiAction::Hash),
    ]);
    assert!(cfg.check(&checked).is_empty());
    let built = cfg.build_with_key(&checked, Some(KEY)).unwrap();
    let out = built.apply(&input).unwrap();
    let expected = built.output_schema(&batch_schema);
    assert_eq!(out.schema(), expected);

    let names: Vec<&str> = expected.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["email", "ipAddress", "eventTimestamp", "_source_file", "durationMs", "userId"]);
    let email = expected.field_with_name("email").unwrap();
    assert_eq!(email.data_type(), &DataType::Utf8);
    assert!(!email.is_nullable());
    assert_eq!(email.metadata().get("comment").map(String::as_str), Some("contact"));
    assert_eq!(expected.field_with_name("ipAddress").unwrap().data_type(), &DataType::Utf8);
    assert_eq!(expected.field_with_name("eventTimestamp").unwrap().data_type(), &ts_type);
    assert_eq!(expected.field_with_name("userId").unwrap().data_type(), &DataType::Utf8);
    assert!(!expected.field_with_name("userId").unwrap().is_nullable());
    assert_eq!(expected.metadata().get("weir").map(String::as_str), Some("1"));
    // The lineage column is the very same array.
    assert_eq!(out.column_by_name("_source_file").unwrap().as_ref(), input.column(3).as_ref());
}

#[test]
fn apply_rejects_missing_columns_and_changed_types() {
    let schema = Schema::new(vec![Field::new("email", DataType::Utf8, true)]);
    let built = config(vec![rule("email", PiiAction::Hash)]).build_with_key(&schema, Some(KEY)).unwrap();

    let other = batch(vec![("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
    let err = built.apply(&other).unwrap_err();
    assert!(matches!(err, PiiError::MissingColumn { ref column } if column == "email"));

    let changed = batch(vec![("email", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
    let err = built.apply(&changed).unwrap_err();
    assert!(matches!(err, PiiError::TypeMismatch { .. }), "{err:?}");
}

// ----------------------------------------------------------------- check --

fn check_schema() -> Schema {
    Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("ipAddress", DataType::Utf8, true),
        Field::new("eventTimestamp", DataType::Timestamp(ArrowTimeUnit::Microsecond, None), true),
        Field::new("eventDate", DataType::Date32, true),
        Field::new("durationMs", DataType::Int64, true),
        Field::new("tiny", DataType::Int8, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("user", DataType::Struct(vec![Field::new("name", DataType::Utf8, true)].into()), true),
    ])
}

/// The single problem `rule` has, asserting it is located at `rules[0]`.
fn problem(rule: PiiRuleConfig) -> String {
    let problems = config(vec![rule]).check(&check_schema());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("rules[0]: "), "{}", problems[0]);
    problems.into_iter().next().unwrap()
}

#[test]
fn check_accepts_valid_rules() {
    let cfg = config(vec![
        rule("email", PiiAction::Hash),
        masked("ipAddress", MaskKind::Ip),
        truncated("eventTimestamp", TimeUnit::Hour),
        truncated("eventDate", TimeUnit::Month),
        bucketed("durationMs", 1000.0),
        bucketed("amount", 0.05),
        rule("user", PiiAction::Drop),
    ]);
    assert_eq!(cfg.check(&check_schema()), Vec::<String>::new());
}

#[test]
fn check_unknown_column_lists_close_names() {
    let msg = problem(rule("emial", PiiAction::Hash));
    assert!(msg.contains("\"emial\" not found"), "{msg}");
    assert!(msg.contains("did you mean \"email\""), "{msg}");
    assert!(msg.contains("top-level"), "{msg}");

    let msg = problem(rule("ipaddress", PiiAction::Drop));
    assert!(msg.contains("\"ipAddress\""), "{msg}");

    let msg = problem(rule("zzzzzz", PiiAction::Drop));
    assert!(msg.contains("the columns are:"), "{msg}");

    let msg = problem(rule("user.name", PiiAction::Hash));
    assert!(msg.contains("nested paths are not supported"), "{msg}");
    assert!(msg.contains("\"user\""), "{msg}");
}

#[test]
fn check_action_option_mismatches() {
    let msg = problem(rule("email", PiiAction::Mask));
    assert!(msg.contains("needs `mask:`"), "{msg}");

    let both = PiiRuleConfig { to: Some(TimeUnit::Day), ..masked("email", MaskKind::Email) };
    let msg = problem(both);
    assert!(msg.contains("`to:` does not apply to action mask"), "{msg}");

    let msg = problem(PiiRuleConfig { mask: Some(MaskKind::Email), ..rule("email", PiiAction::Hash) });
    assert!(msg.contains("`mask:` does not apply to action hash"), "{msg}");

    let msg = problem(PiiRuleConfig { bucket: Some(10.0), ..rule("durationMs", PiiAction::Drop) });
    assert!(msg.contains("`bucket:` does not apply to action drop"), "{msg}");

    let msg = problem(rule("durationMs", PiiAction::Generalize));
    assert!(msg.contains("needs `to:`"), "{msg}");

    let msg = problem(PiiRuleConfig { bucket: Some(10.0), ..truncated("eventTimestamp", TimeUnit::Day) });
    assert!(msg.contains("not both"), "{msg}");
}

#[test]
fn check_types_that_do_not_fit() {
    let msg = problem(masked("durationMs", MaskKind::Phone));
    assert!(msg.contains("mask needs a string column") && msg.contains("Int64"), "{msg}");

    let msg = problem(truncated("email", TimeUnit::Day));
    assert!(msg.contains("`to:` needs a timestamp or date column"), "{msg}");

    let msg = problem(truncated("eventDate", TimeUnit::Hour));
    assert!(msg.contains("`to: hour` does not apply to date column"), "{msg}");

    let msg = problem(bucketed("email", 10.0));
    assert!(msg.contains("`bucket:` needs an integer, float or decimal column"), "{msg}");

    let msg = problem(rule("user", PiiAction::Hash));
    assert!(msg.contains("hash needs"), "{msg}");
}

#[test]
fn check_bucket_values() {
    for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        let msg = problem(bucketed("durationMs", bad));
        assert!(msg.contains("greater than 0"), "{msg}");
    }
    let msg = problem(bucketed("durationMs", 2.5));
    assert!(msg.contains("whole number"), "{msg}");
    let msg = problem(bucketed("tiny", 1000.0));
    assert!(msg.contains("too large"), "{msg}");
    let msg = problem(bucketed("amount", 0.001));
    assert!(msg.contains("decimal column") && msg.contains("scale 2"), "{msg}");
}

#[test]
fn check_same_column_twice_and_reports_every_problem_with_its_index() {
    let cfg = config(vec![
        rule("email", PiiAction::Hash),
        rule("nope", PiiAction::Drop),
        masked("email", MaskKind::Email),
        bucketed("durationMs", -1.0),
    ]);
    let problems = cfg.check(&check_schema());
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("rules[1]: column \"nope\" not found"));
    assert!(problems[1].starts_with("rules[2]: column \"email\" already has a rule (rules[0])"));
    assert!(problems[2].starts_with("rules[3]: "));

    let err = cfg.build_with_key(&check_schema(), Some(KEY)).unwrap_err();
    match &err {
        PiiError::Invalid(list) => assert_eq!(list, &problems),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("rules[2]"));
}

#[test]
fn check_rejects_an_unusable_key_env() {
    let cfg = PiiConfig { key_env: "BAD=NAME".to_owned(), rules: vec![rule("email", PiiAction::Hash)] };
    let problems = cfg.check(&check_schema());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("key_env: "));
    // Without a hash rule the variable is never read, so it does not matter.
    let cfg = PiiConfig { key_env: String::new(), rules: vec![rule("email", PiiAction::Drop)] };
    assert!(cfg.check(&check_schema()).is_empty());
}

// ------------------------------------------------------------------- key --

#[test]
fn missing_key_names_the_variable_and_never_a_value() {
    let variable = "WEIR_PII_TEST_KEY_MISSING_3F9A";
    std::env::remove_var(variable);
    let cfg = PiiConfig { key_env: variable.to_owned(), rules: vec![rule("email", PiiAction::Hash)] };
    let err = cfg.build(&check_schema()).unwrap_err();
    assert!(matches!(err, PiiError::MissingKey { .. }), "{err:?}");
    assert!(err.to_string().contains(variable), "{err}");

    // Set but empty is missing too.
    let empty = "WEIR_PII_TEST_KEY_EMPTY_3F9A";
    std::env::set_var(empty, "");
    let cfg = PiiConfig { key_env: empty.to_owned(), ..cfg };
    let err = cfg.build(&check_schema()).unwrap_err();
    assert!(matches!(err, PiiError::MissingKey { .. }), "{err:?}");
    assert!(err.to_string().contains(empty), "{err}");
    std::env::remove_var(empty);

    // No key given to build_with_key.
    let err = cfg.build_with_key(&check_schema(), None).unwrap_err();
    assert!(matches!(err, PiiError::MissingKey { .. }), "{err:?}");
}

#[test]
fn weak_key_names_the_variable_and_never_the_value() {
    let variable = "WEIR_PII_TEST_KEY_WEAK_3F9A";
    let value = "tiny-s3cret";
    std::env::set_var(variable, value);
    let cfg = PiiConfig { key_env: variable.to_owned(), rules: vec![rule("email", PiiAction::Hash)] };
    let err = cfg.build(&check_schema()).unwrap_err();
    std::env::remove_var(variable);
    assert!(matches!(err, PiiError::WeakKey { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(variable), "{shown}");
    assert!(!shown.contains(value), "{shown}");

    let err = cfg.build_with_key(&check_schema(), Some(&b"0123456789abcde"[..])).unwrap_err();
    assert!(matches!(err, PiiError::WeakKey { .. }), "{err:?}");
}

#[test]
fn build_reads_the_key_from_the_environment() {
    let variable = "WEIR_PII_TEST_KEY_SET_3F9A";
    std::env::set_var(variable, std::str::from_utf8(KEY).unwrap());
    let cfg = PiiConfig { key_env: variable.to_owned(), rules: vec![rule("email", PiiAction::Hash)] };
    let from_env = cfg.build(&check_schema());
    std::env::remove_var(variable);
    let from_env = from_env.unwrap();
    let given = cfg.build_with_key(&check_schema(), Some(KEY)).unwrap();
    assert!(from_env.hash_value("x@y.z").is_some());
    assert_eq!(from_env.hash_value("x@y.z"), given.hash_value("x@y.z"));
}

#[test]
fn no_key_is_needed_without_hash_rules() {
    let cfg = PiiConfig {
        key_env: "WEIR_PII_TEST_KEY_NEVER_SET_3F9A".to_owned(),
        rules: vec![masked("email", MaskKind::Email), rule("user", PiiAction::Drop)],
    };
    assert!(!cfg.needs_key());
    let built = cfg.build(&check_schema()).unwrap();
    assert_eq!(built.hash_value("x"), None);
}

#[test]
fn debug_of_rules_never_shows_the_key() {
    let cfg = config(vec![rule("email", PiiAction::Hash), masked("ipAddress", MaskKind::Ip)]);
    let built = cfg.build_with_key(&check_schema(), Some(KEY)).unwrap();
    let shown = format!("{built:?} {built:#?}");
    let key_text = std::str::from_utf8(KEY).unwrap();
    assert!(!shown.contains(key_text), "{shown}");
    let key_hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&key_hex), "{shown}");
    let key_list = format!("{:?}", &KEY[..4]);
    assert!(!shown.contains(key_list.trim_matches(['[', ']'])), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("email"), "{shown}");
}

/// A key stored in a file comes with the file's line break: `\n` or
/// `\r\n` at the end is not part of the key, in the environment or given.
#[test]
fn a_trailing_line_break_is_not_part_of_the_key() {
    let variable = "WEIR_PII_TEST_KEY_NEWLINE_3F9A";
    let cfg = PiiConfig { key_env: variable.to_owned(), rules: vec![rule("email", PiiAction::Hash)] };
    let plain = cfg.build_with_key(&check_schema(), Some(KEY)).unwrap().hash_value("x@y.z");
    assert!(plain.is_some());
    for ending in [&b"\n"[..], b"\r\n"] {
        let key = [KEY, ending].concat();
        let given = cfg.build_with_key(&check_schema(), Some(&key)).unwrap();
        assert_eq!(given.hash_value("x@y.z"), plain, "{ending:?}");
        std::env::set_var(variable, std::str::from_utf8(&key).unwrap());
        let from_env = cfg.build(&check_schema());
        std::env::remove_var(variable);
        assert_eq!(from_env.unwrap().hash_value("x@y.z"), plain, "{ending:?}");
    }
    // Other characters are the key's own.
    let spaced = [KEY, b" "].concat();
    assert_ne!(cfg.build_with_key(&check_schema(), Some(&spaced)).unwrap().hash_value("x@y.z"), plain);
}
