//! The send path in tests: the router as a process, the BSP simulator in the test
//! process (a real HTTP server on loopback that the test can steer and inspect), and
//! helpers for the admin and send APIs.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_loadtest::bsp_sim::{Behavior, Call, Sim, SimSecrets};

use crate::{free_port, wait_until, Pipeline, Proc};

pub struct SendPath {
    pub sim: Sim,
    pub sim_url: String,
    pub admin_key: String,
    pub router: Proc,
    pub secrets: SimSecrets,
    _sim_task: tokio::task::JoinHandle<()>,
}

/// A tenant made for a test: its id and API key.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

impl SendPath {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        id: &str,
        gateway_url: &str,
        admin_key: String,
        meta_secret: &str,
        dialog360_token: &str,
        twilio_token: &str,
        waha_key: &str,
        mut router_env: HashMap<String, String>,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let secrets = SimSecrets {
            meta_app_secret: meta_secret.into(),
            meta_access_token: format!("meta-token-{id}"),
            dialog360_api_key: format!("d360-key-{id}"),
            dialog360_webhook_token: dialog360_token.into(),
            aisensy_api_pwd: format!("aisensy-pwd-{id}"),
            aisensy_webhook_secret: format!("aisensy-{id}"),
            gupshup_api_key: format!("gupshup-key-{id}"),
            gupshup_webhook_token: format!("gupshup-{id}"),
            twilio_auth_token: twilio_token.into(),
            waha_api_key: format!("waha-api-{id}"),
            waha_hmac_key: waha_key.into(),
            karix_api_key: format!("karix-key-{id}"),
            karix_webhook_token: format!("karix-{id}"),
        };
        let sim = Sim::new(secrets.clone(), gateway_url, Behavior::default());
        let (addr, task) = sim.serve(&format!("127.0.0.1:{}", free_port())).await?;
        let sim_url = format!("http://{addr}");
        for (k, v) in [
            ("SWITCHBOARD_META_API_URL", format!("{sim_url}/v21.0")),
            ("SWITCHBOARD_DIALOG360_API_URL", sim_url.clone()),
            ("SWITCHBOARD_GUPSHUP_API_URL", sim_url.clone()),
            ("SWITCHBOARD_TWILIO_API_URL", sim_url.clone()),
            ("SWITCHBOARD_WAHA_API_URL", sim_url.clone()),
            ("SWITCHBOARD_AISENSY_API_URL", sim_url.clone()),
            ("SWITCHBOARD_KARIX_API_URL", sim_url.clone()),
            // Media URLs in webhooks point at the simulator's CDN on loopback.
            ("SWITCHBOARD_MEDIA_ALLOW_NETS", "127.0.0.0/8".into()),
        ] {
            router_env.entry(k.into()).or_insert(v);
        }
        let router = Proc::spawn("router", router_env, log_dir)?;
        Ok(SendPath {
            sim,
            sim_url,
            admin_key,
            router,
            secrets,
            _sim_task: task,
        })
    }

    /// The credentials the simulator accepts for `bsp`, as the admin API stores them.
    pub fn credentials(&self, bsp: &str) -> Value {
        switchboard_loadtest::sends::sim_credentials(&self.secrets, bsp)
    }
}

impl Pipeline {
    pub fn send_path(&self) -> &SendPath {
        self.send.as_ref().expect("started with Options::send_path")
    }

    /// Restart the gateway (gracefully) and the router (gracefully, or with `kill -9`),
    /// then wait until the send path is ready again.
    pub async fn restart_send_path(&mut self, kill_router: bool) -> anyhow::Result<()> {
        self.gateway.stop().await?;
        self.gateway.start()?;
        let router = &mut self.send.as_mut().expect("send path").router;
        if kill_router {
            router.kill9().await;
        } else {
            router.stop().await?;
        }
        router.start()?;
        self.wait_send_path_ready().await
    }

