//! `GET /v1/analytics/messages` (and the operator's `/admin/analytics/messages`): the
//! events behind a report's number, one page at a time. The only analytics question
//! answered from the raw events table, so it is always bounded: a time range (at most
//! the reports' maximum), a page of at most 500, and keyset cursors on
//! (occurred_at_ms, event_id), which stay exact while new events arrive.

use std::collections::HashMap;

use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::{ch_error, ApiResult};
use crate::api::admin::bad;
use crate::error::ApiError;
use crate::AppState;

const MAX_LIMIT: usize = 500;
const DEFAULT_RANGE_MS: i64 = 7 * 86_400_000;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Filters: parameter name and the `events` column it matches exactly.
const FILTERS: &[(&str, &str)] = &[
    ("business_number", "business_number"),
    ("bsp", "bsp"),
    ("country", "country"),
    ("template", "template_name"),
    ("language", "template_language"),
    ("campaign", "campaign"),
    ("type", "event_type"),
    ("status", "status"),
    ("error_code", "error_code"),
    ("category", "pricing_category"),
    ("pricing_type", "pricing_type"),
    ("customer", "customer_id"),
    ("wamid", "wamid"),
];

/// The columns answered, in order.
const COLUMNS: &str = "event_id, event_type, status, bsp, business_number, customer_id, \
    wamid, message_type, country, template_name, template_language, campaign, error_code, \
    error_title, pricing_category, pricing_type, pricing_model, billable, \
    toUInt64(occurred_at_ms) AS occurred_at_ms, toUInt64(received_at_ms) AS received_at_ms, \
    latency_ms, read_latency_ms";

#[derive(Clone, Copy, PartialEq)]
enum Order {
    Asc,
    Desc,
}

/// Where a page starts: just past this event, in this order.
struct After {
    order: Order,
    at_ms: i64,
    event_id: String,
}

impl After {
    fn encode(&self) -> String {
        let o = if self.order == Order::Asc { "a" } else { "d" };
        format!(
            "m1.{}",
            B64.encode(format!("{o}:{}:{}", self.at_ms, self.event_id))
        )
    }

    fn decode(s: &str) -> Option<Self> {
        let raw = String::from_utf8(B64.decode(s.strip_prefix("m1.")?).ok()?).ok()?;
        let mut parts = raw.splitn(3, ':');
        let order = match parts.next()? {
            "a" => Order::Asc,
            "d" => Order::Desc,
            _ => return None,
        };
        let at_ms = parts.next()?.parse().ok()?;
        let event_id = parts.next()?.to_string();
        Some(After {
            order,
            at_ms,
            event_id,
        })
    }
}

fn parse_instant(field: &str, s: &str) -> ApiResult<i64> {
    let ms = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|_| bad(field, "an RFC 3339 time, e.g. 2026-11-22T10:00:00Z"))?
        .timestamp_millis();
    if !(0..=u32::MAX as i64 * 1000).contains(&ms) {
        return Err(bad(field, "between 1970 and 2106"));
    }
    Ok(ms)
}

