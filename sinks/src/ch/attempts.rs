//! The delivery log: `wa.deliveries.attempts` → `delivery_attempts` (rollup by view),
//! and its retention.
//!
//! Each record on the topic carries the attempts settled together (an event's first
//! attempts to all its endpoints). Exactly once, like events: a batch repeated after a
//! crash is filtered against the attempt ids already stored (bounded to the batch's time
//! range, so the look-up reads a day's partition or two, not the table). An attempt id
//! is in exactly one record, so one sink instance owns it.

use std::collections::HashSet;

use serde::Serialize;
use switchboard_schemas::DeliveryAttempt;

use super::writer::{lit, ChWriter};

#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct AttemptRow {
    pub attempt_id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u16,
    pub trigger: String,
    pub outcome: String,
    pub status_code: u16,
    pub latency_ms: u32,
    pub error: String,
    pub response_snippet: String,
    pub attempted_at: u32,
    pub attempted_at_ms: u64,
    pub is_final: u8,
    pub body: String,
}

impl AttemptRow {
    pub fn from_attempt(a: &DeliveryAttempt) -> Self {
        AttemptRow {
            attempt_id: a.attempt_id.clone(),
            endpoint_id: a.endpoint_id.clone(),
            tenant_id: a.tenant_id.clone(),
            event_id: a.event_id.clone(),
            event_type: a.event_type.clone(),
            attempt: a.attempt.clamp(0, u16::MAX as i32) as u16,
            trigger: a.trigger.clone(),
            outcome: a.outcome.clone(),
            status_code: a.status_code.unwrap_or(0).clamp(0, u16::MAX as i32) as u16,
            latency_ms: a.latency_ms.clamp(0, u32::MAX as i64) as u32,
            error: a.error.clone().unwrap_or_default(),
            response_snippet: a.response_snippet.clone().unwrap_or_default(),
            attempted_at: (a.attempted_at_ms.max(0) / 1000).min(u32::MAX as i64) as u32,
            attempted_at_ms: a.attempted_at_ms.max(0) as u64,
            is_final: u8::from(a.is_final),
            body: a.body.clone(),
        }
    }
}

impl ChWriter {
    /// Insert the attempts not written before. Returns how many rows were inserted.
    pub async fn write_attempts(&self, attempts: &[DeliveryAttempt]) -> anyhow::Result<usize> {
        self.write_attempt_rows(attempts)
            .await
            .map_err(super::failure::classified)
    }

    async fn write_attempt_rows(
        &self,
        attempts: &[DeliveryAttempt],
    ) -> Result<usize, clickhouse::error::Error> {
        let mut batch_ids = HashSet::new();
        let fresh: Vec<&DeliveryAttempt> = attempts
            .iter()
            .filter(|a| batch_ids.insert(a.attempt_id.as_str()))
            .collect();
        let Some(from) = fresh.iter().map(|a| a.attempted_at_ms.max(0) / 1000).min() else {
            return Ok(0);
        };
        let to = fresh
            .iter()
            .map(|a| a.attempted_at_ms.max(0) / 1000)
            .max()
            .unwrap_or(from);
        let sql = format!(
            "SELECT attempt_id FROM {}.delivery_attempts WHERE attempted_at >= toDateTime({from}) AND attempted_at <= toDateTime({to}) AND attempt_id IN {{ids}}",
            self.database
        );
        let ids: Vec<&str> = fresh.iter().map(|a| a.attempt_id.as_str()).collect();
        let seen: HashSet<String> = self
            .lookup::<String>(&sql, &ids)
            .await?
            .into_iter()
            .collect();
        let todo: Vec<&&DeliveryAttempt> = fresh
            .iter()
            .filter(|a| !seen.contains(&a.attempt_id))
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let mut insert = self
            .db_client
            .insert::<AttemptRow>("delivery_attempts")
            .await?;
        for a in &todo {
            insert.write(&AttemptRow::from_attempt(a)).await?;
        }
        insert.end().await?;
        Ok(todo.len())
    }

    /// Drop the delivery log's daily partitions older than `keep_days` whole days.
    /// Returns the partitions dropped.
    pub async fn enforce_retention(
        &self,
        keep_days: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let cutoff = chrono::Utc::now().date_naive() - chrono::Days::new(keep_days as u64);
        let cutoff: u32 = cutoff.format("%Y%m%d").to_string().parse().unwrap_or(0);
        let sql = format!(
            "SELECT DISTINCT partition FROM system.parts WHERE database = {} AND table = 'delivery_attempts' AND active",
            lit(&self.database)
        );
        let parts: Vec<String> = self.client.query_raw(&sql).fetch_all::<String>().await?;
        let mut dropped = Vec::new();
        for p in parts {
            let day: u32 = p.trim_matches('\'').parse().unwrap_or(u32::MAX);
            if day < cutoff {
                self.client
                    .query_raw(&format!(
                        "ALTER TABLE {}.delivery_attempts DROP PARTITION {day}",
                        self.database
                    ))
                    .execute()
                    .await?;
                dropped.push(p);
            }
        }
        Ok(dropped)
    }
}
