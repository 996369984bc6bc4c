//! `outbound_messages` and its one owner: the per-message send state (see the migration
//! for the states). The send API's side inserts requests (idempotent on the tenant's key),
//! takes back what was never published, reads and cancels; the router's side moves a
//! message through the state machine. Every transition is one conditional UPDATE, so two
//! routers (or one record delivered twice) can never both send.
//!
//! The two transitions every send makes (claim, accepted) go through micro-batches: the
//! requests of the last millisecond become one `UPDATE ... FROM UNNEST`, so the database
//! does a statement per batch instead of per message, and a message spends less time
//! claimed-but-unsettled (what a crash turns into `outcome_unknown`). Both lock their rows
//! in message id order first: batches that overlap (a claim and an accept, two routers
//! during a rebalance) then wait for each other instead of deadlocking.
//!
//! `due_at` is set only while a send waits (`scheduled`, `retrying`) and cleared when it
//! leaves those states: the due index then names no state, and the claim and accept,
//! which change only unindexed columns, are HOT updates (see the 20261205 migration).
//!
//! The statements that pick rows by an id array or a sweep are planned on every run
//! (`persistent(false)`), not prepared once per connection: PostgreSQL's cached generic
//! plan is made from the statistics of the moment, and one made while the table was
//! nearly empty (every fresh deployment, every benchmark) scans the whole table for
//! ever after. Measured: the gateway's mark-published batch took 0.8 ms and 170 buffers
//! per row after 60,000 sends (loadtest/REPORT.md, "Send path").

use std::time::Duration;

use sqlx::{PgPool, Row};
use switchboard_schemas::SendRequest;
use tokio::sync::{mpsc, oneshot};

mod requests;
pub use requests::{
    cancel_unsent, Cancelled, Earlier, MessageFilter, MessageRow, NewSend, Requests,
};

/// What the state machine says about a message the router is about to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ours to send: `attempt` (1-based), milliseconds since the first attempt.
    Send {
        attempt: i32,
        since_first_ms: i64,
    },
    /// Someone is sending it now, or crashed while sending (`age` since the claim).
    Sending {
        age: Duration,
    },
    /// Already decided; re-emit its outcome event (a crash may have lost it).
    Final(Final),
    /// Cancelled, scheduled or waiting for a retry: nothing to do now.
    Idle,
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    pub state: String,
    pub bsp: Option<String>,
    pub wamid: Option<String>,
    pub error_code: Option<String>,
    pub error_detail: Option<String>,
    /// When the outcome was recorded: the outcome event's time, the same on every
    /// re-emission (the history's key includes it).
    pub at_ms: i64,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

struct ClaimReq {
    id: String,
    bsp: String,
    reply: Reply<Option<(i32, i64)>>,
}

struct ParkReq {
    id: String,
    after_ms: i64,
    reply: Reply<bool>,
}

struct AcceptReq {
    id: String,
    bsp: String,
    wamid: String,
    reply: Reply<Option<i64>>,
}

#[derive(Clone)]
pub struct Outbox {
    pub pool: PgPool,
    claims: mpsc::Sender<ClaimReq>,
    accepts: mpsc::Sender<AcceptReq>,
    parks: mpsc::Sender<ParkReq>,
}

const MAX_BATCH: usize = 500;

/// Take what is queued now (after the first item, up to `MAX_BATCH`, waiting at most a
/// millisecond for more).
async fn next_batch<T>(rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1);
    while batch.len() < MAX_BATCH {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => batch.push(x),
            _ => break,
        }
    }
    Some(batch)
}

/// Answer every request of a batch from the statement's rows by message id (a request
/// whose row was not touched gets `missing`), or with the statement's error.
fn answer<R, T: Clone>(
    batch: Vec<R>,
    parts: impl Fn(R) -> (String, Reply<T>),
    got: Result<std::collections::HashMap<String, T>, sqlx::Error>,
    missing: T,
) {
    match got {
        Ok(mut got) => {
            for req in batch {
                let (id, reply) = parts(req);
                let _ = reply.send(Ok(got.remove(&id).unwrap_or_else(|| missing.clone())));
            }
        }
        Err(e) => {
            for req in batch {
                let _ = parts(req).1.send(Err(e.to_string()));
            }
        }
    }
}

