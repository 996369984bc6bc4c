//! Connections to services that require TLS, against real servers on loopback: Nisshi with
//! a TLS-only listener, PostgreSQL refusing a role without TLS, ClickHouse over HTTPS with
//! a password (`deploy/infra.sh` gives both a certificate from a local CA).
//!
//! SASL/SCRAM runs against a Nisshi on postgres storage, where it keeps SCRAM users.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::util::Timeout;
use switchboard_e2e::services::PrivateBroker;
use switchboard_e2e::{wait_until, Options, Pipeline, Services, TLS_PASSWORD, TLS_USER};
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::kafka::{self, OutRecord, TopicSpec};

fn openssl(dir: &Path, args: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(format!("openssl {args}"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA named `name` in `dir`: `{name}.pem`, `{name}.key`.
fn ca(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    openssl(
        dir,
        &format!("req -x509 -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.pem -days 1 -subj /CN={name}"),
    )?;
    Ok(dir.join(format!("{name}.pem")))
}

/// A server certificate `{name}.pem`/`{name}.key` for `san`, signed by CA `ca_name`.
fn server_cert(
    dir: &Path,
    ca_name: &str,
    name: &str,
    san: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    openssl(
        dir,
        &format!("req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"),
    )?;
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\n"),
    )?;
    openssl(
        dir,
        &format!("x509 -req -in {name}.csr -CA {ca_name}.pem -CAkey {ca_name}.key -CAcreateserial -out {name}.pem -days 1 -extfile {name}.ext"),
    )?;
    Ok((
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    ))
}

/// Create `topic`, produce a record to it and read it back, with these settings.
async fn round_trip(cfg: &KafkaConfig, topic: &str) -> anyhow::Result<()> {
    kafka::ensure_topics(
        cfg,
        &[TopicSpec {
            name: topic.to_string(),
            partitions: 1,
            compacted: false,
        }],
    )
    .await?;
    let producer = switchboard_runtime::producer::ProducerSlot::new(cfg, Duration::from_secs(10))?;
    kafka::produce_all(
        &producer,
        &[OutRecord {
            topic: topic.to_string(),
            key: "k".into(),
            payload: b"secured".to_vec(),
            headers: vec![],
        }],
    )
    .await?;
    let consumer: rdkafka::consumer::StreamConsumer = kafka::consumer_config(cfg)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    assert_eq!(msg.payload(), Some(&b"secured"[..]));
    Ok(())
}

/// Can a client with these settings fetch the cluster's metadata?
async fn metadata(cfg: &KafkaConfig) -> Result<usize, String> {
    let c: BaseConsumer = kafka::base_client_config(cfg)
        .create()
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        c.fetch_metadata(None, Timeout::After(Duration::from_secs(4)))
            .map(|m| m.brokers().len())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_over_tls_checks_the_ca_and_the_host_name() -> anyhow::Result<()> {
    let dir = tempdir()?;
    ca(&dir, "ca")?;
    let other_ca = ca(&dir, "other")?;
    let (cert, key) = server_cert(&dir, "ca", "broker", "IP:127.0.0.1")?;
    let broker = PrivateBroker::start_tls(cert, key).await?;
    let tls = KafkaConfig {
        kafka_brokers: broker.addr(),
        kafka_security_protocol: "ssl".into(),
        kafka_ssl_ca_location: dir.join("ca.pem").display().to_string(),
        topic_prefix: "tls.".into(),
        ..Default::default()
    };
    // Topics, a record produced and read back, all over TLS.
    round_trip(&tls, "tls.wa.events").await?;

    // A client that trusts another CA, or speaks plaintext, gets nothing.
    let e = metadata(&KafkaConfig {
        kafka_ssl_ca_location: other_ca.display().to_string(),
        ..tls.clone()
    })
    .await
    .expect_err("an unknown CA is refused");
    println!("another CA: {e}");
    metadata(&KafkaConfig {
        kafka_security_protocol: "plaintext".into(),
        ..tls.clone()
    })
    .await
    .expect_err("plaintext against a TLS listener fails");

    // A certificate from the right CA for another host name: refused unless the
    // operator turns the host check off.
    let (cert, key) = server_cert(&dir, "ca", "elsewhere", "DNS:kafka.elsewhere.example")?;
    let misnamed = PrivateBroker::start_tls(cert, key).await?;
    let checked = KafkaConfig {
        kafka_brokers: misnamed.addr(),
        ..tls.clone()
    };
    metadata(&checked)
        .await
        .expect_err("a certificate for another host is refused");
    let unchecked = KafkaConfig {
        kafka_ssl_endpoint_identification: "none".into(),
        ..checked
    };
    assert_eq!(metadata(&unchecked).await.map_err(anyhow::Error::msg)?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_over_sasl_scram_and_tls_logs_in_or_says_why_not() -> anyhow::Result<()> {
    let dir = tempdir()?;
    ca(&dir, "ca")?;
    let (cert, key) = server_cert(&dir, "ca", "broker", "IP:127.0.0.1")?;
    let services = Services::from_env();
    let db = format!(
        "nisshi_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let admin = sqlx::PgPool::connect(&services.pg_admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await?;
    let storage = format!(
        "{}?sslmode=disable",
        switchboard_e2e::replace_db(&services.pg_admin_url, &db)
    );
    let broker = PrivateBroker::start_sasl(
        cert,
        key,
        &storage,
        &[
            ("alice", "alice-pw", "scram512"),
            ("bob", "bob-pw", "scram256"),
        ],
    )
    .await?;
    let alice = KafkaConfig {
        kafka_brokers: broker.addr(),
        kafka_security_protocol: "sasl_ssl".into(),
        kafka_sasl_mechanism: "SCRAM-SHA-512".into(),
        kafka_sasl_username: "alice".into(),
        kafka_sasl_password: "alice-pw".into(),
        kafka_ssl_ca_location: dir.join("ca.pem").display().to_string(),
        topic_prefix: "sasl.".into(),
        ..Default::default()
    };
    round_trip(&alice, "sasl.wa.events").await?;
    let bob = KafkaConfig {
        kafka_sasl_mechanism: "SCRAM-SHA-256".into(),
        kafka_sasl_username: "bob".into(),
        kafka_sasl_password: "bob-pw".into(),
        ..alice.clone()
    };
    assert_eq!(metadata(&bob).await.map_err(anyhow::Error::msg)?, 1);

    // A wrong password, or no login at all: refused, and create-topics says so instead
    // of waiting forever.
    let wrong = KafkaConfig {
        kafka_sasl_password: "guess".into(),
        ..alice.clone()
    };
    let e = kafka::ensure_topics(
        &wrong,
        &[TopicSpec {
            name: "sasl.other".into(),
            partitions: 1,
            compacted: false,
        }],
    )
    .await
    .expect_err("a wrong password is refused")
    .to_string();
    assert!(e.contains("cannot reach the Kafka brokers"), "{e}");
    println!("wrong password: {e}");
    metadata(&KafkaConfig {
        kafka_security_protocol: "ssl".into(),
        ..alice.clone()
    })
    .await
    .expect_err("a client that does not log in is refused");
    drop(broker);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_requires_tls_and_verify_full_checks_the_ca() -> anyhow::Result<()> {
    let services = Services::from_env();
    let ca_pem = services.tls_dir.join("ca.pem");
    let url = |params: &str| {
        format!("postgres://{TLS_USER}:{TLS_PASSWORD}@127.0.0.1:5432/switchboard?{params}")
    };
    let pool = sqlx::PgPool::connect(&url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_pem.display()
    )))
    .await?;
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await?;
    assert!(ssl, "the connection is encrypted");
    assert!(version.starts_with("TLSv1."), "{version}");

    let e = sqlx::PgPool::connect(&url("sslmode=disable"))
        .await
        .expect_err("the role is refused without TLS")
        .to_string();
    assert!(e.contains("no encryption"), "{e}");

    let dir = tempdir()?;
    let other = ca(&dir, "other")?;
    let e = sqlx::PgPool::connect(&url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    )))
    .await
    .expect_err("a server certificate from another CA is refused")
    .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    Ok(())
}

/// The whole ingest path with both sinks on TLS: the pg-sink with `sslmode=verify-full`,
/// the ch-sink over HTTPS with a password.
#[tokio::test(flavor = "multi_thread")]
async fn the_sinks_write_over_tls_to_postgres_and_clickhouse() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        tls: true,
        ..Default::default()
    })
    .await?;
    let body = switchboard_e2e::bsp::meta_status(
        "15550783881",
        "16505550001",
        "wamid.TLS",
        "delivered",
        chrono::Utc::now().timestamp(),
    );
    p.post_meta_until_accepted(&body).await?;
    wait_until(
        "the event in both stores",
        Duration::from_secs(60),
        || async {
            Ok(
                p.pg_count("SELECT count(*) FROM messages WHERE wamid = 'wamid.TLS'")
                    .await?
                    == 1
                    && p.ch_count("SELECT count() FROM events WHERE wamid = 'wamid.TLS'")
                        .await?
                        == 1,
            )
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let encrypted = p
        .pg_count(&format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.datname = '{}' AND s.ssl",
            p.id
        ))
        .await?;
    assert!(encrypted >= 1, "the pg-sink's connections are encrypted");
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("switchboard-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
