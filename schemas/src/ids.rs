//! Deterministic event ids.
//!
//! The id is a function of the BSP fact only (never of arrival time or the request that
//! carried it), so a webhook retried for a week, replayed, or reprocessed after a crash
//! yields the same id. That is what lets the dedupe store, the sinks and client endpoints
//! (through `webhook-id`) drop repeats.

use sha2::{Digest, Sha256};

use crate::Status;

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let out = h.finalize();
    format!("evt_{}", hex::encode(&out[..16]))
}

/// Id of a status event: (BSP, BSP message id, canonical status).
pub fn status_event_id(bsp: &str, wamid: &str, status: Status) -> String {
    digest(&["v1", "status", bsp, wamid, status.as_str()])
}

/// Id of an inbound message event: (BSP, BSP message id).
pub fn inbound_event_id(bsp: &str, wamid: &str) -> String {
    digest(&["v1", "inbound", bsp, wamid])
}

/// Id of a customer's preference change: (BSP, business number, customer, category,
/// value, the BSP's time of it). A stop, a resume and a second stop are three events.
pub fn preference_event_id(
    bsp: &str,
    business: &str,
    customer: &str,
    category: &str,
    value: &str,
    occurred_at_ms: i64,
) -> String {
    let at = occurred_at_ms.to_string();
    digest(&[
        "v1",
        "preference",
        bsp,
        business,
        customer,
        category,
        value,
        &at,
    ])
}

/// Id of the event that says an inbound message's media is kept: (BSP, message id).
pub fn media_event_id(bsp: &str, wamid: &str) -> String {
    digest(&["v1", "media", bsp, wamid])
}

/// Id of a send outcome event: (Switchboard message id, outcome), where the router
/// names an acceptance `accepted:<BSP message id>` (a deferred send is accepted again).
/// A router that re-emits an outcome after a crash produces the same id.
pub fn send_event_id(message_id: &str, outcome: &str) -> String {
    digest(&["v1", "send", message_id, outcome])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = status_event_id("meta", "wamid.1", Status::Sent);
        assert_eq!(a, status_event_id("meta", "wamid.1", Status::Sent));
        assert_ne!(a, status_event_id("meta", "wamid.1", Status::Delivered));
        assert_ne!(a, status_event_id("360dialog", "wamid.1", Status::Sent));
        assert_ne!(a, inbound_event_id("meta", "wamid.1"));
        assert_eq!(a.len(), 4 + 32);
        // Known answers (computed independently: SHA-256 over length-prefixed parts),
        // so that a change of the derivation, which would break dedupe of webhooks
        // already seen and every client's dedupe by webhook-id, cannot slip through.
        assert_eq!(
            inbound_event_id("meta", "x"),
            "evt_73992320c7d2839ba91ba6dc9c8ac670"
        );
        assert_eq!(a, "evt_b2bc7019878c8fc0a75ded6540b91a20");
    }

    #[test]
    fn rank_is_the_documented_order() {
        use Status::*;
        let order = [Accepted, Sent, Failed, Delivered, Read, Played, Deleted];
        for w in order.windows(2) {
            assert!(w[0].rank() < w[1].rank(), "{:?} < {:?}", w[0], w[1]);
        }
        for s in order {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
    }
}