/// Parks of the last millisecond in one statement: a backlog parks thousands of sends in
/// a few seconds, and one connection each would starve the router's pool (and so every
/// other tenant's claims).
async fn park_worker(pool: PgPool, mut rx: mpsc::Receiver<ParkReq>) {
    while let Some(batch) = next_batch(&mut rx).await {
        let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        let afters: Vec<i64> = batch.iter().map(|r| r.after_ms).collect();
        let res = sqlx::query(
            "WITH t AS (SELECT * FROM UNNEST($1::text[], $2::int8[]) AS t(id, after_ms)),
                  l AS (SELECT message_id FROM outbound_messages
                         WHERE message_id = ANY($1) AND state = 'queued'
                         ORDER BY message_id FOR UPDATE)
             UPDATE outbound_messages o
                SET state = 'scheduled', due_at = now() + t.after_ms * interval '1 millisecond',
                    updated_at = now()
               FROM t JOIN l ON l.message_id = t.id
              WHERE o.message_id = t.id AND o.state = 'queued'
          RETURNING o.message_id",
        )
        .persistent(false)
        .bind(&ids)
        .bind(&afters)
        .fetch_all(&pool)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get::<String, _>("message_id"), true))
                .collect()
        });
        answer(batch, |r| (r.id, r.reply), res, false);
    }
}

async fn claim_worker(pool: PgPool, mut rx: mpsc::Receiver<ClaimReq>) {
    while let Some(batch) = next_batch(&mut rx).await {
        let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        let bsps: Vec<&str> = batch.iter().map(|r| r.bsp.as_str()).collect();
        let res = sqlx::query(
            "WITH t AS (SELECT * FROM UNNEST($1::text[], $2::text[]) AS t(id, bsp)),
                  l AS (SELECT message_id FROM outbound_messages
                         WHERE message_id = ANY($1) AND state = 'queued'
                         ORDER BY message_id FOR UPDATE)
             UPDATE outbound_messages o
                SET state = 'sending', attempts = o.attempts + 1, bsp = t.bsp,
                    first_attempt_at = COALESCE(o.first_attempt_at, now()), updated_at = now()
               FROM t JOIN l ON l.message_id = t.id
              WHERE o.message_id = t.id AND o.state = 'queued'
          RETURNING o.message_id, o.attempts,
                    (extract(epoch from now() - o.first_attempt_at) * 1000)::int8 AS since_ms",
        )
        .persistent(false)
        .bind(&ids)
        .bind(&bsps)
        .fetch_all(&pool)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let since: Option<i64> = r.get("since_ms");
                    (
                        r.get::<String, _>("message_id"),
                        Some((r.get("attempts"), since.unwrap_or(0))),
                    )
                })
                .collect()
        });
        answer(batch, |r| (r.id, r.reply), res, None);
    }
}

async fn accept_worker(pool: PgPool, mut rx: mpsc::Receiver<AcceptReq>) {
    while let Some(batch) = next_batch(&mut rx).await {
        let col = |f: fn(&AcceptReq) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
        let res = sqlx::query(
            "WITH t AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(id, bsp, wamid)),
                  l AS (SELECT message_id FROM outbound_messages
                         WHERE message_id = ANY($1) AND state = 'sending'
                         ORDER BY message_id FOR UPDATE)
             UPDATE outbound_messages o
                SET state = 'accepted', bsp = t.bsp, wamid = t.wamid, error_code = NULL,
                    error_detail = NULL, updated_at = now()
               FROM t JOIN l ON l.message_id = t.id
              WHERE o.message_id = t.id AND o.state = 'sending'
          RETURNING o.message_id, (extract(epoch from o.updated_at) * 1000)::int8 AS at_ms",
        )
        .persistent(false)
        .bind(col(|r| &r.id))
        .bind(col(|r| &r.bsp))
        .bind(col(|r| &r.wamid))
        .fetch_all(&pool)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get::<String, _>("message_id"), Some(r.get::<i64, _>("at_ms"))))
                .collect()
        });
        answer(batch, |r| (r.id, r.reply), res, None);
    }
}

impl Outbox {
    /// The outbox on `pool`, with its batching workers (call inside a Tokio runtime).
    pub fn new(pool: PgPool) -> Self {
        let (claims, crx) = mpsc::channel(10_000);
        let (accepts, arx) = mpsc::channel(10_000);
        let (parks, prx) = mpsc::channel(10_000);
        tokio::spawn(park_worker(pool.clone(), prx));
        tokio::spawn(claim_worker(pool.clone(), crx));
        tokio::spawn(accept_worker(pool.clone(), arx));
        Outbox {
            pool,
            claims,
            accepts,
            parks,
        }
    }

