//! DDL, the dedupe look-up and the batched insert.

use std::collections::{HashMap, HashSet};

use clickhouse::Client;
use serde::Serialize;
use switchboard_runtime::failure::Permanent;
use switchboard_schemas::Event;

use super::credit::{self, MessageState};
use super::failure::classified;

/// In order; every statement is idempotent (`IF NOT EXISTS`, or an `ADD COLUMN` skipped
/// when the column is there), so each start runs them all.
const MIGRATIONS: [&str; 3] = [
    include_str!("../../migrations/clickhouse/001_events.sql"),
    include_str!("../../migrations/clickhouse/002_deliveries.sql"),
    include_str!("../../migrations/clickhouse/003_analytics.sql"),
];

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
    pub pricing_model: String,
    pub pricing_type: String,
    pub billable: u8,
    /// The message's, for every event of it (inherited from its send).
    pub template_name: String,
    pub template_language: String,
    pub country: String,
    pub error_title: String,
    pub campaign: String,
    /// The funnel stages the event stands for, and those it is first to reach
    /// ([`credit`]).
    pub stages: u8,
    pub credits: u8,
    /// The message's send time as known at this event (0: unknown).
    pub sent_at_ms: u64,
    pub read_latency_ms: Option<u32>,
}

impl EventRow {
    /// The row of `e`, given its message's state before it (updated).
    pub fn new(e: &Event, state: &mut MessageState) -> Self {
        let (credits, delivered_ms, read_ms) = credit::credit(state, e);
        let mut row = Self::from_event(e, delivered_ms);
        row.stages = credit::implied(e);
        row.credits = credits;
        row.read_latency_ms = read_ms;
        row.sent_at_ms = state.sent_at_ms.unwrap_or(0);
        row.template_name = state.template_name.clone();
        row.template_language = state.template_language.clone();
        row.campaign = state.campaign.clone();
        row
    }

    /// The row of `e` alone: no funnel credits, nothing inherited.
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
            pricing_model: e.pricing_model.clone().unwrap_or_default(),
            pricing_type: e.pricing_type.clone().unwrap_or_default(),
            billable: u8::from(e.is_billable()),
            template_name: String::new(),
            template_language: String::new(),
            country: super::country::of(&e.customer_id),
            error_title: e.error_title.clone().unwrap_or_default(),
            campaign: e.campaign().unwrap_or_default(),
            stages: 0,
            credits: 0,
            sent_at_ms: 0,
            read_latency_ms: None,
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
        for stmt in MIGRATIONS.iter().flat_map(|m| statements(m)) {
            if let Some((table, column)) = added_column(&stmt) {
                if self.has_column(table, column).await? {
                    continue;
                }
            }
            let sql = stmt.replace("{db}", &self.database);
            // `?` is the crate's bind placeholder; DDL has none, so send it raw.
            self.client.query_raw(&sql).execute().await?;
        }
        self.sweep_lookups().await
    }

    async fn has_column(
        &self,
        table: &str,
        column: &str,
    ) -> Result<bool, clickhouse::error::Error> {
        let sql = format!(
            "SELECT count() FROM system.columns WHERE database = {} AND table = {} AND name = {}",
            lit(&self.database),
            lit(table),
            lit(column)
        );
        Ok(self.client.query_raw(&sql).fetch_one::<u64>().await? > 0)
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

        // What each message reached before this batch; then the batch, in order.
        let mut keys: Vec<&str> = todo.iter().map(|e| e.wamid.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let sql = format!(
            "SELECT wamid, bsp, groupBitOrMerge(reached), minIfMerge(sent_at_ms), \
             anyIfMerge(template_name), anyIfMerge(template_language), anyIfMerge(campaign) \
             FROM {}.message_state WHERE wamid IN {{ids}} GROUP BY wamid, bsp",
            self.database
        );
        type Known = (String, String, u8, u64, String, String, String);
        let mut states: HashMap<(String, String), MessageState> = HashMap::new();
        for (wamid, bsp, reached, sent, name, lang, campaign) in
            self.lookup::<Known>(&sql, &keys).await?
        {
            let state = MessageState {
                reached,
                sent_at_ms: (sent > 0).then_some(sent),
                template_name: name,
                template_language: lang,
                campaign,
            };
            states.insert((bsp, wamid), state);
        }

        let mut insert = self.db_client.insert::<EventRow>("events").await?;
        for row in rows(&todo, &mut states) {
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(todo.len())
    }
}

/// The `events` rows of a batch, in order, given what each message (by `(bsp, wamid)`)
/// reached before it.
pub fn rows(
    todo: &[&Event],
    states: &mut HashMap<(String, String), MessageState>,
) -> Vec<EventRow> {
    // A batch holds many partitions' records; a send time anywhere in it counts for the
    // whole batch, so a `sent` just behind its `delivered` still gives a latency.
    for e in todo {
        if let Some(sent) = credit::send_time(e) {
            let s = &mut states
                .entry((e.bsp.clone(), e.wamid.clone()))
                .or_default()
                .sent_at_ms;
            *s = Some(s.map_or(sent, |v| v.min(sent)));
        }
    }
    todo.iter()
        .map(|e| {
            let state = states.entry((e.bsp.clone(), e.wamid.clone())).or_default();
            EventRow::new(e, state)
        })
        .collect()
}

fn fits_datetime(ms: i64) -> bool {
    (0..=u32::MAX as i64 * 1000).contains(&ms)
}

/// `(table, column)` of an `ALTER TABLE {db}.table ADD COLUMN column ...` statement.
fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let rest = stmt.strip_prefix("ALTER TABLE {db}.")?;
    let (table, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start().strip_prefix("ADD COLUMN ")?;
    Some((table, rest.split_whitespace().next()?))
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
        let s = statements(MIGRATIONS[0]);
        assert!(s.len() >= 10, "{}", s.len());
        assert!(s.iter().all(|st| st.starts_with("CREATE")), "{s:#?}");
    }

    #[test]
    fn every_alter_is_a_guarded_column_addition() {
        let alters: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| statements(m))
            .filter(|s| !s.starts_with("CREATE"))
            .collect();
        assert!(!alters.is_empty());
        for a in &alters {
            assert!(added_column(a).is_some(), "unguarded: {a}");
        }
        assert_eq!(
            added_column("ALTER TABLE {db}.events ADD COLUMN country String DEFAULT ''"),
            Some(("events", "country"))
        );
    }
}
