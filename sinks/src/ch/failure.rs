//! Which ClickHouse errors belong to the data (dead-letter the record) and which to the
//! server or the deployment (hold the batch): see `switchboard_runtime::failure`.

use switchboard_runtime::failure::Permanent;

/// `e` as an error the stream loop classifies: server codes that say the data cannot be
/// inserted become [`Permanent`]; everything else (network, timeouts, a missing table,
/// memory limits, "too many parts" back-pressure) stays transient.
pub fn classified(e: clickhouse::error::Error) -> anyhow::Error {
    let reason = match &e {
        clickhouse::error::Error::BadResponse(msg) => permanent_reason(msg),
        // Our own row could not be serialized: the same row always fails.
        clickhouse::error::Error::Custom(_) | clickhouse::error::Error::DataFormat(_) => {
            Some("ch_encode")
        }
        _ => None,
    };
    match reason {
        Some(r) => Permanent::new(r, e).into(),
        None => e.into(),
    }
}

/// The reason for a server answer that no retry can fix, by its `Code: N`.
fn permanent_reason(msg: &str) -> Option<&'static str> {
    let code: u32 = msg
        .split("Code: ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    match code {
        // CANNOT_PARSE_TEXT, CANNOT_PARSE_QUOTED_STRING, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
        // CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, ARGUMENT_OUT_OF_BOUND,
        // CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE,
        // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN.
        6 | 26 | 27 | 38 | 41 | 69 | 70 | 72 | 117 | 131 | 321 | 349 => Some("ch_data"),
        // Current releases refuse an insert spanning more than 100 partitions: bisecting
        // the batch fixes it. (The same code for "too many parts" is back-pressure.)
        252 if msg.contains("partitions for single INSERT") => Some("ch_too_many_partitions"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_runtime::failure::{classify, Class};

    #[test]
    fn server_codes_are_classified() {
        let bad = |m: &str| classify(&classified(clickhouse::error::Error::BadResponse(m.into())));
        assert_eq!(
            bad("Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100)."),
            Class::Permanent("ch_too_many_partitions")
        );
        assert_eq!(
            bad("Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts."),
            Class::Transient
        );
        assert_eq!(
            bad("Code: 27, e.displayText() = DB::Exception: Cannot parse input"),
            Class::Permanent("ch_data")
        );
        assert_eq!(
            bad("Code: 60. DB::Exception: Table x.events doesn't exist."),
            Class::Transient
        );
        assert_eq!(
            classify(&classified(clickhouse::error::Error::TimedOut)),
            Class::Transient
        );
    }
}
