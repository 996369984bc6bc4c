//! Which analytics counts an event is the first to earn for its message.
//!
//! The rollups must count messages, not events: statuses repeat, arrive in any order,
//! `read` may come without `delivered`, and pricing rides on both `delivered` and
//! `read`. So each event row carries `credits`, the stages its message reaches for the
//! first time with it, and the rollups sum those. The sink knows what a message has
//! reached from `message_state` (filled by a view on every insert) plus the events
//! before it in the batch; events of one message share a `wa.events` partition and so
//! one sink, and ids already written are skipped, so each stage is credited once
//! however often and in whatever order the events come.

use switchboard_schemas::Event;

pub const SENT: u8 = 1;
pub const DELIVERED: u8 = 2;
pub const READ: u8 = 4;
pub const FAILED: u8 = 8;
pub const PRICED: u8 = 16;

/// What a message has reached so far, and what its later events inherit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageState {
    pub reached: u8,
    /// When it was first accepted or sent (Unix ms).
    pub sent_at_ms: Option<u64>,
    pub template_name: String,
    pub template_language: String,
    pub campaign: String,
}

/// The stages an event stands for: `read` (and `played`) imply `delivered`, which
/// implies `sent`; pricing counts once per message.
pub fn implied(e: &Event) -> u8 {
    let stage = match (e.event_type.as_str(), e.status.as_deref()) {
        // Held back by the customer's marketing limit (Meta 131049): the send is deferred
        // and sent again, so it is no failure of the message.
        (_, Some("failed")) if e.error_code.as_deref() == Some("131049") => 0,
        ("message.send_failed", _) | (_, Some("failed")) => FAILED,
        ("message.status" | "message.send_accepted", Some("accepted" | "sent")) => SENT,
        ("message.status", Some("delivered")) => SENT | DELIVERED,
        ("message.status", Some("read" | "played")) => SENT | DELIVERED | READ,
        _ => 0,
    };
    let priced = if e.pricing_category.is_some() || e.pricing_type.is_some() {
        PRICED
    } else {
        0
    };
    stage | priced
}

/// When `e` says its message was sent: `accepted` or `sent` (Unix ms).
pub fn send_time(e: &Event) -> Option<u64> {
    let implied = implied(e);
    (implied & SENT != 0 && implied & DELIVERED == 0).then_some(e.occurred_at_ms.max(0) as u64)
}

/// What `e` earns, given its message's state so far; updates the state. Returns the
/// credits and the send → delivered and send → read latencies it earned (ms).
pub fn credit(state: &mut MessageState, e: &Event) -> (u8, Option<u32>, Option<u32>) {
    let at = e.occurred_at_ms.max(0) as u64;
    let implied = implied(e);
    if let Some(sent) = send_time(e) {
        state.sent_at_ms = Some(state.sent_at_ms.map_or(sent, |s| s.min(sent)));
    }
    if let Some((name, lang)) = e.template() {
        state.template_name = name;
        state.template_language = lang;
    }
    if let Some(c) = e.campaign() {
        state.campaign = c;
    }
    let new = implied & !state.reached;
    state.reached |= implied;
    let since_sent = |stage: u8| {
        (new & stage != 0)
            .then_some(state.sent_at_ms)
            .flatten()
            .map(|sent| at.saturating_sub(sent).min(u32::MAX as u64) as u32)
    };
    (new, since_sent(DELIVERED), since_sent(READ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: &str, at: i64) -> Event {
        Event {
            event_type: "message.status".into(),
            status: Some(s.into()),
            occurred_at_ms: at,
            ..Event::default()
        }
    }

    fn priced(mut e: Event) -> Event {
        e.pricing_category = Some("marketing".into());
        e.pricing_type = Some("regular".into());
        e
    }

    /// Sum of credits over a sequence, per stage.
    fn totals(events: &[Event]) -> [u32; 5] {
        let mut st = MessageState::default();
        let mut t = [0; 5];
        for e in events {
            let (c, _, _) = credit(&mut st, e);
            for (i, bit) in [SENT, DELIVERED, READ, FAILED, PRICED].iter().enumerate() {
                t[i] += u32::from(c & bit != 0);
            }
        }
        t
    }

    #[test]
    fn every_order_and_repeat_credits_each_stage_once() {
        let seq = [
            status("sent", 1_000),
            priced(status("delivered", 2_000)),
            priced(status("read", 3_000)),
            status("read", 3_000),
        ];
        // All 24 orders of the four events, each also with every event twice.
        let idx = [0usize, 1, 2, 3];
        let mut perms = vec![];
        permute(&idx, &mut vec![], &mut perms);
        for p in perms {
            let once: Vec<Event> = p.iter().map(|&i| seq[i].clone()).collect();
            assert_eq!(totals(&once), [1, 1, 1, 0, 1], "{p:?}");
            let twice: Vec<Event> = once.iter().chain(once.iter()).cloned().collect();
            assert_eq!(totals(&twice), [1, 1, 1, 0, 1], "{p:?} twice");
        }
    }

    fn permute(rest: &[usize], cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if rest.is_empty() {
            out.push(cur.clone());
        }
        for (i, &x) in rest.iter().enumerate() {
            let mut r = rest.to_vec();
            r.remove(i);
            cur.push(x);
            permute(&r, cur, out);
            cur.pop();
        }
    }

    #[test]
    fn read_without_delivered_counts_as_delivered_with_its_latency() {
        let mut st = MessageState::default();
        assert_eq!(credit(&mut st, &status("sent", 1_000)), (SENT, None, None));
        assert_eq!(
            credit(&mut st, &status("read", 4_500)),
            (DELIVERED | READ, Some(3_500), Some(3_500))
        );
        assert_eq!(
            credit(&mut st, &status("delivered", 2_000)),
            (0, None, None)
        );
    }

    #[test]
    fn failures_and_inbound() {
        let mut st = MessageState::default();
        let failed = Event {
            event_type: "message.send_failed".into(),
            status: Some("failed".into()),
            ..Event::default()
        };
        assert_eq!(credit(&mut st, &failed).0, FAILED);
        assert_eq!(credit(&mut st, &failed).0, 0);
        let inbound = Event {
            event_type: "message.received".into(),
            ..Event::default()
        };
        assert_eq!(credit(&mut MessageState::default(), &inbound).0, 0);
    }

    #[test]
    fn later_events_inherit_the_template_of_the_send() {
        let mut st = MessageState::default();
        let send = Event {
            event_type: "message.send_accepted".into(),
            status: Some("accepted".into()),
            message_type: Some("template".into()),
            content: Some(
                r#"{"type":"template","template":{"name":"order_update","language":{"code":"en_US"}}}"#
                    .into(),
            ),
            metadata: Some(r#"{"campaign":"black-friday"}"#.into()),
            ..Event::default()
        };
        credit(&mut st, &send);
        credit(&mut st, &status("delivered", 5));
        assert_eq!(
            (
                st.template_name.as_str(),
                st.template_language.as_str(),
                st.campaign.as_str()
            ),
            ("order_update", "en_US", "black-friday")
        );
    }
}
