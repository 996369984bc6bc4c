//! switchboard-admin: operator commands.
//!
//!   switchboard-admin create-topics [PARTITIONS]   create every topic (default 6 partitions)
//!
//! Reads the same `SWITCHBOARD_*` Kafka settings as the other binaries.

use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::kafka::{ensure_topics, Topics};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("switchboard-admin");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kafka: KafkaConfig = switchboard_runtime::config::load()?;
    match args.first().map(String::as_str) {
        Some("create-topics") => {
            let partitions: i32 = match args.get(1) {
                Some(p) => p
                    .parse()
                    .map_err(|_| anyhow::anyhow!("PARTITIONS must be a number, got {p:?}"))?,
                None => 6,
            };
            let topics = Topics::new(&kafka.topic_prefix).with_partitions(partitions);
            ensure_topics(&kafka, &topics).await?;
            for t in topics {
                let compacted = if t.compacted { ", compacted" } else { "" };
                println!("{}\t{} partitions{compacted}", t.name, t.partitions);
            }
            Ok(())
        }
        _ => {
            eprintln!("usage: switchboard-admin create-topics [PARTITIONS]");
            std::process::exit(2)
        }
    }
}
