//! Test harness: starts the real Switchboard binaries as child processes, each test in
//! its own world (topic prefix, PostgreSQL database, ClickHouse database, ports), against
//! the services `deploy/infra.sh up` runs on loopback. Binaries come from the same target
//! directory as the test executable (`deploy/test.sh` builds them first).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

pub mod bsp;
pub mod fanout;
pub mod send;
pub mod services;

/// Where the shared local services are (overridable like the binaries' own config).
pub struct Services {
    pub brokers: String,
    pub registry: String,
    /// A PostgreSQL URL whose role may CREATE DATABASE.
    pub pg_admin_url: String,
    pub clickhouse_url: String,
    /// The local CA and server certificate `deploy/infra.sh` makes (`ca.pem`,
    /// `server.pem`, `server.key`); PostgreSQL and ClickHouse (HTTPS :8443) serve it.
    pub tls_dir: PathBuf,
}

/// The PostgreSQL role that may only connect over TLS, and ClickHouse's password user
/// (`deploy/infra.sh`).
pub const TLS_USER: &str = "switchboard_tls";
pub const TLS_PASSWORD: &str = "switchboard-tls";

impl Services {
    pub fn from_env() -> Self {
        let get = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        Self {
            tls_dir: PathBuf::from(get("SWITCHBOARD_RUN", "/tmp/switchboard")).join("tls"),
            brokers: get("SWITCHBOARD_KAFKA_BROKERS", "127.0.0.1:9092"),
            registry: get("SWITCHBOARD_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
            pg_admin_url: get(
                "SWITCHBOARD_DATABASE_URL",
                "postgres://switchboard:switchboard@127.0.0.1:5432/switchboard",
            ),
            clickhouse_url: get("SWITCHBOARD_CLICKHOUSE_URL", "http://127.0.0.1:8123"),
        }
    }
}

pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("target dir");
    // A test runs from target/<profile>/deps/<test>, a harness binary (chaos) from
    // target/<profile>/<bin>: both want target/<profile>.
    if dir.join("gateway").exists() {
        dir.to_path_buf()
    } else {
        dir.parent().expect("target dir").to_path_buf()
    }
}

