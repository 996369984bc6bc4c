//! Per-conversation order for each endpoint, with many events in flight.
//!
//! Events of one conversation share a partition, so they arrive in order; the loop hands
//! each one a [`Ticket`] in that order (synchronously, before any task runs). An event
//! then *registers* the endpoints it goes to, strictly after the conversation's previous
//! event registered (decoding and matching are microseconds, so this chain is cheap),
//! and delivers to an endpoint once no earlier event of the conversation is still
//! pending *for that endpoint*. Other endpoints and other conversations never wait.
//!
//! "Pending" ends after the first attempt (delivered, or handed to a retry topic) for
//! endpoints in `conversation` order, and after the final outcome for `strict` ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct Conv {
    /// Next sequence number to hand out.
    next: u64,
    /// Tickets alive.
    alive: usize,
    /// Every sequence number below this one has registered (or was abandoned).
    registered: u64,
    /// Tickets dropped before registering.
    abandoned: BTreeSet<u64>,
    /// Endpoint → sequence numbers registered for it and not yet passed, and who waits
    /// for a turn there (woken only by changes at that endpoint: with 100 endpoints, a
    /// pass wakes one endpoint's waiters, not every waiter of the conversation).
    pending: HashMap<String, Pending>,
    /// Woken when the registration chain moves.
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Pending {
    seqs: BTreeSet<u64>,
    notify: Arc<Notify>,
}

impl Conv {
    fn advance(&mut self) {
        while self.abandoned.remove(&self.registered) {
            self.registered += 1;
        }
    }
}

#[derive(Default)]
pub struct Turns {
    convs: Mutex<HashMap<String, Conv>>,
}

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Conv>> {
        self.convs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a place in line. Must be called in arrival order.
    pub fn ticket(self: &Arc<Self>, conversation: &str) -> Ticket {
        let mut convs = self.lock();
        let c = convs.entry(conversation.to_string()).or_default();
        let seq = c.next;
        c.next += 1;
        c.alive += 1;
        Ticket {
            turns: self.clone(),
            conv: conversation.to_string(),
            seq,
            registered: false,
            held: Mutex::new(Vec::new()),
        }
    }

    /// Conversations with events in flight (a gauge for operators).
    pub fn conversations(&self) -> usize {
        self.lock().len()
    }
}

pub struct Ticket {
    turns: Arc<Turns>,
    conv: String,
    seq: u64,
    registered: bool,
    held: Mutex<Vec<String>>,
}

impl Ticket {
    /// Wait for the previous event of the conversation to register, then register the
    /// endpoints this one goes to.
    pub async fn register(&mut self, endpoints: &[String]) {
        loop {
            let notify = {
                let mut convs = self.turns.lock();
                let c = convs
                    .get_mut(&self.conv)
                    .expect("a live ticket keeps its conversation");
                if c.registered == self.seq {
                    for ep in endpoints {
                        c.pending
                            .entry(ep.clone())
                            .or_default()
                            .seqs
                            .insert(self.seq);
                    }
                    c.registered += 1;
                    c.advance();
                    c.notify.notify_waiters();
                    self.registered = true;
                    *self.held.get_mut().unwrap_or_else(|p| p.into_inner()) = endpoints.to_vec();
                    return;
                }
                c.notify.clone()
            };
            let n = notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.ready(|c| c.registered == self.seq) {
                continue;
            }
            n.await;
        }
    }

    /// Wait until no earlier event of the conversation is pending for `endpoint`.
    pub async fn turn(&self, endpoint: &str) {
        loop {
            let notify = {
                let convs = self.turns.lock();
                let c = convs
                    .get(&self.conv)
                    .expect("a live ticket keeps its conversation");
                match c.pending.get(endpoint) {
                    // Registered, so the entry exists until this ticket passes.
                    Some(p) if p.seqs.first() == Some(&self.seq) => return,
                    Some(p) => p.notify.clone(),
                    None => return,
                }
            };
            let n = notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.ready(|c| {
                c.pending
                    .get(endpoint)
                    .is_none_or(|p| p.seqs.first() == Some(&self.seq))
            }) {
                return;
            }
            n.await;
        }
    }