pub async fn page(
    app: &AppState,
    tenant: Option<String>,
    mut params: HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let now = switchboard_runtime::now_ms() as i64;
    let to = match params.remove("to") {
        Some(s) => parse_instant("to", &s)?,
        None => now + 1,
    };
    let from = match params.remove("from") {
        Some(s) => parse_instant("from", &s)?,
        None => (to - DEFAULT_RANGE_MS).max(0),
    };
    if from >= to {
        return Err(bad("to", "after from"));
    }
    let max = app.cfg.analytics_max_range.as_millis() as i64;
    if to - from > max {
        return Err(bad(
            "from",
            format!("at most {} days before to", max / 86_400_000),
        ));
    }
    let limit = match params.remove("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| bad("limit", format!("1 to {MAX_LIMIT}")))?,
    };
    let order = match params.remove("order").as_deref() {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(_) => return Err(bad("order", "asc or desc")),
    };
    let after = match params.remove("cursor") {
        None => None,
        Some(c) => {
            let a =
                After::decode(&c).ok_or_else(|| bad("cursor", "not a cursor this API returned"))?;
            if a.order != order {
                return Err(bad("cursor", "made for the other order"));
            }
            Some(a)
        }
    };

    let db = &app.cfg.clickhouse_database;
    let mut sql = format!(
        "SELECT {COLUMNS} FROM {db}.events \
         WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
         AND occurred_at_ms >= ? AND occurred_at_ms < ?"
    );
    let mut binds: Vec<Bind> = vec![
        Bind::Int(from.div_euclid(1000)),
        Bind::Int((to + 999).div_euclid(1000)),
        Bind::Int(from),
        Bind::Int(to),
    ];
    if let Some(t) = tenant {
        sql.push_str(" AND tenant_id = ?");
        binds.push(Bind::Str(t));
    }
    let mut rest: Vec<(String, String)> = params.drain().collect();
    rest.sort();
    for (k, v) in rest {
        let column = FILTERS
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                let names: Vec<&str> = FILTERS.iter().map(|(n, _)| *n).collect();
                bad(
                    &k,
                    format!(
                        "not a parameter of messages: from, to, limit, order, cursor or a filter ({})",
                        names.join(", ")
                    ),
                )
            })?;
        if v.is_empty() || v.len() > 256 {
            return Err(bad(&k, "a value of 1 to 256 characters"));
        }
        sql.push_str(&format!(" AND {column} = ?"));
        binds.push(Bind::Str(v));
    }
    let (cmp, dir) = match order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if let Some(a) = &after {
        sql.push_str(&format!(
            " AND (occurred_at_ms {cmp} ? OR (occurred_at_ms = ? AND event_id {cmp} ?))"
        ));
        binds.push(Bind::Int(a.at_ms));
        binds.push(Bind::Int(a.at_ms));
        binds.push(Bind::Str(a.event_id.clone()));
    }
    // A repeat of an event not merged away yet is the same event: once.
    sql.push_str(&format!(
        " ORDER BY occurred_at_ms {dir}, event_id {dir} LIMIT 1 BY event_id LIMIT {}",
        limit + 1
    ));

    let mut query = app
        .ch
        .query(&sql)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .with_setting("max_execution_time", "20");
    for b in binds {
        query = match b {
            Bind::Int(i) => query.bind(i),
            Bind::Str(s) => query.bind(s),
        };
    }
    let bytes = query
        .fetch_bytes("JSONEachRow")
        .map_err(ch_error)?
        .collect()
        .await
        .map_err(ch_error)?;
    let mut rows = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let row: Map<String, Value> = serde_json::from_slice(line)
            .map_err(|e| ApiError::unavailable("analytics_unavailable", e.to_string()))?;
        rows.push(row);
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|r| {
            After {
                order,
                at_ms: r["occurred_at_ms"].as_i64().unwrap_or_default(),
                event_id: r["event_id"].as_str().unwrap_or_default().to_string(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(json!({
        "data": rows.into_iter().map(render).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

enum Bind {
    Int(i64),
    Str(String),
}

/// A row as an answer: times as RFC 3339, nothing stored as `''` shown as `null`.
fn render(mut row: Map<String, Value>) -> Value {
    for (k, v) in row.iter_mut() {
        if v.as_str() == Some("") {
            *v = Value::Null;
        } else if k == "billable" {
            *v = Value::Bool(v.as_u64() == Some(1));
        }
    }
    for (ms, at) in [
        ("occurred_at_ms", "occurred_at"),
        ("received_at_ms", "received_at"),
    ] {
        let t = row
            .remove(ms)
            .and_then(|v| v.as_i64())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        row.insert(at.into(), json!(t));
    }
    Value::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_nothing_else_decodes() {
        let a = After {
            order: Order::Desc,
            at_ms: 1_764_000_000_123,
            event_id: "ev:with:colons".into(),
        };
        let back = After::decode(&a.encode()).expect("decodes");
        assert!(back.order == Order::Desc);
        assert_eq!(
            (back.at_ms, back.event_id.as_str()),
            (a.at_ms, "ev:with:colons")
        );
        for bad in ["", "m1.", "m1.!!", "v1.YTox", "m1.eDoxOmE", "m1.YTpub3Q6YQ"] {
            assert!(After::decode(bad).is_none(), "{bad}");
        }
    }
}