pub fn free_port() -> u16 {
    // The OS may hand the same just-released port to two callers (seen: a gateway and a
    // normalizer's ops address in one pipeline), so never give out a port twice.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One running binary that can be killed, stopped gracefully and started again with the
/// same environment.
pub struct Proc {
    pub name: &'static str,
    env: HashMap<String, String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(
        name: &'static str,
        env: HashMap<String, String>,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let mut p = Proc {
            name,
            env,
            child: None,
            log: log_dir.join(format!("{name}.log")),
        };
        p.start()?;
        Ok(p)
    }

    /// Another replica of this process, in the same consumer group: its own ops port,
    /// static-membership id (if this one has one) and log (`{name}-{n}.log`).
    pub fn replica(&self, n: usize) -> anyhow::Result<Self> {
        let mut env = self.env.clone();
        env.insert(
            "SWITCHBOARD_OPS_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        if let Some(id) = env.get_mut("SWITCHBOARD_GROUP_INSTANCE_ID") {
            id.push_str(&format!("-{n}"));
        }
        let log = self.log.with_file_name(format!("{}-{n}.log", self.name));
        let mut p = Proc {
            name: self.name,
            env,
            child: None,
            log,
        };
        p.start()?;
        Ok(p)
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin_dir().join(self.name))
            .envs(&self.env)
            .env("SWITCHBOARD_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} from {}", self.name, bin_dir().display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no chance to commit or flush anything.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): frozen mid-work, as in a long pause of the
    /// machine, with its connections and locks held.
    pub fn freeze(&self, on: bool) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .arg(if on { "-STOP" } else { "-CONT" })
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
                .await
                .context("graceful stop timed out")??;
            anyhow::ensure!(
                status.success(),
                "{} exited with {status} on SIGTERM",
                self.name
            );
        }
        Ok(())
    }

    pub fn env_var(&self, k: &str) -> Option<String> {
        self.env.get(k).cloned()
    }

    /// Change a setting for the next `start` (a restart with new configuration).
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.insert(k.to_string(), v.to_string());
    }

    /// Sum of a Prometheus counter on this process's ops endpoint (0 if unreachable).
    pub async fn metric(&self, name: &str) -> f64 {
        let Some(addr) = self
            .env
            .get("SWITCHBOARD_OPS_ADDR")
            .or_else(|| self.env.get("SWITCHBOARD_HTTP_ADDR"))
        else {
            return 0.0;
        };
        let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log)
            .map(|s| {
                s.lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// The whole ingest spine for one test.
pub struct Pipeline {
    pub id: String,
    pub gateway_url: String,
    /// The gateway's ops port (`/readyz`, `/metrics`).
    pub gateway_ops_url: String,
    pub meta_secret: String,
    pub dialog360_token: String,
    pub twilio_token: String,
    pub waha_key: String,
    pub pg: sqlx::PgPool,
    pub pg_url: String,
    pub ch_db: String,
    pub services: Services,
    pub topic_prefix: String,
    pub gateway: Proc,
    pub normalizer: Proc,
    pub pg_sink: Proc,
    pub ch_sink: Proc,
    /// The send path, when `Options::send_path` asked for it.
    pub send: Option<send::SendPath>,
    /// The fan-out, when `Options::fanout` asked for it.
    pub fanout_path: Option<fanout::FanoutPath>,
    pub http: reqwest::Client,
    pub log_dir: tempdir::Dir,
}

pub mod tempdir {
    /// A directory under the system temp dir, kept after the test for post-mortems.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> std::io::Result<Self> {
            let p = std::env::temp_dir().join("switchboard-e2e").join(name);
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }
    }
}

