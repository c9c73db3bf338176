//! Generalisation kernels: truncating timestamps and dates, flooring numbers
//! to a bucket. All keep the column's data type (timezone, precision and
//! scale included) and leave nulls null.
//!
//! Errors never contain a value (they end up in logs): only what went wrong.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use deltalake::arrow::datatypes::{
    i256, ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type,
    Decimal32Type, Decimal64Type, DecimalType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimeUnit as ArrowTimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

use super::TimeUnit;

/// Days from 0001-01-01 (chrono's "day 1 of the common era" minus one) to
/// 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The message for a value whose generalised form does not fit the type.
const OUT_OF_RANGE: &str = "a value is out of range once generalised";

/// Truncates a timestamp or date column to the start of its year, month,
/// day or hour (UTC).
pub(crate) fn truncate(column: &ArrayRef, to: TimeUnit) -> Result<ArrayRef, String> {
    match column.data_type() {
        DataType::Timestamp(ArrowTimeUnit::Second, _) => truncate_ticks::<TimestampSecondType>(column, 86_400, to),
        DataType::Timestamp(ArrowTimeUnit::Millisecond, _) => {
            truncate_ticks::<TimestampMillisecondType>(column, 86_400_000, to)
        }
        DataType::Timestamp(ArrowTimeUnit::Microsecond, _) => {
            truncate_ticks::<TimestampMicrosecondType>(column, 86_400_000_000, to)
        }
        DataType::Timestamp(ArrowTimeUnit::Nanosecond, _) => {
            truncate_ticks::<TimestampNanosecondType>(column, 86_400_000_000_000, to)
        }
        DataType::Date64 if to != TimeUnit::Hour => truncate_ticks::<Date64Type>(column, 86_400_000, to),
        DataType::Date32 if to != TimeUnit::Hour => {
            let array = column.as_primitive::<Date32Type>();
            let out = array
                .try_unary::<_, Date32Type, ()>(|days| {
                    let t = truncate_days(i64::from(days), to)?;
                    i32::try_from(t).map_err(|_| ())
                })
                .map_err(|()| OUT_OF_RANGE.to_owned())?;
            Ok(Arc::new(out.with_data_type(column.data_type().clone())))
        }
        other => Err(format!("cannot truncate a {other} column")),
    }
}

/// Truncates an `i64` ticks-since-epoch column (`ticks_per_day` ticks a day).
fn truncate_ticks<T>(column: &ArrayRef, ticks_per_day: i64, to: TimeUnit) -> Result<ArrayRef, String>
where
    T: ArrowPrimitiveType<Native = i64>,
{
    let array = column.as_primitive::<T>();
    let out: PrimitiveArray<T> = match to {
        TimeUnit::Hour => {
            let per_hour = ticks_per_day / 24;
            array.try_unary::<_, T, ()>(|v| floor_native(v, per_hour))
        }
        TimeUnit::Day => array.try_unary::<_, T, ()>(|v| floor_native(v, ticks_per_day)),
        TimeUnit::Month | TimeUnit::Year => array.try_unary::<_, T, ()>(|v| {
            let days = truncate_days(v.div_euclid(ticks_per_day), to)?;
            days.checked_mul(ticks_per_day).ok_or(())
        }),
    }
    .map_err(|()| OUT_OF_RANGE.to_owned())?;
    Ok(Arc::new(out.with_data_type(column.data_type().clone())))
}

/// Days since 1970-01-01 → days since 1970-01-01 of the first day of the
/// year / month (day: unchanged).
fn truncate_days(days: i64, to: TimeUnit) -> Result<i64, ()> {
    match to {
        TimeUnit::Day | TimeUnit::Hour => Ok(days),
        TimeUnit::Month | TimeUnit::Year => {
            let ce = days.checked_add(UNIX_EPOCH_DAYS_FROM_CE).ok_or(())?;
            let date = NaiveDate::from_num_days_from_ce_opt(i32::try_from(ce).map_err(|_| ())?).ok_or(())?;
            let month = if to == TimeUnit::Year { 1 } else { date.month() };
            let first = NaiveDate::from_ymd_opt(date.year(), month, 1).ok_or(())?;
            Ok(i64::from(first.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE)
        }
    }
}

/// The bucket of a `generalize` rule on a number column, resolved for the
/// column's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Bucket {
    /// Integers and decimals: the bucket in the column's native units (for
    /// decimals, `bucket × 10^scale`). Always ≥ 1.
    Units(i128),
    /// Floating point columns.
    Float(f64),
}

