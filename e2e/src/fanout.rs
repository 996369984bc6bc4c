//! The fan-out in tests: the fanout binary as a process, the client-endpoint simulator in
//! the test process (real HTTP on loopback), and helpers for the endpoints API and for
//! producing events through the real ingest path.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_loadtest::endpoint_sim::EndpointSim;

use crate::send::TestTenant;
use crate::{free_port, wait_until, Pipeline, Proc};

/// The retry schedule the tests run with (shortened through config).
pub const TEST_SCHEDULE: &str = "1s,2s,3s";

pub struct FanoutPath {
    pub proc: Proc,
    pub sim: EndpointSim,
    pub sim_url: String,
    _sim_task: tokio::task::JoinHandle<()>,
}

impl FanoutPath {
    pub async fn start(
        env: HashMap<String, String>,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let sim = EndpointSim::new();
        let (addr, task) = sim.serve(&format!("127.0.0.1:{}", free_port())).await?;
        let proc = Proc::spawn("fanout", env, log_dir)?;
        Ok(FanoutPath {
            proc,
            sim,
            sim_url: format!("http://{addr}"),
            _sim_task: task,
        })
    }
}

impl Pipeline {
    pub fn fanout(&self) -> &FanoutPath {
        self.fanout_path
            .as_ref()
            .expect("started with Options::fanout")
    }

    pub fn endpoint_sim(&self) -> &EndpointSim {
        &self.fanout().sim
    }

    /// The URL of the simulated receiver `name`.
    pub fn receiver(&self, name: &str) -> String {
        format!("{}/e/{name}", self.fanout().sim_url)
    }

    /// Create an endpoint; returns (id, secret). The simulator learns the secret.
    pub async fn endpoint(
        &self,
        t: &TestTenant,
        name: &str,
        mut body: Value,
    ) -> anyhow::Result<(String, String)> {
        body["url"] = json!(self.receiver(name));
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/endpoints",
                &t.key,
                Some(body),
                &[],
            )
            .await?;
        anyhow::ensure!(status == 201, "create endpoint: {status} {v}");
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let secret = v["secret"].as_str().unwrap_or_default().to_string();
        self.endpoint_sim()
            .set(name, Some(vec![secret.clone()]), None)?;
        Ok((id, secret))
    }

    /// The fan-out answers `/readyz` (its config copy is loaded).
    pub async fn wait_fanout_ready(&self) -> anyhow::Result<()> {
        self.wait_ready(&self.fanout().proc).await
    }

    /// Post `n` status webhooks (Meta format) for `number` over `conversations`
    /// customers, in order per conversation: sent, delivered, read per message. Returns
    /// how many events that makes.
    pub async fn post_statuses(
        &self,
        number: &str,
        conversations: usize,
        messages: usize,
    ) -> anyhow::Result<usize> {
        let ts = chrono::Utc::now().timestamp();
        let mut n = 0;
        for m in 0..messages {
            for (i, status) in ["sent", "delivered", "read"].iter().enumerate() {
                let posts = (0..conversations).map(|c| {
                    let body = crate::bsp::meta_status(
                        number,
                        &format!("+9198{c:08}"),
                        &format!(
                            "wamid.{}.{}.{c}.{m}",
                            self.id,
                            number.trim_start_matches('+')
                        ),
                        status,
                        ts + (m * 3 + i) as i64,
                    );
                    async move { self.post_meta_until_accepted(&body).await }
                });
                for r in futures::future::join_all(posts).await {
                    r?;
                }
                n += conversations;
            }
        }
        Ok(n)
    }

    /// Wait until every receiver in `names` has answered 2xx for `n` distinct events.
    pub async fn wait_delivered(
        &self,
        names: &[&str],
        n: u64,
        within: Duration,
    ) -> anyhow::Result<()> {
        wait_until(
            &format!("{n} events delivered to {names:?}"),
            within,
            || async {
                Ok(names
                    .iter()
                    .all(|name| self.endpoint_sim().stats_of(name).unique_ok >= n))
            },
        )
        .await
        .map_err(|e| {
            let stats: Vec<String> = names
                .iter()
                .map(|n| format!("{n}: {:?}", self.endpoint_sim().stats_of(n)))
                .collect();
            anyhow::anyhow!("{e}\n{}\n{}", stats.join("\n"), self.logs())
        })
    }

    /// Records of `wa.events` the fan-out's group has not committed (summed over
    /// partitions): after a crash, exactly these are handled again.
    pub fn fanout_uncommitted(&self) -> anyhow::Result<i64> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let group = self
            .fanout()
            .proc
            .env_var("SWITCHBOARD_GROUP_ID")
            .unwrap_or_default();
        let topic = format!("{}wa.events", self.topic_prefix);
        // Only asks the group coordinator; it does not join the group.
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.services.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for part in md.topics().iter().flat_map(|t| t.partitions()) {
            tpl.add_partition(&topic, part.id());
        }
        let mut behind = 0;
        for el in c.committed_offsets(tpl, Duration::from_secs(5))?.elements() {
            let (low, high) = c.fetch_watermarks(&topic, el.partition(), Duration::from_secs(5))?;
            let at = match el.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => low,
            };
            behind += (high - at).max(0);
        }
        Ok(behind)
    }

    /// Verify the last requests `name` received with the official Standard Webhooks
    /// Python library (an implementation independent of ours); with `secret`. Returns
    /// (verified, checked).
    pub fn verify_with_python(&self, name: &str, secret: &str) -> anyhow::Result<(usize, usize)> {
        let raw = self.endpoint_sim().raw(name);
        let input = serde_json::to_vec(&json!({"secret": secret, "requests": raw}))?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/verify_standard_webhooks.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(&input)?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "python verifier failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok((
            v["verified"].as_u64().unwrap_or(0) as usize,
            v["checked"].as_u64().unwrap_or(0) as usize,
        ))
    }
}