#[derive(Default, Clone)]
pub struct Options {
    /// Override service URLs per binary (outage tests point one sink at a private server).
    pub pg_url: Option<String>,
    pub clickhouse_url: Option<String>,
    pub brokers: Option<String>,
    /// Also run the router, with the BSP simulator as every BSP.
    pub send_path: bool,
    /// Extra router settings (retry budget, breaker, ...).
    pub router_env: Vec<(&'static str, String)>,
    /// Also run the fan-out (needs `send_path` for tenants and numbers), with the
    /// client-endpoint simulator as every receiver.
    pub fanout: bool,
    /// Extra fan-out settings.
    pub fanout_env: Vec<(&'static str, String)>,
    /// Extra gateway settings (they win over the harness's own).
    pub gateway_env: Vec<(&'static str, String)>,
    /// Extra normalizer settings.
    pub normalizer_env: Vec<(&'static str, String)>,
    /// The sinks connect over TLS: the pg-sink with `sslmode=verify-full` against the
    /// local CA, the ch-sink over HTTPS as ClickHouse's password user.
    pub tls: bool,
}

impl Pipeline {
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let services = Services::from_env();
        let id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let log_dir = tempdir::Dir::new(&id)?;
        let topic_prefix = format!("{id}.");
        let brokers = opts
            .brokers
            .clone()
            .unwrap_or_else(|| services.brokers.clone());

        let kafka = switchboard_runtime::config::KafkaConfig {
            kafka_brokers: brokers.clone(),
            topic_prefix: topic_prefix.clone(),
            schema_registry_url: services.registry.clone(),
            ..Default::default()
        };
        let topics = switchboard_runtime::kafka::Topics::new(&topic_prefix).with_partitions(6);
        switchboard_runtime::kafka::ensure_topics(&kafka, &topics).await?;

        let pg_url = match &opts.pg_url {
            Some(u) => u.clone(),
            None => {
                let admin = sqlx::PgPool::connect(&services.pg_admin_url)
                    .await
                    .context("connecting to PostgreSQL (is deploy/infra.sh up?)")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {id}")))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                replace_db(&services.pg_admin_url, &id)
            }
        };
        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(&pg_url)?;
        let ch_url = opts
            .clickhouse_url
            .clone()
            .unwrap_or_else(|| services.clickhouse_url.clone());

        let gw_port = free_port();
        let gw_ops_port = free_port();
        let admin_key = format!("admin-{id}");
        let keyring = switchboard_runtime::secrets::Keyring::generate("k1");
        let meta_secret = format!("meta-secret-{id}");
        let dialog360_token = format!("d360-{id}");
        let twilio_token = format!("twilio-{id}");
        let waha_key = format!("waha-{id}");
        let common = |extra: &[(&str, String)]| {
            let mut env: HashMap<String, String> = HashMap::new();
            env.insert("SWITCHBOARD_KAFKA_BROKERS".into(), brokers.clone());
            env.insert("SWITCHBOARD_TOPIC_PREFIX".into(), topic_prefix.clone());
            env.insert(
                "SWITCHBOARD_SCHEMA_REGISTRY_URL".into(),
                services.registry.clone(),
            );
            env.insert("SWITCHBOARD_BATCH_LINGER".into(), "20ms".into());
            env.insert("RUST_LOG".into(), "info,rdkafka=warn".into());
            for (k, v) in extra {
                env.insert((*k).to_string(), v.clone());
            }
            env
        };
        // Inbound media, kept per test: the gateway serves what the router stored.
        let media_store = format!("file://{}/media", log_dir.0.display());
        let gateway = Proc::spawn(
            "gateway",
            common(&[
                ("SWITCHBOARD_MEDIA_STORE", media_store.clone()),
                ("SWITCHBOARD_HTTP_ADDR", format!("127.0.0.1:{gw_port}")),
                ("SWITCHBOARD_OPS_ADDR", format!("127.0.0.1:{gw_ops_port}")),
                ("SWITCHBOARD_META_APP_SECRET", meta_secret.clone()),
                ("SWITCHBOARD_META_VERIFY_TOKEN", format!("verify-{id}")),
                ("SWITCHBOARD_DIALOG360_TOKEN", dialog360_token.clone()),
                ("SWITCHBOARD_TWILIO_AUTH_TOKEN", twilio_token.clone()),
                ("SWITCHBOARD_GUPSHUP_TOKEN", format!("gupshup-{id}")),
                (
                    "SWITCHBOARD_AISENSY_WEBHOOK_SECRET",
                    format!("aisensy-{id}"),
                ),
                ("SWITCHBOARD_KARIX_TOKEN", format!("karix-{id}")),
                ("SWITCHBOARD_WAHA_HMAC_KEY", waha_key.clone()),
                (
                    "SWITCHBOARD_PUBLIC_URL",
                    format!("http://127.0.0.1:{gw_port}"),
                ),
                ("SWITCHBOARD_MAX_BODY_BYTES", "65536".into()),
                ("SWITCHBOARD_PRODUCE_TIMEOUT", "3s".into()),
                ("SWITCHBOARD_PRODUCER_REBUILD_AFTER", "5s".into()),
                ("SWITCHBOARD_DATABASE_URL", pg_url.clone()),
                ("SWITCHBOARD_ADMIN_API_KEY", admin_key.clone()),
                ("SWITCHBOARD_CREDENTIALS_KEYS", keyring.clone()),
                ("SWITCHBOARD_ENDPOINT_ALLOW_NETS", "127.0.0.0/8".into()),
                ("SWITCHBOARD_CLICKHOUSE_URL", ch_url.clone()),
                ("SWITCHBOARD_CLICKHOUSE_DATABASE", id.clone()),
                ("SWITCHBOARD_RETRY_SCHEDULE", fanout::TEST_SCHEDULE.into()),
            ])
            .into_iter()
            .chain(
                opts.gateway_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone())),
            )
            .collect(),
            &log_dir.0,
        )?;
        let normalizer = Proc::spawn(
            "normalizer",
            common(&[
                ("SWITCHBOARD_DATABASE_URL", pg_url.clone()),
                ("SWITCHBOARD_GROUP_ID", format!("{id}-normalizer")),
                ("SWITCHBOARD_OPS_ADDR", format!("127.0.0.1:{}", free_port())),
                // The BSP fixtures are documentation payloads dated 2020-2025: wider than
                // the default window around receipt (the poison tests use the default).
                ("SWITCHBOARD_EVENT_TIME_MAX_AGE", "3650days".into()),
            ])
            .into_iter()
            .chain(
                opts.normalizer_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone())),
            )
            .collect(),
            &log_dir.0,
        )?;
        let ca = services.tls_dir.join("ca.pem").display().to_string();
        let (sink_pg_url, sink_ch_url) = if opts.tls {
            let sep = if pg_url.contains('?') { '&' } else { '?' };
            (
                format!("{pg_url}{sep}sslmode=verify-full&sslrootcert={ca}"),
                format!("https://{TLS_USER}:{TLS_PASSWORD}@127.0.0.1:8443"),
            )
        } else {
            (pg_url.clone(), ch_url.clone())
        };
        let pg_sink = Proc::spawn(
            "pg-sink",
            common(&[
                ("SWITCHBOARD_DATABASE_URL", sink_pg_url),
                ("SWITCHBOARD_GROUP_ID", format!("{id}-pg-sink")),
                ("SWITCHBOARD_OPS_ADDR", format!("127.0.0.1:{}", free_port())),
            ]),
            &log_dir.0,
        )?;
        let ch_sink = Proc::spawn(
            "ch-sink",
            common(&[
                ("SWITCHBOARD_CLICKHOUSE_URL", sink_ch_url),
                ("SSL_CERT_FILE", ca.clone()),
                ("SWITCHBOARD_CLICKHOUSE_DATABASE", id.clone()),
                ("SWITCHBOARD_GROUP_ID", format!("{id}-ch-sink")),
                ("SWITCHBOARD_OPS_ADDR", format!("127.0.0.1:{}", free_port())),
            ]),
            &log_dir.0,
        )?;
        let gateway_url = format!("http://127.0.0.1:{gw_port}");
        let send = if opts.send_path {
            let mut env = common(&[
                ("SWITCHBOARD_DATABASE_URL", pg_url.clone()),
                ("SWITCHBOARD_GROUP_ID", format!("{id}-router")),
                ("SWITCHBOARD_GROUP_INSTANCE_ID", format!("{id}-router-0")),
                ("SWITCHBOARD_OPS_ADDR", format!("127.0.0.1:{}", free_port())),
                ("SWITCHBOARD_CREDENTIALS_KEYS", keyring.clone()),
                // Most tests send many messages to one customer to test the send path
                // itself; the pacing tests turn per-customer pacing on.
                ("SWITCHBOARD_PAIR_INTERVAL", "0s".into()),
                ("SWITCHBOARD_MEDIA_STORE", media_store.clone()),
            ]);
            for (k, v) in &opts.router_env {
                env.insert((*k).to_string(), v.clone());
            }
            Some(
                send::SendPath::start(
                    &id,
                    &gateway_url,
                    admin_key.clone(),
                    &meta_secret,
                    &dialog360_token,
                    &twilio_token,
                    &waha_key,
                    env,
                    &log_dir.0,
                )
                .await?,
            )
        } else {
            None
        };
        let fanout_path = if opts.fanout {
            let mut env = common(&[
                ("SWITCHBOARD_DATABASE_URL", pg_url.clone()),
                ("SWITCHBOARD_GROUP_ID", format!("{id}-fanout")),
                ("SWITCHBOARD_GROUP_INSTANCE_ID", format!("{id}-fanout-0")),
                ("SWITCHBOARD_OPS_ADDR", format!("127.0.0.1:{}", free_port())),
                ("SWITCHBOARD_CREDENTIALS_KEYS", keyring.clone()),
                ("SWITCHBOARD_ENDPOINT_ALLOW_NETS", "127.0.0.0/8".into()),
                ("SWITCHBOARD_RETRY_SCHEDULE", fanout::TEST_SCHEDULE.into()),
                ("SWITCHBOARD_DELIVERY_TIMEOUT", "3s".into()),
                ("SWITCHBOARD_BREAKER_OPEN_FOR", "1s".into()),
            ]);
            for (k, v) in &opts.fanout_env {
                env.insert((*k).to_string(), v.clone());
            }
            Some(fanout::FanoutPath::start(env, &log_dir.0).await?)
        } else {
            None
        };
        let p = Pipeline {
            fanout_path,
            send,
            gateway_url,
            gateway_ops_url: format!("http://127.0.0.1:{gw_ops_port}"),
            meta_secret,
            dialog360_token,
            twilio_token,
            waha_key,
            pg,
            pg_url,
            ch_db: id.clone(),
            id,
            topic_prefix,
            gateway,
            normalizer,
            pg_sink,
            ch_sink,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            services,
            log_dir,
        };
        let ready = format!("{}/readyz", p.gateway_ops_url);
        let http = p.http.clone();
        wait_until("gateway ready", Duration::from_secs(30), || {
            let http = http.clone();
            let ready = ready.clone();
            async move {
                Ok(http
                    .get(&ready)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false))
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n--- gateway log ---\n{}", p.gateway.log_tail()))?;
        if p.send.is_some() {
            p.wait_send_path_ready().await?;
        }
        if p.fanout_path.is_some() {
            p.wait_fanout_ready().await?;
        }
        Ok(p)
    }

    /// The API is up (database migrated, config loaded) and the router is ready.
    pub async fn wait_send_path_ready(&self) -> anyhow::Result<()> {
        let admin = self.send_path().admin_key.clone();
        wait_until("send API ready", Duration::from_secs(60), || async {
            let a = self
                .call(
                    reqwest::Method::GET,
                    "/admin/tenants/none",
                    &admin,
                    None,
                    &[],
                )
                .await
                .map(|r| r.0)
                .unwrap_or(0);
            let b = self
                .call(reqwest::Method::GET, "/v1/messages", "sb_bogus", None, &[])
                .await
                .map(|r| r.0)
                .unwrap_or(0);
            Ok(a == 404 && b == 401)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))?;
        self.wait_ready(&self.send_path().router).await
    }

    /// Wait until `proc`'s `/readyz` (on its ops address) answers 2xx.
    pub async fn wait_ready(&self, proc: &Proc) -> anyhow::Result<()> {
        let ops = proc.env_var("SWITCHBOARD_OPS_ADDR").unwrap_or_default();
        wait_until(
            &format!("{} ready", proc.name),
            Duration::from_secs(60),
            || async {
                Ok(self
                    .http
                    .get(format!("http://{ops}/readyz"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    /// POST a Meta webhook signed with the right secret.
    pub async fn post_meta(&self, body: &[u8]) -> anyhow::Result<reqwest::Response> {
        let sig = switchboard_connectors::meta::signature::sign(&self.meta_secret, body);
        Ok(self
            .http
            .post(format!("{}/webhooks/meta", self.gateway_url))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body.to_vec())
            .send()
            .await?)
    }

    /// POST a webhook the way `bsp` sends it: its content type and its signature.
    pub async fn post_bsp(&self, bsp: &str, body: &[u8]) -> anyhow::Result<reqwest::Response> {
        use switchboard_connectors::{meta, twilio, waha};
        let path = format!("/webhooks/{bsp}");
        let mut req = self.http.post(format!("{}{path}", self.gateway_url));
        req = match bsp {
            "meta" => req.header("content-type", "application/json").header(
                meta::signature::HEADER,
                meta::signature::sign(&self.meta_secret, body),
            ),
            "360dialog" => req
                .header("content-type", "application/json")
                .header("x-switchboard-token", &self.dialog360_token),
            "aisensy" => req.header("content-type", "application/json").header(
                switchboard_connectors::aisensy::signature::HEADER,
                switchboard_connectors::aisensy::signature::sign(
                    &format!("aisensy-{}", self.id),
                    body,
                ),
            ),
            "karix" => req
                .header("content-type", "application/json")
                .header("x-switchboard-token", format!("karix-{}", self.id)),
            "gupshup" => req
                .header("content-type", "application/json")
                .header("x-switchboard-token", format!("gupshup-{}", self.id)),
            "twilio" => req
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    twilio::signature::HEADER,
                    twilio::signature::sign(
                        &self.twilio_token,
                        &format!("{}{path}", self.gateway_url),
                        body,
                    ),
                ),
            "waha" => req
                .header("content-type", "application/json")
                .header(
                    waha::signature::HEADER,
                    waha::signature::sign(&self.waha_key, body),
                )
                .header(waha::signature::ALGORITHM_HEADER, "sha512"),
            other => anyhow::bail!("no signer for {other}"),
        };
        Ok(req.body(body.to_vec()).send().await?)
    }

    /// POST until the gateway answers 200, retrying 503s as a BSP would.
    pub async fn post_meta_until_accepted(&self, body: &[u8]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.post_meta(body).await {
                Ok(r) if r.status() == 200 => return Ok(()),
                Ok(r) if r.status() == 503 => {}
                Ok(r) => anyhow::bail!(
                    "gateway answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(_) => {}
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "webhook not accepted within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A client for long-lived responses (event streams): no overall timeout.
    pub fn http_stream(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a plain client builds")
    }

    pub async fn pg_count(&self, sql: &str) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pg)
            .await?;
        Ok(n)
    }

    /// Run a ClickHouse query in this test's database and return the TSV answer.
    pub async fn ch(&self, sql: &str) -> anyhow::Result<String> {
        ch_query(&self.http, &self.services.clickhouse_url, &self.ch_db, sql).await
    }

    pub async fn ch_count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(self.ch(sql).await?.trim().parse()?)
    }

    /// Wait until PostgreSQL and ClickHouse both hold `n` status events, then some more
    /// time to be sure no extra ones come in.
    pub async fn wait_for_status_events(&self, n: i64, within: Duration) -> anyhow::Result<()> {
        wait_until("status history in PostgreSQL", within, || async {
            Ok(self
                .pg_count("SELECT count(*) FROM message_status_history")
                .await
                .unwrap_or(-1)
                >= n)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))?;
        wait_until("status events in ClickHouse", within, || async {
            Ok(self
                .ch_count("SELECT count() FROM events WHERE event_type = 'message.status'")
                .await
                .unwrap_or(-1)
                >= n)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        let mut procs = vec![
            &self.gateway,
            &self.normalizer,
            &self.pg_sink,
            &self.ch_sink,
        ];
        if let Some(s) = &self.send {
            procs.push(&s.router);
        }
        if let Some(f) = &self.fanout_path {
            procs.push(&f.proc);
        }
        procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Read every record of a topic (from the beginning) until `n` arrived or `within`.
    pub async fn read_topic(
        &self,
        topic_suffix: &str,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<(Option<String>, Vec<u8>)>> {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::message::Message;
        let topic = format!("{}{topic_suffix}", self.topic_prefix);
        let c: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.services.brokers)
            .set(
                "group.id",
                format!("{}-reader-{}", self.id, uuid::Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        c.subscribe(&[&topic])?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, c.recv()).await {
                Err(_) => break,
                Ok(Ok(m)) => out.push((
                    m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    m.payload().unwrap_or_default().to_vec(),
                )),
                Ok(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            }
        }
        Ok(out)
    }
}

impl Pipeline {
    /// The settings an operator's `switchboard` (or a `replayer`) needs for this world.
    pub fn operator_env(&self) -> HashMap<String, String> {
        let mut env = HashMap::new();
        for (k, v) in [
            ("SWITCHBOARD_KAFKA_BROKERS", self.services.brokers.clone()),
            ("SWITCHBOARD_TOPIC_PREFIX", self.topic_prefix.clone()),
            (
                "SWITCHBOARD_SCHEMA_REGISTRY_URL",
                self.services.registry.clone(),
            ),
            ("SWITCHBOARD_DATABASE_URL", self.pg_url.clone()),
            (
                "SWITCHBOARD_CLICKHOUSE_URL",
                self.services.clickhouse_url.clone(),
            ),
            ("SWITCHBOARD_CLICKHOUSE_DATABASE", self.ch_db.clone()),
            (
                "SWITCHBOARD_RETRY_SCHEDULE",
                fanout::TEST_SCHEDULE.to_string(),
            ),
            ("SWITCHBOARD_LOG_FORMAT", "text".to_string()),
            ("RUST_LOG", "warn".to_string()),
        ] {
            env.insert(k.to_string(), v);
        }
        env
    }

    /// Run `switchboard ARGS` to its end: (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        self.cli_with(args, &[]).await
    }

    /// `switchboard ARGS` with extra settings.
    pub async fn cli_with(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(i32, String, String)> {
        let out = self.cli_command(args, extra).output().await?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `switchboard ARGS` as a child process (to kill it midway).
    pub fn cli_command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut c = Command::new(bin_dir().join("switchboard"));
        c.args(args)
            .envs(self.operator_env())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Produce one record to this test's `topic_suffix` as a foreign producer would.
    pub async fn produce_raw(
        &self,
        topic_suffix: &str,
        key: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let kafka = switchboard_runtime::config::KafkaConfig {
            kafka_brokers: self.services.brokers.clone(),
            ..Default::default()
        };
        let producer =
            switchboard_runtime::producer::ProducerSlot::new(&kafka, Duration::from_secs(10))?;
        switchboard_runtime::kafka::produce_all(
            &producer,
            &[switchboard_runtime::kafka::OutRecord {
                topic: format!("{}{topic_suffix}", self.topic_prefix),
                key: key.to_string(),
                payload: payload.to_vec(),
                headers: vec![],
            }],
        )
        .await?;
        Ok(())
    }

    /// The dead letters on `topic_suffix`, once at least `n` are there (or `within`).
    pub async fn dead_letters(
        &self,
        topic_suffix: &str,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<switchboard_schemas::DeadLetter>> {
        let codec = switchboard_schemas::Codec::new(&self.services.registry);
        let mut out = Vec::new();
        for (_, payload) in self.read_topic(topic_suffix, n, within).await? {
            out.push(codec.decode(&payload).await?);
        }
        Ok(out)
    }

    /// Records on `topic_suffix`: the sum of its partitions' high watermarks.
    pub async fn topic_records(&self, topic_suffix: &str) -> anyhow::Result<i64> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let topic = format!("{}{topic_suffix}", self.topic_prefix);
        let brokers = self.services.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()?;
            let md = c.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            let mut sum = 0;
            for t in md.topics() {
                for part in t.partitions() {
                    let (_, high) =
                        c.fetch_watermarks(&topic, part.id(), Duration::from_secs(5))?;
                    sum += high;
                }
            }
            Ok(sum)
        })
        .await?
    }
}

pub async fn ch_query(
    http: &reqwest::Client,
    url: &str,
    db: &str,
    sql: &str,
) -> anyhow::Result<String> {
    let r = http
        .post(format!("{url}/?database={db}"))
        .body(sql.to_string())
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.is_success(), "ClickHouse: {status}: {text}");
    Ok(text)
}

/// `url` with its database replaced by `db`.
pub fn replace_db(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => url.to_string(),
    }
}

/// Poll `check` every 100 ms until it returns true or `within` has passed.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
