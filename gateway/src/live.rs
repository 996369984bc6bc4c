//! Live events: one reader of `wa.events` per gateway, fanned out in memory to the
//! tenants' stream connections (`GET /v1/events/stream` and `/v1/events/ws`, see
//! `api::stream`).
//!
//! The feed reads every partition by plain assignment (no consumer group: each gateway
//! reads the whole topic for its own connections), and only while a connection is open
//! on this gateway: a fleet of gateways with no stream open does not read the event
//! topic once per gateway. The first subscription wakes the feed, which starts at the
//! topic's end as it stands then; a subscription is [`Subscription::ready`] once the
//! feed reads from a position taken after it subscribed, so a connection catching up
//! from a cursor reads the topic past that position and meets the live events with no
//! gap. The feed stops reading at the first event it reads for no subscriber.
//! Each event goes to the subscriptions of its tenant as it arrives,
//! with the feed's position after it. A subscription's buffer is bounded: one that
//! overflows (a burst larger than the buffer, or a client reading slower than its events
//! come) is cut off from the live events rather than hold memory or slow the feed for
//! everyone. Its connection then catches up from the topic at its own pace, through the
//! polling reader, and renews the subscription (`api::stream`); the place under the
//! per-tenant cap stays the connection's meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::{retry, CancellationToken};
use switchboard_schemas::{Codec, Event};
use tokio::sync::{mpsc, watch, Notify};

pub struct Metrics {
    pub open: IntGauge,
    pub closed: IntCounterVec,
    pub catch_ups: IntCounter,
    pub reading: IntGauge,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    open: register_int_gauge!(
        "switchboard_gateway_streams_open",
        "Event stream connections open on this gateway"
    )
    .expect("metric registers once"),
    closed: register_int_counter_vec!(
        "switchboard_gateway_streams_closed_total",
        "Event stream connections ended, by reason (client, slow, shutdown)",
        &["reason"]
    )
    .expect("metric registers once"),
    catch_ups: register_int_counter!(
        "switchboard_gateway_stream_catch_ups_total",
        "Times a stream fell behind the live events and caught up from the topic"
    )
    .expect("metric registers once"),
    reading: register_int_gauge!(
        "switchboard_gateway_live_feed_reading",
        "1 while this gateway reads wa.events for its open streams, 0 while none is open"
    )
    .expect("metric registers once"),
});

/// One event as the feed read it.
pub struct LiveEvent {
    pub partition: i32,
    pub offset: i64,
    /// The feed's next offset of every partition once this event was read.
    pub feed_position: BTreeMap<i32, i64>,
    pub event: Event,
    /// Its webhook type and body, rendered once for all the connections that get it.
    pub rendered: OnceLock<Rendered>,
}

/// An event's webhook type and body (JSON text, without a cursor).
pub struct Rendered {
    pub ty: Arc<str>,
    pub body: Arc<str>,
}

impl LiveEvent {
    pub fn rendered(&self) -> &Rendered {
        self.rendered.get_or_init(|| {
            let (ty, body) = switchboard_processors::fanout::payload::envelope(&self.event);
            Rendered {
                ty: ty.into(),
                body: body.to_string().into(),
            }
        })
    }
}

struct Subscriber {
    id: u64,
    /// `None` once its buffer overflowed, until the connection renews it.
    tx: Option<mpsc::Sender<Arc<LiveEvent>>>,
}

/// The gateway's one reader of `wa.events` and its subscriptions.
pub struct LiveFeed {
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
    /// Whether the feed reads from a position taken after every current subscription;
    /// changed only under the `subscribers` lock.
    reading: watch::Sender<bool>,
    /// A subscription came while the feed was not reading.
    wake: Notify,
    next_id: AtomicU64,
    /// Connections one tenant may have open on this gateway.
    pub max_per_tenant: usize,
    /// Events a subscription may have waiting before it is closed as slow.
    pub buffer: usize,
    /// How often an idle connection sends a heartbeat.
    pub heartbeat: Duration,
    /// How long a connection may take to accept one more event before it is ended as
    /// too slow.
    pub stall: Duration,
}

/// A tenant's subscription; dropping it unsubscribes.
pub struct Subscription {
    feed: Arc<LiveFeed>,
    tenant: String,
    id: u64,
    pub events: mpsc::Receiver<Arc<LiveEvent>>,
}