/// Floors every number to a multiple of the bucket.
pub(crate) fn floor_to_bucket(column: &ArrayRef, bucket: Bucket) -> Result<ArrayRef, String> {
    match (column.data_type(), bucket) {
        (DataType::Int8, Bucket::Units(b)) => floor_ints::<Int8Type>(column, b),
        (DataType::Int16, Bucket::Units(b)) => floor_ints::<Int16Type>(column, b),
        (DataType::Int32, Bucket::Units(b)) => floor_ints::<Int32Type>(column, b),
        (DataType::Int64, Bucket::Units(b)) => floor_ints::<Int64Type>(column, b),
        (DataType::UInt8, Bucket::Units(b)) => floor_ints::<UInt8Type>(column, b),
        (DataType::UInt16, Bucket::Units(b)) => floor_ints::<UInt16Type>(column, b),
        (DataType::UInt32, Bucket::Units(b)) => floor_ints::<UInt32Type>(column, b),
        (DataType::UInt64, Bucket::Units(b)) => floor_ints::<UInt64Type>(column, b),
        (DataType::Decimal32(p, _), Bucket::Units(b)) => floor_decimals::<Decimal32Type>(column, b, *p),
        (DataType::Decimal64(p, _), Bucket::Units(b)) => floor_decimals::<Decimal64Type>(column, b, *p),
        (DataType::Decimal128(p, _), Bucket::Units(b)) => floor_decimals::<Decimal128Type>(column, b, *p),
        (DataType::Decimal256(p, _), Bucket::Units(b)) => floor_decimals::<Decimal256Type>(column, b, *p),
        (DataType::Float32, Bucket::Float(b)) => {
            let out =
                column.as_primitive::<Float32Type>().unary::<_, Float32Type>(|v| floor_float(f64::from(v), b) as f32);
            Ok(Arc::new(out))
        }
        (DataType::Float64, Bucket::Float(b)) => {
            let out = column.as_primitive::<Float64Type>().unary::<_, Float64Type>(|v| floor_float(v, b));
            Ok(Arc::new(out))
        }
        (other, _) => Err(format!("cannot bucket a {other} column")),
    }
}

/// Infinite and NaN values are left as they are.
fn floor_float(v: f64, bucket: f64) -> f64 {
    if v.is_finite() {
        (v / bucket).floor() * bucket
    } else {
        v
    }
}

fn floor_ints<T>(column: &ArrayRef, bucket: i128) -> Result<ArrayRef, String>
where
    T: ArrowPrimitiveType,
    T::Native: ArrowNativeTypeOp + FromI128,
{
    Ok(Arc::new(floor_primitive::<T>(column, bucket)?))
}

fn floor_decimals<T>(column: &ArrayRef, bucket: i128, precision: u8) -> Result<ArrayRef, String>
where
    T: DecimalType,
    T::Native: ArrowNativeTypeOp + FromI128,
{
    let out = floor_primitive::<T>(column, bucket)?;
    // Flooring a negative value can add a digit (-999 → -1000).
    out.validate_decimal_precision(precision)
        .map_err(|_| format!("{OUT_OF_RANGE} (it needs more than {precision} digits)"))?;
    Ok(Arc::new(out))
}

fn floor_primitive<T>(column: &ArrayRef, bucket: i128) -> Result<PrimitiveArray<T>, String>
where
    T: ArrowPrimitiveType,
    T::Native: ArrowNativeTypeOp + FromI128,
{
    let b =
        T::Native::from_i128(bucket).ok_or_else(|| format!("bucket does not fit a {} column", column.data_type()))?;
    let array = column.as_primitive::<T>();
    let out = array.try_unary::<_, T, ()>(|v| floor_native(v, b)).map_err(|()| OUT_OF_RANGE.to_owned())?;
    Ok(out.with_data_type(column.data_type().clone()))
}

/// `floor(v / b) * b` for `b > 0`, rounding towards negative infinity.
fn floor_native<N: ArrowNativeTypeOp>(v: N, b: N) -> Result<N, ()> {
    let mut r = v.mod_wrapping(b);
    if r.is_lt(N::ZERO) {
        r = r.add_wrapping(b);
    }
    v.sub_checked(r).map_err(|_| ())
}

/// Lossless conversion from the `i128` a bucket is resolved to.
pub(crate) trait FromI128: Sized {
    fn from_i128(v: i128) -> Option<Self>;
}

