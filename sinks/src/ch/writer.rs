//! DDL, the dedupe look-up and the batched insert.

use std::collections::{HashMap, HashSet};

use clickhouse::Client;
use serde::Serialize;
use switchboard_runtime::failure::Permanent;
use switchboard_schemas::Event;

use super::failure::classified;

const DDL: &str = include_str!("../../migrations/clickhouse/001_events.sql");
const DELIVERIES_DDL: &str = include_str!("../../migrations/clickhouse/002_deliveries.sql");

/// A row of `events`, field for field in table order (RowBinary has no names).
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct EventRow {
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub bsp: String,
    pub tenant_id: String,
    pub business_number: String,
    pub customer_id: String,
    pub wamid: String,
    pub message_type: String,
    pub error_code: String,
    pub conversation_category: String,
    pub pricing_category: String,
    pub occurred_at: u32,
    pub occurred_at_ms: u64,
    pub received_at: u32,
    pub received_at_ms: u64,
    pub latency_ms: Option<u32>,
    /// When the sink wrote the row (accept → stored latency).
    pub stored_at_ms: u64,
}

impl EventRow {
    pub fn from_event(e: &Event, latency_ms: Option<u32>) -> Self {
        let secs = |ms: i64| (ms.max(0) / 1000).min(u32::MAX as i64) as u32;
        EventRow {
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            status: e.status.clone().unwrap_or_default(),
            bsp: e.bsp.clone(),
            tenant_id: e.tenant_id.clone().unwrap_or_default(),
            business_number: e.business_number.clone(),
            customer_id: e.customer_id.clone(),
            wamid: e.wamid.clone(),
            message_type: e.message_type.clone().unwrap_or_default(),
            error_code: e.error_code.clone().unwrap_or_default(),
            conversation_category: e.conversation_category.clone().unwrap_or_default(),
            pricing_category: e.pricing_category.clone().unwrap_or_default(),
            occurred_at: secs(e.occurred_at_ms),
            occurred_at_ms: e.occurred_at_ms.max(0) as u64,
            received_at: secs(e.received_at_ms),
            received_at_ms: e.received_at_ms.max(0) as u64,
            latency_ms,
            stored_at_ms: switchboard_runtime::now_ms().max(0) as u64,
        }
    }
}

/// A ClickHouse string literal. Only `\` and `'` need escaping inside single quotes.
pub(crate) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

pub struct ChWriter {
    /// Without a default database: it may not exist yet.
    pub(crate) client: Client,
    /// Bound to the sink's database, for inserts.
    pub(crate) db_client: Client,
    pub(crate) database: String,
}

/// A client for the ClickHouse at `url`: HTTP or HTTPS (the system's CAs, or
/// `SSL_CERT_FILE`); credentials in the URL (`https://user:password@host:8443`,
/// percent-encoded) become the ClickHouse user and password.
pub fn client(url: &str) -> Client {
    let (url, auth) = switchboard_schemas::codec::split_credentials(url);
    let c = Client::default().with_url(url.trim_end_matches('/'));
    match auth {
        Some((user, password)) => c.with_user(user).with_password(password),
        None => c,
    }
}

impl ChWriter {
    pub fn new(url: &str, database: &str, validation: bool) -> Self {
        let client = client(url).with_validation(validation);
        let db_client = client.clone().with_database(database);
        Self {
            client,
            db_client,
            database: database.to_string(),
        }
    }

    /// Create the database, tables and views if missing. Idempotent.
    pub async fn migrate(&self) -> Result<(), clickhouse::error::Error> {
        self.client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await?;
        for stmt in statements(DDL)
            .into_iter()
            .chain(statements(DELIVERIES_DDL))
        {
            let sql = stmt.replace("{db}", &self.database);
            // `?` is the crate's bind placeholder; DDL has none, so send it raw.
            self.client.query_raw(&sql).execute().await?;
        }
        self.sweep_lookups().await
    }

    pub async fn ping(&self) -> Result<(), String> {
        self.client
            .query("SELECT 1")
            .execute()
            .await
            .map_err(|e| format!("clickhouse: {e}"))
    }