impl Subscription {
    /// Wait until the feed reads from a position taken after this subscription: from
    /// then on every event of the topic reaches it, and a catch-up from the topic that
    /// starts now overlaps the live events instead of missing some.
    pub async fn ready(&self) {
        let mut rx = self.feed.reading.subscribe();
        let _ = rx.wait_for(|reading| *reading).await;
    }

    /// A fresh buffer after an overflow: live events flow into it from now on (the
    /// connection catches up on what came before from the topic).
    pub fn renew(&mut self) {
        let (tx, rx) = mpsc::channel(self.feed.buffer);
        let mut subs = lock(&self.feed.subscribers);
        if let Some(s) = subs
            .get_mut(&self.tenant)
            .and_then(|l| l.iter_mut().find(|s| s.id == self.id))
        {
            s.tx = Some(tx);
        }
        self.events = rx;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = lock(&self.feed.subscribers);
        if let Some(list) = subs.get_mut(&self.tenant) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                subs.remove(&self.tenant);
            }
        }
        METRICS.open.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveFeed {
    pub fn new(
        max_per_tenant: usize,
        buffer: usize,
        heartbeat: Duration,
        stall: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            subscribers: Mutex::new(HashMap::new()),
            reading: watch::Sender::new(false),
            wake: Notify::new(),
            next_id: AtomicU64::new(0),
            max_per_tenant,
            buffer: buffer.max(1),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            stall,
        })
    }

    /// Subscribe `tenant`, or `None` when it has `max_per_tenant` connections open here.
    pub fn subscribe(self: &Arc<Self>, tenant: &str) -> Option<Subscription> {
        let mut subs = lock(&self.subscribers);
        let list = subs.entry(tenant.to_string()).or_default();
        if list.len() >= self.max_per_tenant {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Subscriber { id, tx: Some(tx) });
        if !*self.reading.borrow() {
            // Kept as a permit if the feed is not waiting yet.
            self.wake.notify_one();
        }
        METRICS.open.inc();
        Some(Subscription {
            feed: self.clone(),
            tenant: tenant.to_string(),
            id,
            events: rx,
        })
    }

    /// Hand `ev` to its tenant's subscriptions; one whose buffer is full is cut off (its
    /// receiver sees the end of the channel after what it holds).
    fn dispatch(&self, ev: LiveEvent) {
        let Some(tenant) = ev.event.tenant_id.clone() else {
            return;
        };
        let mut subs = lock(&self.subscribers);
        let Some(list) = subs.get_mut(&tenant) else {
            return;
        };
        let ev = Arc::new(ev);
        for s in list.iter_mut() {
            let Some(tx) = &s.tx else { continue };
            match tx.try_send(ev.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    METRICS.catch_ups.inc();
                    tracing::debug!(%tenant, "event stream behind: it catches up from the topic");
                    s.tx = None;
                }
                // The connection is going; its subscription's drop removes the entry.
                Err(mpsc::error::TrySendError::Closed(_)) => s.tx = None,
            }
        }
    }

    /// Read `topic` while subscriptions exist, each time from its end as it stands when
    /// the first one comes, until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        kafka: KafkaConfig,
        topic: String,
        codec: Codec,
        shutdown: CancellationToken,
    ) {
        let Ok(Some(consumer)) = retry::until(
            "live events: creating a consumer",
            &shutdown,
            Duration::from_secs(1),
            |_| true,
            || std::future::ready(consumer(&kafka).map(Arc::new)),
        )
        .await
        else {
            return;
        };
        loop {
            // Nobody listens: read nothing until a subscription comes.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            let Ok(Some(mut position)) = retry::until(
                "live events: reading wa.events from its end",
                &shutdown,
                Duration::from_secs(1),
                |_| true,
                || at_end(&consumer, &topic),
            )
            .await
            else {
                return;
            };
            // They may have left before the feed was ready.
            let listening = {
                let subs = lock(&self.subscribers);
                self.reading.send_replace(!subs.is_empty());
                !subs.is_empty()
            };
            METRICS.reading.set(i64::from(listening));
            if listening {
                loop {
                    let m = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = consumer.recv() => m,
                    };
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "live events: read error");
                            continue;
                        }
                    };
                    {
                        let subs = lock(&self.subscribers);
                        if subs.is_empty() {
                            // Any later subscription waits for a fresh position.
                            self.reading.send_replace(false);
                            break;
                        }
                    }
                    let (partition, offset) = (m.partition(), m.offset());
                    position.insert(partition, offset + 1);
                    let Ok(event) = codec.decode::<Event>(m.payload().unwrap_or_default()).await
                    else {
                        continue;
                    };
                    self.dispatch(LiveEvent {
                        partition,
                        offset,
                        feed_position: position.clone(),
                        event,
                        rendered: OnceLock::new(),
                    });
                }
            }
            METRICS.reading.set(0);
            if let Err(e) = consumer.unassign() {
                tracing::warn!(error = %e, "live events: cannot stop reading");
            }
        }
    }
}

