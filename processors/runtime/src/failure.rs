//! Which failures heal by waiting and which never will.
//!
//! A stage's work fails for one of two kinds of reasons, and the stream loops treat them
//! differently:
//!
//! - **transient**: a store, the broker or the registry is away, a timeout, a
//!   serialization conflict or deadlock, a missing table or permission (an operator's fix,
//!   not the record's fault). The same batch is retried with backoff; nothing is skipped.
//! - **permanent**: the record itself cannot be handled by this stage (bad encoding for a
//!   store, a constraint or data error, an undecodable record, a record too large to
//!   produce). Retrying changes nothing, so the loop isolates the record (bisecting a
//!   batch) and dead-letters it with the reason code, and the stream moves on.
//!
//! Handlers return `anyhow::Error`; [`classify`] looks through its chain once, here, so no
//! handler decides this on its own. Code that knows better wraps its error in
//! [`Permanent`] with a reason. Anything not recognised is transient: holding a batch is
//! recoverable, dead-lettering good data by mistake is not.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use switchboard_schemas::CodecError;

/// An error the same input will always hit, with a stable reason code (a DLQ reason and a
/// metric label).
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {source:#}")]
pub struct Permanent {
    pub reason: &'static str,
    #[source]
    pub source: anyhow::Error,
}

impl Permanent {
    pub fn new(reason: &'static str, source: impl Into<anyhow::Error>) -> Self {
        Self {
            reason,
            source: source.into(),
        }
    }
}

/// How a failure should be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Transient,
    Permanent(&'static str),
}

/// Classify `e` by the first cause in its chain that says what it is.
pub fn classify(e: &anyhow::Error) -> Class {
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<Permanent>() {
            return Class::Permanent(p.reason);
        }
        if let Some(c) = cause.downcast_ref::<CodecError>() {
            return match c {
                _ if c.is_retryable() => Class::Transient,
                CodecError::Encode { .. } => Class::Permanent("unencodable"),
                _ => Class::Permanent("undecodable"),
            };
        }
        if let Some(k) = cause.downcast_ref::<KafkaError>() {
            return classify_kafka(k);
        }
        #[cfg(feature = "postgres")]
        if let Some(s) = cause.downcast_ref::<sqlx::Error>() {
            return classify_sqlx(s);
        }
    }
    Class::Transient
}

fn classify_kafka(e: &KafkaError) -> Class {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
        | Some(RDKafkaErrorCode::InvalidMessageSize) => Class::Permanent("too_large"),
        Some(RDKafkaErrorCode::InvalidMessage) => Class::Permanent("invalid_record"),
        _ => Class::Transient,
    }
}

/// PostgreSQL by SQLSTATE class: data exceptions (22: bad encoding such as a NUL byte,
/// out-of-range values), integrity violations (23) and program limits (54: an index row
/// or a value too large) belong to the record. Everything else, including syntax and
/// permission errors (42: a bad deploy, fixed by an operator), is transient.
#[cfg(feature = "postgres")]
pub fn classify_sqlx(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Database(d) => match d.code().as_deref().map(|c| c.get(..2)) {
            Some(Some("22")) => Class::Permanent("pg_data"),
            Some(Some("23")) => Class::Permanent("pg_constraint"),
            Some(Some("54")) => Class::Permanent("pg_too_large"),
            _ => Class::Transient,
        },
        sqlx::Error::Encode(_) => Class::Permanent("pg_encode"),
        _ => Class::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_marker_is_found_under_context() {
        let e = anyhow::Error::new(Permanent::new(
            "bad_timestamp",
            anyhow::anyhow!("year 5138"),
        ))
        .context("writing batch");
        assert_eq!(classify(&e), Class::Permanent("bad_timestamp"));
        assert!(e.root_cause().to_string().contains("5138"));
    }

    #[test]
    fn unknown_errors_are_transient() {
        assert_eq!(
            classify(&anyhow::anyhow!("connection refused")),
            Class::Transient
        );
    }

    #[test]
    fn kafka_size_errors_are_permanent_and_transport_errors_are_not() {
        let big = anyhow::Error::new(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        assert_eq!(classify(&big), Class::Permanent("too_large"));
        let down = anyhow::Error::new(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        ));
        assert_eq!(classify(&down), Class::Transient);
    }
}
