//! What a replay is asked to do: a source topic, a range, filters and a target. A spec is
//! validated and its times resolved to absolute milliseconds once, when it is made, so
//! that a resumed replay covers exactly what the first run would have.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A replay as stored in its job: everything absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// Topic name without the deployment's prefix, e.g. `wa.events`.
    pub source: String,
    pub range: Range,
    /// Partitions to read; empty means all.
    #[serde(default)]
    pub partitions: BTreeSet<i32>,
    #[serde(default)]
    pub filters: Filters,
    pub target: Target,
    /// At most this many records per second handed to the target (0: as fast as it goes).
    #[serde(default)]
    pub rate_per_sec: u32,
}

/// `[from, to)` by record time or by offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum Range {
    /// Record (Kafka) timestamps, Unix milliseconds.
    Time { from_ms: i64, to_ms: i64 },
    /// Offsets, the same for every partition read; `None` is the log start / the end at
    /// the time the replay is planned.
    Offsets { from: Option<i64>, to: Option<i64> },
}

/// Which records of the range go to the target. Each applies where the record carries
/// the field; [`Filters::check`] refuses filters a source cannot apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bsp: Option<String>,
    /// E.164 business number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_number: Option<String>,
    /// Event types (`message.status`, ...); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Dead-letter reason codes (dead-letter sources only); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }
}

/// Where replayed records go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// PostgreSQL through the pg-sink's code (idempotent).
    Postgres,
    /// ClickHouse through the ch-sink's code: the live database, or another one (made
    /// with the same DDL if missing) to backfill a new table.
    Clickhouse {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        database: Option<String>,
    },
    /// The fan-out: delivery tasks for one endpoint or all of a tenant's matching
    /// endpoints, with the events' own ids (the same `webhook-id`).
    Fanout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant_id: Option<String>,
    },
    /// The normalizer's code, producing to `wa.events`; with `bypass_dedupe` the dedupe
    /// store is neither read nor written, so events already delivered go out again.
    Normalizer {
        #[serde(default)]
        bypass_dedupe: bool,
    },
    /// Send requests back onto `wa.send.requests`, for the live router: its state machine
    /// never sends a message twice.
    Router,
    /// A copy onto another topic (name without prefix) with keys, headers and timestamps.
    Topic { topic: String },
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Clickhouse { .. } => "clickhouse",
            Target::Fanout { .. } => "fanout",
            Target::Normalizer { .. } => "normalizer",
            Target::Router => "router",
            Target::Topic { .. } => "topic",
        }
    }
}

/// What a source topic's records are, for filtering and for which targets take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Events,
    SendRequests,
    Attempts,
    DeliveryTasks,
}

/// A source topic: its record kind and, for dead-letter topics, the kind wrapped inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub kind: Kind,
    pub dead_letters: bool,
}

/// The topics a replay can read, by their unprefixed names.
pub fn source_of(topic: &str) -> Option<Source> {
    let plain = |kind| {
        Some(Source {
            kind,
            dead_letters: false,
        })
    };
    let dead = |kind| {
        Some(Source {
            kind,
            dead_letters: true,
        })
    };
    match topic {
        "wa.webhooks.raw" => plain(Kind::Raw),
        "wa.events" => plain(Kind::Events),
        "wa.send.requests" => plain(Kind::SendRequests),
        "wa.deliveries.attempts" => plain(Kind::Attempts),
        "wa.deliveries.dlq" => plain(Kind::DeliveryTasks),
        "wa.webhooks.dlq" => dead(Kind::Raw),
        "wa.send.dlq" => dead(Kind::SendRequests),
        "wa.pg-sink.dlq" | "wa.fanout.dlq" | "wa.replay.dlq" => dead(Kind::Events),
        // The ch-sink reads two topics; each letter names its source.
        "wa.ch-sink.dlq" => dead(Kind::Events),
        t if t.starts_with("wa.deliveries.retry.") => plain(Kind::DeliveryTasks),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("unknown source topic {0:?}: one of wa.webhooks.raw, wa.events, wa.send.requests, wa.deliveries.attempts, wa.deliveries.dlq, wa.deliveries.retry.<delay>, or a dead-letter topic (wa.webhooks.dlq, wa.send.dlq, wa.pg-sink.dlq, wa.ch-sink.dlq, wa.fanout.dlq)")]
    UnknownSource(String),
    #[error("target {target} does not take records of {topic}")]
    WrongTarget { target: &'static str, topic: String },
    #[error("filter {filter} cannot be applied to {topic}")]
    Filter { filter: &'static str, topic: String },
    #[error("empty range: from must be before to")]
    EmptyRange,
    #[error("target fanout from wa.events needs endpoint_id or tenant_id")]
    FanoutWithoutAudience,
    #[error("target topic must differ from the source")]
    CopyOntoItself,
    #[error("give one range: from/to (times), from_offset/to_offset, or all")]
    AmbiguousRange,
    #[error("a time range needs from")]
    MissingFrom,
    #[error("a replay needs a target")]
    MissingTarget,
    #[error(
        "bad time {0:?}: RFC 3339 (2026-12-01T00:00:00Z), or relative to now (-24h, -7d, now)"
    )]
    BadTime(String),
}