/// The feed's consumer, assigned nothing yet.
fn consumer(kafka: &KafkaConfig) -> anyhow::Result<StreamConsumer> {
    Ok(switchboard_runtime::kafka::consumer_config(kafka)
        // Required by the client; nothing is ever committed under it.
        .set("group.id", "switchboard-gateway-live")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "20")
        .create()?)
}

/// Assign `consumer` every partition of `topic` at its end as it stands now; returns
/// those positions.
async fn at_end(consumer: &Arc<StreamConsumer>, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let (c, topic_name) = (consumer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let md = c.fetch_metadata(Some(&topic_name), Duration::from_secs(5))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut position = BTreeMap::new();
        for t in md.topics() {
            for p in t.partitions() {
                let (_, high) = c.fetch_watermarks(&topic_name, p.id(), Duration::from_secs(5))?;
                tpl.add_partition_offset(&topic_name, p.id(), rdkafka::Offset::Offset(high))?;
                position.insert(p.id(), high);
            }
        }
        anyhow::ensure!(!position.is_empty(), "{topic_name} has no partitions");
        c.assign(&tpl)?;
        anyhow::Ok(position)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tenant: &str, offset: i64) -> LiveEvent {
        LiveEvent {
            partition: 0,
            offset,
            feed_position: BTreeMap::from([(0, offset + 1)]),
            event: Event {
                tenant_id: Some(tenant.into()),
                ..Event::default()
            },
            rendered: OnceLock::new(),
        }
    }

    #[tokio::test]
    async fn a_subscription_wakes_the_feed_and_is_ready_once_the_feed_reads() {
        let feed = LiveFeed::new(2, 2, Duration::from_secs(15), Duration::from_secs(30));
        let sub = feed.subscribe("a").unwrap();
        // The wake is kept until the feed waits for it.
        tokio::time::timeout(Duration::from_secs(1), feed.wake.notified())
            .await
            .expect("the feed is woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sub.ready())
                .await
                .is_err(),
            "not ready before the feed reads from a fresh position"
        );
        feed.reading.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), sub.ready())
            .await
            .expect("ready once it reads");
        // A subscription while the feed reads needs no wake.
        let _b = feed.subscribe("b").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), feed.wake.notified())
                .await
                .is_err(),
            "no wake while reading"
        );
    }

    #[test]
    fn a_tenant_gets_its_own_events_and_an_overflowing_subscription_is_cut_off_then_renewed() {
        let feed = LiveFeed::new(2, 2, Duration::from_secs(15), Duration::from_secs(30));
        let mut a = feed.subscribe("a").unwrap();
        let _a2 = feed.subscribe("a").unwrap();
        assert!(feed.subscribe("a").is_none(), "two per tenant");
        let mut b = feed.subscribe("b").unwrap();
        feed.dispatch(ev("a", 0));
        feed.dispatch(ev("b", 1));
        assert_eq!(a.events.try_recv().unwrap().offset, 0);
        assert!(a.events.try_recv().is_err(), "not b's");
        assert_eq!(b.events.try_recv().unwrap().offset, 1);
        // b reads nothing more: its third event finds the buffer of 2 full.
        for o in 2..5 {
            feed.dispatch(ev("b", o));
        }
        let mut got = Vec::new();
        while let Ok(e) = b.events.try_recv() {
            got.push(e.offset);
        }
        assert_eq!(got, vec![2, 3]);
        assert!(b.events.is_closed(), "cut off");
        feed.dispatch(ev("b", 5));
        assert!(b.events.try_recv().is_err(), "nothing while cut off");
        // It keeps its place under the cap, and renewing it lets events in again.
        let b2 = feed.subscribe("b");
        assert!(
            b2.is_some() && feed.subscribe("b").is_none(),
            "b still holds one of 2"
        );
        drop(b2);
        b.renew();
        feed.dispatch(ev("b", 6));
        assert_eq!(b.events.try_recv().unwrap().offset, 6);
        // A place frees when a subscription ends.
        drop(a);
        assert!(feed.subscribe("a").is_some());
    }
}