macro_rules! from_i128 {
    ($($t:ty),*) => {
        $(impl FromI128 for $t {
            fn from_i128(v: i128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        })*
    };
}
from_i128!(i8, i16, i32, i64, i128, u8, u16, u32, u64);

impl FromI128 for i256 {
    fn from_i128(v: i128) -> Option<Self> {
        Some(i256::from_i128(v))
    }
}

/// The largest value of an integer or decimal column's native type, as the
/// limit for a bucket (`None` for other types).
pub(crate) fn native_max(data_type: &DataType) -> Option<i128> {
    Some(match data_type {
        DataType::Int8 => i8::MAX.into(),
        DataType::Int16 => i16::MAX.into(),
        DataType::Int32 | DataType::Decimal32(..) => i32::MAX.into(),
        DataType::Int64 | DataType::Decimal64(..) => i64::MAX.into(),
        DataType::UInt8 => u8::MAX.into(),
        DataType::UInt16 => u16::MAX.into(),
        DataType::UInt32 => u32::MAX.into(),
        DataType::UInt64 => u64::MAX.into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => i128::MAX,
        _ => return None,
    })
}

/// `bucket × 10^scale` as an exact whole number, from the shortest decimal
/// form of `bucket` (so `0.01` at scale 2 is exactly 1, with no binary
/// floating point error). `Err` says why it is not a whole number, or too
/// large. `bucket` must be finite and positive.
pub(crate) fn bucket_units(bucket: f64, scale: i8) -> Result<i128, BucketUnitsError> {
    // `Display` for f64 never uses an exponent and gives the shortest form
    // that round-trips.
    let text = bucket.to_string();
    let (int_part, frac_part) = text.split_once('.').unwrap_or((&text, ""));
    let frac_part = frac_part.trim_end_matches('0');
    let mut digits = String::with_capacity(int_part.len() + 40);
    digits.push_str(int_part);
    if scale >= 0 {
        let scale = usize::from(scale.unsigned_abs());
        if frac_part.len() > scale {
            return Err(BucketUnitsError::Fractional);
        }
        digits.push_str(frac_part);
        digits.extend(std::iter::repeat_n('0', scale - frac_part.len()));
    } else {
        let shift = usize::from(scale.unsigned_abs());
        if !frac_part.is_empty() {
            return Err(BucketUnitsError::Fractional);
        }
        let kept = digits.len().saturating_sub(shift);
        if digits[kept..].bytes().any(|b| b != b'0') || kept == 0 {
            return Err(BucketUnitsError::Fractional);
        }
        digits.truncate(kept);
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Err(BucketUnitsError::Fractional);
    }
    digits.parse::<i128>().map_err(|_| BucketUnitsError::TooLarge)
}

/// Why a bucket cannot be expressed in a column's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BucketUnitsError {
    /// Finer than the column's resolution.
    Fractional,
    /// Larger than any value of the type.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_native_rounds_down() {
        assert_eq!(floor_native(1999i64, 1000), Ok(1000));
        assert_eq!(floor_native(-1i64, 1000), Ok(-1000));
        assert_eq!(floor_native(-1000i64, 1000), Ok(-1000));
        assert_eq!(floor_native(-1001i64, 1000), Ok(-2000));
        assert_eq!(floor_native(7u8, 5), Ok(5));
        assert_eq!(floor_native(-128i8, 3), Err(()));
        assert_eq!(floor_native(i64::MAX, 10), Ok(i64::MAX - 7));
    }

    #[test]
    fn bucket_units_are_exact() {
        assert_eq!(bucket_units(1000.0, 0), Ok(1000));
        assert_eq!(bucket_units(2.5, 0), Err(BucketUnitsError::Fractional));
        assert_eq!(bucket_units(0.01, 2), Ok(1));
        assert_eq!(bucket_units(0.1, 2), Ok(10));
        assert_eq!(bucket_units(0.5, 3), Ok(500));
        assert_eq!(bucket_units(0.001, 2), Err(BucketUnitsError::Fractional));
        assert_eq!(bucket_units(1000.0, -2), Ok(10));
        assert_eq!(bucket_units(150.0, -2), Err(BucketUnitsError::Fractional));
        assert_eq!(bucket_units(10.0, -2), Err(BucketUnitsError::Fractional));
        assert_eq!(bucket_units(1e40, 0), Err(BucketUnitsError::TooLarge));
        assert_eq!(bucket_units(1.0, 38), Ok(10i128.pow(38)));
    }

    #[test]
    fn truncate_days_to_month_and_year() {
        // 2024-03-31 is day 19813.
        assert_eq!(truncate_days(19_813, TimeUnit::Month), Ok(19_783));
        assert_eq!(truncate_days(19_813, TimeUnit::Year), Ok(19_723));
        // 1969-12-31 → 1969-12-01 / 1969-01-01.
        assert_eq!(truncate_days(-1, TimeUnit::Month), Ok(-31));
        assert_eq!(truncate_days(-1, TimeUnit::Year), Ok(-365));
        assert_eq!(truncate_days(i64::MAX / 2, TimeUnit::Year), Err(()));
    }
}
