//! "Which of these ids does a table already have?", asked the cheap way for the size.
//!
//! ClickHouse 18.16 has no server-side query parameters, so ids go into the query. As
//! literals they cost about 10-20 µs each to parse (measured: an `IN` of 2,000 ids took
//! 45 ms against a million-row `seen_events`, of 20,000 ids 220 ms), which made the
//! look-ups most of a replay's ClickHouse time. Past a few hundred ids they go instead,
//! as RowBinary, into a temporary `Memory` table of their own that the query reads
//! (`IN (SELECT id FROM ...)`); the table is dropped afterwards.

use clickhouse::{Row, RowOwned, RowRead};
use serde::Serialize;

use super::writer::{lit, ChWriter};

/// Up to this many ids go in as literals (a temporary table costs three round trips).
const LITERALS_UP_TO: usize = 500;
/// Literal chunks stay far below a stock server's `max_query_size` (256 KiB).
const LITERAL_CHUNK: usize = 2000;

#[derive(Row, Serialize)]
struct Id {
    id: String,
}

impl ChWriter {
    /// The rows of `select` for `ids`: `select` names the id set as `{ids}`, e.g.
    /// `SELECT event_id FROM db.seen_events WHERE event_id IN {ids}`.
    pub(crate) async fn lookup<T>(
        &self,
        select: &str,
        ids: &[&str],
    ) -> Result<Vec<T>, clickhouse::error::Error>
    where
        T: RowOwned + RowRead,
    {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        if ids.len() <= LITERALS_UP_TO {
            let mut out = Vec::new();
            for chunk in ids.chunks(LITERAL_CHUNK) {
                let list = chunk.iter().map(|s| lit(s)).collect::<Vec<_>>().join(",");
                let sql = select.replace("{ids}", &format!("({list})"));
                out.extend(self.client.query_raw(&sql).fetch_all::<T>().await?);
            }
            return Ok(out);
        }
        let table = format!("_lookup_{}", uuid::Uuid::new_v4().simple());
        let full = format!("{}.{table}", self.database);
        self.client
            .query_raw(&format!("CREATE TABLE {full} (id String) ENGINE = Memory"))
            .execute()
            .await?;
        let result = async {
            let mut insert = self.db_client.insert::<Id>(&table).await?;
            for id in ids {
                insert.write(&Id { id: id.to_string() }).await?;
            }
            insert.end().await?;
            let sql = select.replace("{ids}", &format!("(SELECT id FROM {full})"));
            self.client.query_raw(&sql).fetch_all::<T>().await
        }
        .await;
        // A table left behind by a failure here is dropped by the next start's sweep.
        let dropped = self
            .client
            .query_raw(&format!("DROP TABLE IF EXISTS {full}"))
            .execute()
            .await;
        let rows = result?;
        dropped?;
        Ok(rows)
    }

    /// Drop look-up tables a crashed process left (at start; they hold only ids). Only
    /// old ones: another replica's may be in use right now.
    pub(crate) async fn sweep_lookups(&self) -> Result<(), clickhouse::error::Error> {
        let sql = format!(
            "SELECT name FROM system.tables WHERE database = {} AND startsWith(name, '_lookup_') \
             AND metadata_modification_time < now() - 600",
            lit(&self.database)
        );
        for name in self.client.query_raw(&sql).fetch_all::<String>().await? {
            self.client
                .query_raw(&format!("DROP TABLE IF EXISTS {}.{name}", self.database))
                .execute()
                .await?;
        }
        Ok(())
    }
}