    /// queued → sending, recording the intent before any BSP call.
    ///
    /// A claim that misses a row the look-up then reads as `queued` ran on a snapshot
    /// from before the row became queued (the scheduler released it meanwhile): it is
    /// claimed again, not reported idle, or the send would sit queued with its record
    /// consumed.
    pub async fn claim(&self, message_id: &str, bsp: &str) -> anyhow::Result<Claim> {
        loop {
            if let Some((attempt, since_first_ms)) = self.claim_queued(message_id, bsp).await? {
                return Ok(Claim::Send {
                    attempt,
                    since_first_ms,
                });
            }
            let row = sqlx::query(
                "SELECT state, bsp, wamid, error_code, error_detail,
                        (extract(epoch from now() - updated_at) * 1000)::int8 AS age_ms,
                        (extract(epoch from updated_at) * 1000)::int8 AS at_ms
                   FROM outbound_messages WHERE message_id = $1",
            )
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
            let Some(r) = row else {
                return Ok(Claim::Missing);
            };
            let state: String = r.get("state");
            return Ok(match state.as_str() {
                "queued" => continue,
                "sending" => Claim::Sending {
                    age: Duration::from_millis(r.get::<i64, _>("age_ms").max(0) as u64),
                },
                "accepted" | "failed" | "unknown" => Claim::Final(Final {
                    state,
                    bsp: r.get("bsp"),
                    wamid: r.get("wamid"),
                    error_code: r.get("error_code"),
                    error_detail: r.get("error_detail"),
                    at_ms: r.get("at_ms"),
                }),
                _ => Claim::Idle,
            });
        }
    }