    /// Let later events of the conversation go to `endpoint`.
    pub fn pass(&self, endpoint: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|e| e == endpoint) {
            held.swap_remove(i);
            drop(held);
            let mut convs = self.turns.lock();
            if let Some(c) = convs.get_mut(&self.conv) {
                release(c, endpoint, self.seq);
            }
        }
    }

    fn ready(&self, f: impl Fn(&Conv) -> bool) -> bool {
        self.turns.lock().get(&self.conv).is_some_and(f)
    }
}

fn release(c: &mut Conv, endpoint: &str, seq: u64) {
    if let Some(p) = c.pending.get_mut(endpoint) {
        p.seqs.remove(&seq);
        p.notify.notify_waiters();
        if p.seqs.is_empty() {
            c.pending.remove(endpoint);
        }
    }
}

impl Drop for Ticket {
    /// An event that ends early (shutdown, a bad record) must not stall its conversation.
    fn drop(&mut self) {
        let mut convs = self.turns.lock();
        let Some(c) = convs.get_mut(&self.conv) else {
            return;
        };
        if !self.registered {
            c.abandoned.insert(self.seq);
            c.advance();
        }
        for ep in std::mem::take(self.held.get_mut().unwrap_or_else(|p| p.into_inner())) {
            release(c, &ep, self.seq);
        }
        c.notify.notify_waiters();
        c.alive -= 1;
        if c.alive == 0 {
            convs.remove(&self.conv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Three events of one conversation, registered out of order and with the first one
    /// slow on endpoint A: B is never held back by A, and A sees them in order.
    #[tokio::test]
    async fn each_endpoint_sees_the_conversation_in_order() {
        let turns = Arc::new(Turns::default());
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        for (i, delay) in [(0u64, 30u64), (1, 0), (2, 5)] {
            let mut t = turns.ticket("c1");
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                // Later events decode first.
                tokio::time::sleep(Duration::from_millis(10 * (3 - i))).await;
                t.register(&["A".to_string(), "B".to_string()]).await;
                let a = async {
                    t.turn("A").await;
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    log.lock().unwrap().push(format!("A{i}"));
                };
                a.await;
                t.pass("A");
                t.turn("B").await;
                log.lock().unwrap().push(format!("B{i}"));
                t.pass("B");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let only =
            |p: &str| -> Vec<String> { log.iter().filter(|s| s.starts_with(p)).cloned().collect() };
        assert_eq!(only("A"), ["A0", "A1", "A2"]);
        assert_eq!(only("B"), ["B0", "B1", "B2"]);
        assert_eq!(
            turns.conversations(),
            0,
            "state is dropped with the last ticket"
        );
    }

    #[tokio::test]
    async fn other_endpoints_and_conversations_do_not_wait() {
        let turns = Arc::new(Turns::default());
        let mut first = turns.ticket("c1");
        first.register(&["A".to_string()]).await;
        first.turn("A").await; // holds A (a strict endpoint failing, say)
        let mut second = turns.ticket("c1");
        second.register(&["A".to_string(), "B".to_string()]).await;
        tokio::time::timeout(Duration::from_millis(100), second.turn("B"))
            .await
            .expect("B is not held by A's pending event");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.turn("A"))
                .await
                .is_err(),
            "A waits for the earlier event"
        );
        let mut other = turns.ticket("c2");
        other.register(&["A".to_string()]).await;
        tokio::time::timeout(Duration::from_millis(100), other.turn("A"))
            .await
            .expect("another conversation is not held");
        first.pass("A");
        tokio::time::timeout(Duration::from_millis(100), second.turn("A"))
            .await
            .expect("released");
    }

    #[tokio::test]
    async fn an_abandoned_event_does_not_stall_the_conversation() {
        let turns = Arc::new(Turns::default());
        let dropped = turns.ticket("c1");
        let mut later = turns.ticket("c1");
        drop(dropped);
        tokio::time::timeout(
            Duration::from_millis(100),
            later.register(&["A".to_string()]),
        )
        .await
        .expect("registers after the abandoned one");
        tokio::time::timeout(Duration::from_millis(100), later.turn("A"))
            .await
            .expect("its turn");
    }
}