    /// Wait until the router's group has committed every record of `wa.send.requests`:
    /// nothing it was given is still to be handled.
    pub async fn wait_router_caught_up(&self, within: Duration) -> anyhow::Result<()> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let group = self
            .send_path()
            .router
            .env_var("SWITCHBOARD_GROUP_ID")
            .unwrap_or_default();
        let topic = format!("{}wa.send.requests", self.topic_prefix);
        // Only asks the group coordinator; it does not join the group.
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.services.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        wait_until("the router to commit every send request", within, || {
            let (c, topic) = (&c, topic.clone());
            async move {
                let md = c.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
                let mut tpl = rdkafka::TopicPartitionList::new();
                for part in md.topics().iter().flat_map(|t| t.partitions()) {
                    tpl.add_partition(&topic, part.id());
                }
                let committed = c.committed_offsets(tpl, Duration::from_secs(5))?;
                for el in committed.elements() {
                    let (_, high) =
                        c.fetch_watermarks(&topic, el.partition(), Duration::from_secs(5))?;
                    let at = match el.offset() {
                        rdkafka::Offset::Offset(o) => o,
                        _ => 0,
                    };
                    if at < high {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        })
        .await
    }

    pub fn sim(&self) -> &Sim {
        &self.send_path().sim
    }

    /// Call the API with a bearer key; (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let api = switchboard_loadtest::sends::Api {
            http: self.http.clone(),
            gateway: self.gateway_url.clone(),
        };
        api.call(method, path, key, body, headers).await
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let key = self.send_path().admin_key.clone();
        let (status, v) = self.call(method.clone(), path, &key, body, &[]).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "admin {method} {path}: {status} {v}"
        );
        Ok(v)
    }

    /// A tenant with an API key. It does not enforce the customer-service window: these
    /// tests send free-form messages to customers who never wrote (the conversations
    /// tests turn it on).
    pub async fn tenant(&self, name: &str) -> anyhow::Result<TestTenant> {
        let t = self
            .admin(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(
                    json!({"name": name, "api_rate_per_sec": 100000, "enforce_service_window": false}),
                ),
            )
            .await?;
        let id = t["id"].as_str().unwrap_or_default().to_string();
        let k = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/tenants/{id}/api-keys"),
                Some(json!({"name": "test"})),
            )
            .await?;
        Ok(TestTenant {
            id,
            key: k["key"].as_str().unwrap_or_default().to_string(),
            key_id: k["id"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Give the tenant a number on `bsp` (credentials included).
    pub async fn number(
        &self,
        t: &TestTenant,
        number: &str,
        bsp: &str,
        account: &str,
        tier: u32,
        failover: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        let mut body = json!({"bsp": bsp, "bsp_account_id": account, "tier_mps": tier});
        if let Some((fb, acc)) = failover {
            body["failover_bsp"] = json!(fb);
            body["failover_account_id"] = json!(acc);
            self.admin(
                reqwest::Method::PUT,
                &format!("/admin/tenants/{}/credentials/{fb}", t.id),
                Some(self.send_path().credentials(fb)),
            )
            .await?;
        }
        self.admin(
            reqwest::Method::PUT,
            &format!("/admin/tenants/{}/credentials/{bsp}", t.id),
            Some(self.send_path().credentials(bsp)),
        )
        .await?;
        self.admin(
            reqwest::Method::PUT,
            &format!(
                "/admin/tenants/{}/numbers/{}",
                t.id,
                number.replace('+', "%2B")
            ),
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// POST /v1/messages with a text body.
    pub async fn send_text(
        &self,
        t: &TestTenant,
        from: &str,
        to: &str,
        text: &str,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            "/v1/messages",
            &t.key,
            Some(json!({"from": from, "to": to, "type": "text", "text": {"body": text}})),
            &[],
        )
        .await
    }

    pub async fn message(&self, t: &TestTenant, id: &str) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/messages/{id}"),
            &t.key,
            None,
            &[],
        )
        .await
    }

    /// Wait until every message of `ids` reached a final send state; returns their rows.
    pub async fn wait_final(
        &self,
        ids: &[String],
        within: Duration,
    ) -> anyhow::Result<HashMap<String, String>> {
        let waited = wait_until("sends to reach a final state", within, || async {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM outbound_messages WHERE message_id = ANY($1)
                   AND state IN ('accepted', 'failed', 'unknown', 'cancelled')",
            )
            .bind(ids)
            .fetch_one(&self.pg)
            .await?;
            Ok(n as usize == ids.len())
        })
        .await;
        if let Err(e) = waited {
            // Which sends are stuck, and where: the state machine's view of them.
            let stuck: Vec<(String, bool, i64, String, String)> = sqlx::query_as(
                "SELECT state, published, count(*), min(updated_at)::text, max(updated_at)::text
                   FROM outbound_messages WHERE message_id = ANY($1)
                    AND state NOT IN ('accepted', 'failed', 'unknown', 'cancelled')
                  GROUP BY 1, 2",
            )
            .bind(ids)
            .fetch_all(&self.pg)
            .await
            .unwrap_or_default();
            anyhow::bail!(
                "{e}\nnot final (state, published, count, updated from, to): {stuck:?}\n{}",
                self.logs()
            );
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT message_id, state FROM outbound_messages WHERE message_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pg)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Simulator calls per text (tests make each message's text unique).
    pub fn calls_by_text(&self) -> HashMap<String, Vec<Call>> {
        let mut m: HashMap<String, Vec<Call>> = HashMap::new();
        for c in self.sim().calls() {
            m.entry(c.text.clone()).or_default().push(c);
        }
        m
    }
}