    /// The batched `queued → sending` transition: `(attempt, ms since the first)` if
    /// this call moved the row.
    async fn claim_queued(
        &self,
        message_id: &str,
        bsp: &str,
    ) -> anyhow::Result<Option<(i32, i64)>> {
        let (reply, rx) = oneshot::channel();
        self.claims
            .send(ClaimReq {
                id: message_id.to_string(),
                bsp: bsp.to_string(),
                reply,
            })
            .await
            .map_err(|_| anyhow::anyhow!("claim batcher stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("claim batcher stopped"))?
            .map_err(|e| anyhow::anyhow!("claim: {e}"))
    }

    /// sending → accepted; returns the recorded time (None: not in `sending` any more).
    pub async fn accepted(
        &self,
        message_id: &str,
        bsp: &str,
        wamid: &str,
    ) -> anyhow::Result<Option<i64>> {
        let (reply, rx) = oneshot::channel();
        self.accepts
            .send(AcceptReq {
                id: message_id.to_string(),
                bsp: bsp.to_string(),
                wamid: wamid.to_string(),
                reply,
            })
            .await
            .map_err(|_| anyhow::anyhow!("accept batcher stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("accept batcher stopped"))?
            .map_err(|e| anyhow::anyhow!("record accepted: {e}"))
    }

    /// sending (or a stuck sending, for `outcome_unknown`) → failed/unknown.
    pub async fn failed(
        &self,
        message_id: &str,
        state: &str,
        code: &str,
        detail: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE outbound_messages SET state = $2, error_code = $3, error_detail = $4, updated_at = now()
              WHERE message_id = $1 AND state IN ('sending', 'queued')
          RETURNING (extract(epoch from updated_at) * 1000)::int8",
        )
        .bind(message_id)
        .bind(state)
        .bind(code)
        .bind(detail)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.map(|r| r.get(0)))
    }

    /// sending → retrying until `after` from now. Does not count as an attempt when
    /// `uncount` (the call never went out: breaker open, throttled before sending).
    pub async fn retry_later(
        &self,
        message_id: &str,
        after: Duration,
        code: &str,
        detail: &str,
        uncount: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE outbound_messages SET state = 'retrying', due_at = now() + $2 * interval '1 millisecond',
                    attempts = attempts - $5::int, error_code = $3, error_detail = $4, updated_at = now()
              WHERE message_id = $1 AND state = 'sending'",
        )
        .bind(message_id)
        .bind(after.as_millis() as i64)
        .bind(code)
        .bind(detail)
        .bind(i32::from(uncount))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// accepted → scheduled for `after` from now: the BSP accepted the message, then would
    /// not deliver it because the customer has had their share of marketing messages for
    /// now (Meta 131049). Only sends still `accepted` under the failed `wamid`, and
    /// deferred fewer than `max` times, are put back, so a repeated webhook defers once;
    /// the scheduler republishes them when due and the router sends them anew. Returns the
    /// message ids deferred.
    pub async fn defer_capped(
        pool: &PgPool,
        bsp_wamids: &[(String, String)],
        after: Duration,
        max: i32,
    ) -> Result<Vec<String>, sqlx::Error> {
        if bsp_wamids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE outbound_messages o SET state = 'scheduled', due_at = now() + $3 * interval '1 millisecond',
                    deferrals = o.deferrals + 1, error_code = 'deferred_marketing_limit',
                    error_detail = 'Meta 131049: the customer reached their marketing message limit for now; sent again when due',
                    updated_at = now()
               FROM UNNEST($1::text[], $2::text[]) AS t(bsp, wamid)
              WHERE o.bsp = t.bsp AND o.wamid = t.wamid AND o.state = 'accepted' AND o.deferrals < $4
          RETURNING o.message_id",
        )
        .bind(bsp_wamids.iter().map(|p| p.0.clone()).collect::<Vec<_>>())
        .bind(bsp_wamids.iter().map(|p| p.1.clone()).collect::<Vec<_>>())
        .bind(after.as_millis() as i64)
        .bind(max)
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// queued → scheduled for `after` from now: the number's queue is full
    /// ([`super::limiter::SenderLimiter::park`]). Not an attempt; the scheduler
    /// republishes it when due.
    /// `false` when the message is not `queued` (a redelivery of one being sent, or
    /// already settled): then it is not parked, and the caller goes on as usual.
    pub async fn park(&self, message_id: &str, after: Duration) -> anyhow::Result<bool> {
        let (reply, rx) = oneshot::channel();
        let stopped = || anyhow::anyhow!("park batcher stopped");
        self.parks
            .send(ParkReq {
                id: message_id.to_string(),
                after_ms: after.as_millis() as i64,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await
            .map_err(|_| stopped())?
            .map_err(|e| anyhow::anyhow!("park: {e}"))
    }

    /// Due scheduled and retrying sends → queued (unpublished), returned for publishing.
    pub async fn release_due(&self, limit: i64) -> Result<Vec<SendRequest>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE outbound_messages o SET state = 'queued', published = false, due_at = NULL, updated_at = now()
              WHERE o.message_id IN (
                    SELECT message_id FROM outbound_messages
                     WHERE state IN ('scheduled', 'retrying') AND due_at <= now()
                     ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
          RETURNING o.*",
        )
        .persistent(false)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(request_of).collect())
    }

    /// Queued sends whose publication was never confirmed (the gateway crashed, or a
    /// release's produce failed).
    pub async fn unpublished(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<SendRequest>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT * FROM outbound_messages
              WHERE NOT published AND state = 'queued'
                AND updated_at < now() - $1 * interval '1 millisecond'
              ORDER BY created_at LIMIT $2",
        )
        .persistent(false)
        .bind(older_than.as_millis() as i64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(request_of).collect())
    }

    pub async fn mark_published(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        mark_published(&self.pool, ids).await
    }

    pub async fn ping(&self) -> Result<(), String> {
        switchboard_runtime::pg::ping(&self.pool).await
    }
}

/// Sends confirmed on the topic (the gateway after its produce, the scheduler after a
/// release): the sweeper need not republish them. Rows are locked in id order, like the
/// claim and accept batches, so the statements never deadlock one another.
pub async fn mark_published(pool: &PgPool, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH l AS (SELECT message_id FROM outbound_messages
                     WHERE message_id = ANY($1) AND NOT published
                     ORDER BY message_id FOR UPDATE)
         UPDATE outbound_messages SET published = true
          WHERE message_id IN (SELECT message_id FROM l)",
    )
    .persistent(false)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Rebuild the request from its row (due now: no schedule).
fn request_of(r: &sqlx::postgres::PgRow) -> SendRequest {
    type Ts = chrono::DateTime<chrono::Utc>;
    SendRequest {
        message_id: r.get("message_id"),
        tenant_id: r.get("tenant_id"),
        from_number: r.get("from_number"),
        to: r.get("to_id"),
        message_type: r.get("message_type"),
        message: r.get::<serde_json::Value, _>("message").to_string(),
        idempotency_key: r.get("idempotency_key"),
        metadata: r
            .get::<Option<serde_json::Value>, _>("metadata")
            .map(|m| m.to_string()),
        scheduled_at_ms: None,
        accepted_at_ms: r.get::<Ts, _>("created_at").timestamp_millis(),
        request_id: r.get("request_id"),
    }
}