    /// The subset of `ids` already in `events`.
    async fn seen_ids(&self, ids: &[&str]) -> Result<HashSet<String>, clickhouse::error::Error> {
        let sql = format!(
            "SELECT DISTINCT event_id FROM {}.seen_events WHERE event_id IN {{ids}}",
            self.database
        );
        Ok(self
            .lookup::<String>(&sql, ids)
            .await?
            .into_iter()
            .collect())
    }

    /// Insert the events not written before. Returns how many rows were inserted.
    ///
    /// An event whose times do not fit ClickHouse's `DateTime` (1970 to 2106) fails the
    /// batch permanently, so the loop dead-letters it rather than store a clamped time.
    pub async fn write(&self, events: &[Event]) -> anyhow::Result<usize> {
        if let Some(e) = events
            .iter()
            .find(|e| !fits_datetime(e.occurred_at_ms) || !fits_datetime(e.received_at_ms))
        {
            return Err(Permanent::new(
                "ch_out_of_range",
                anyhow::anyhow!(
                    "event {}: occurred_at_ms {} or received_at_ms {} is outside ClickHouse DateTime (1970-2106)",
                    e.event_id,
                    e.occurred_at_ms,
                    e.received_at_ms
                ),
            )
            .into());
        }
        self.write_rows(events).await.map_err(classified)
    }

    async fn write_rows(&self, events: &[Event]) -> Result<usize, clickhouse::error::Error> {
        let mut batch_ids = HashSet::new();
        let fresh: Vec<&Event> = events
            .iter()
            .filter(|e| batch_ids.insert(e.event_id.as_str()))
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = fresh.iter().map(|e| e.event_id.as_str()).collect();
        let seen = self.seen_ids(&ids).await?;
        let todo: Vec<&Event> = fresh
            .into_iter()
            .filter(|e| !seen.contains(&e.event_id))
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }

        // Delivery latency: time since the message's `sent` (or `accepted`), from this
        // batch or from what is stored.
        let mut sent_at: HashMap<(String, String), u64> = HashMap::new();
        for e in &todo {
            if matches!(e.status.as_deref(), Some("sent") | Some("accepted")) {
                let at = e.occurred_at_ms.max(0) as u64;
                sent_at
                    .entry((e.bsp.clone(), e.wamid.clone()))
                    .and_modify(|v| *v = (*v).min(at))
                    .or_insert(at);
            }
        }
        let delivered: Vec<&&Event> = todo
            .iter()
            .filter(|e| e.status.as_deref() == Some("delivered"))
            .collect();
        let missing: Vec<&str> = delivered
            .iter()
            .filter(|e| !sent_at.contains_key(&(e.bsp.clone(), e.wamid.clone())))
            .map(|e| e.wamid.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            // Keyed by wamid alone in the query; the bsp is checked below.
            let sql = format!(
                "SELECT bsp, wamid, min(sent_at_ms) FROM {}.message_sent_at WHERE wamid IN {{ids}} GROUP BY bsp, wamid",
                self.database
            );
            for (bsp, wamid, at) in self.lookup::<(String, String, u64)>(&sql, &missing).await? {
                sent_at.insert((bsp, wamid), at);
            }
        }

        let mut insert = self.db_client.insert::<EventRow>("events").await?;
        for e in &todo {
            let latency = (e.status.as_deref() == Some("delivered"))
                .then(|| sent_at.get(&(e.bsp.clone(), e.wamid.clone())))
                .flatten()
                .map(|sent| {
                    (e.occurred_at_ms.max(0) as u64)
                        .saturating_sub(*sent)
                        .min(u32::MAX as u64) as u32
                });
            insert.write(&EventRow::from_event(e, latency)).await?;
        }
        insert.end().await?;
        Ok(todo.len())
    }
}

fn fits_datetime(ms: i64) -> bool {
    (0..=u32::MAX as i64 * 1000).contains(&ms)
}

/// Split a DDL file into statements: `;` at the end of a line ends one; `--` lines are
/// comments.
fn statements(ddl: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in ddl.lines() {
        let t = line.trim();
        if t.starts_with("--") || t.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            out.push(cur.trim().trim_end_matches(';').to_string());
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(lit("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn ddl_splits_into_statements() {
        let s = statements(DDL);
        assert!(s.len() >= 10, "{}", s.len());
        assert!(s.iter().all(|st| st.starts_with("CREATE")), "{s:#?}");
    }
}