impl ReplaySpec {
    /// Refuse what cannot work, before anything runs.
    pub fn validate(&self) -> Result<Source, SpecError> {
        let src =
            source_of(&self.source).ok_or_else(|| SpecError::UnknownSource(self.source.clone()))?;
        match self.range {
            Range::Time { from_ms, to_ms } if from_ms >= to_ms => {
                return Err(SpecError::EmptyRange)
            }
            Range::Offsets {
                from: Some(f),
                to: Some(t),
            } if f >= t => return Err(SpecError::EmptyRange),
            _ => {}
        }
        let fits = match (&self.target, src.kind) {
            (Target::Topic { topic }, _) => {
                if *topic == self.source {
                    return Err(SpecError::CopyOntoItself);
                }
                true
            }
            (Target::Postgres, Kind::Events) => true,
            (Target::Clickhouse { .. }, Kind::Events | Kind::Attempts) => true,
            (Target::Fanout { .. }, Kind::Events | Kind::DeliveryTasks) => true,
            (Target::Normalizer { .. }, Kind::Raw) => true,
            (Target::Router, Kind::SendRequests) => true,
            _ => false,
        };
        if !fits {
            return Err(SpecError::WrongTarget {
                target: self.target.name(),
                topic: self.source.clone(),
            });
        }
        // Every matching endpoint of every tenant is what the live fan-out does: fine for
        // records it never delivered (dead letters, exhausted tasks), not for a replay of
        // wa.events, which would re-deliver everything to everyone.
        if let Target::Fanout {
            endpoint_id: None,
            tenant_id: None,
        } = self.target
        {
            if src.kind == Kind::Events && !src.dead_letters {
                return Err(SpecError::FanoutWithoutAudience);
            }
        }
        let f = &self.filters;
        let refuse = |filter| {
            Err(SpecError::Filter {
                filter,
                topic: self.source.clone(),
            })
        };
        // Raw webhooks name their BSP; tenant and number are known only after parsing.
        if src.kind == Kind::Raw
            && (f.tenant.is_some() || f.business_number.is_some() || !f.event_types.is_empty())
        {
            return refuse("tenant/business_number/event_types");
        }
        if matches!(src.kind, Kind::Attempts | Kind::DeliveryTasks)
            && (f.bsp.is_some() || f.business_number.is_some())
        {
            return refuse("bsp/business_number");
        }
        if src.kind == Kind::SendRequests && (f.bsp.is_some() || !f.event_types.is_empty()) {
            return refuse("bsp/event_types");
        }
        if !src.dead_letters && !f.reasons.is_empty() {
            return refuse("reasons");
        }
        Ok(src)
    }
}

/// A time as an operator writes it: RFC 3339, `now`, or relative to `now_ms` (`-24h`,
/// `-7d`, `-90m`, `+1h`, in humantime units).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, SpecError> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some((sign, rest)) = s
        .strip_prefix('-')
        .map(|r| (-1, r))
        .or_else(|| s.strip_prefix('+').map(|r| (1, r)))
    {
        let d = humantime::parse_duration(rest).map_err(|_| SpecError::BadTime(s.to_string()))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| SpecError::BadTime(s.to_string()))?;
        return Ok(now_ms + sign * ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| SpecError::BadTime(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str, target: Target) -> ReplaySpec {
        ReplaySpec {
            source: source.into(),
            range: Range::Time {
                from_ms: 1,
                to_ms: 2,
            },
            partitions: BTreeSet::new(),
            filters: Filters::default(),
            target,
            rate_per_sec: 0,
        }
    }

    #[test]
    fn times_absolute_and_relative() {
        let now = 1_764_547_200_000; // 2025-12-01T00:00:00Z
        assert_eq!(parse_time("2025-12-01T00:00:00Z", now), Ok(now));
        assert_eq!(parse_time("-24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("-7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("now", now), Ok(now));
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("-lots", now).is_err());
    }

    #[test]
    fn targets_take_only_their_records() {
        assert!(spec("wa.events", Target::Postgres).validate().is_ok());
        assert!(spec("wa.pg-sink.dlq", Target::Postgres).validate().is_ok());
        assert!(spec(
            "wa.webhooks.dlq",
            Target::Normalizer {
                bypass_dedupe: false
            }
        )
        .validate()
        .is_ok());
        assert_eq!(
            spec("wa.webhooks.raw", Target::Postgres)
                .validate()
                .unwrap_err(),
            SpecError::WrongTarget {
                target: "postgres",
                topic: "wa.webhooks.raw".into()
            }
        );
        assert_eq!(
            spec(
                "wa.events",
                Target::Topic {
                    topic: "wa.events".into()
                }
            )
            .validate()
            .unwrap_err(),
            SpecError::CopyOntoItself
        );
        assert_eq!(
            spec(
                "wa.events",
                Target::Fanout {
                    endpoint_id: None,
                    tenant_id: None
                }
            )
            .validate()
            .unwrap_err(),
            SpecError::FanoutWithoutAudience
        );
        assert!(matches!(
            spec("wa.nope", Target::Postgres).validate(),
            Err(SpecError::UnknownSource(_))
        ));
    }

    #[test]
    fn filters_a_source_cannot_apply_are_refused() {
        let mut s = spec(
            "wa.webhooks.raw",
            Target::Normalizer {
                bypass_dedupe: false,
            },
        );
        s.filters.bsp = Some("meta".into());
        assert!(s.validate().is_ok());
        s.filters.tenant = Some("ten_1".into());
        assert!(matches!(s.validate(), Err(SpecError::Filter { .. })));
        let mut s = spec("wa.events", Target::Postgres);
        s.filters.reasons = vec!["pg_data".into()];
        assert!(matches!(s.validate(), Err(SpecError::Filter { .. })));
    }

    #[test]
    fn empty_ranges_are_refused() {
        let mut s = spec("wa.events", Target::Postgres);
        s.range = Range::Time {
            from_ms: 5,
            to_ms: 5,
        };
        assert_eq!(s.validate(), Err(SpecError::EmptyRange));
    }
}
