//! switchboard: the operator CLI. A thin layer over `switchboard_processors::replay` (the
//! admin API calls the same code): topics, replays and dead letters. Reads the same
//! `SWITCHBOARD_*` settings as the other binaries (see the README).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use switchboard_processors::replay::dlq::{self, Selection};
use switchboard_processors::replay::{
    self, spec, Config, Env, Filters, Job, ReplayRequest, State, Target,
};
use switchboard_runtime::kafka::{ensure_topics, Topics};

// Decoding and row building allocate per record: glibc malloc took about a third of a
// replay's CPU (perf, loadtest/REPORT.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Operate a Switchboard deployment: topics, replays, dead letters", long_about = None)]
struct Cli {
    /// Print results as JSON (one document) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create every topic with its final partition count and the message size limit
    /// (existing topics are left alone).
    CreateTopics {
        /// Partitions of the partitioned topics (dead-letter and config topics have one).
        #[arg(long, default_value_t = 6)]
        partitions: i32,
    },
    /// Replay a topic's records over a range into a target (backfill, repair, re-drive).
    #[command(subcommand)]
    Replay(ReplayCmd),
    /// Inspect, redrive and purge dead letters.
    #[command(subcommand)]
    Dlq(DlqCmd),
}

#[derive(Subcommand)]
enum ReplayCmd {
    /// Plan and run a replay (in the foreground with progress, or `--detach` for a
    /// replayer to run).
    Start(Box<StartArgs>),
    /// Continue a killed, cancelled or failed replay from its last checkpoint.
    Resume {
        id: String,
        /// Leave it to a running replayer.
        #[arg(long)]
        detach: bool,
    },
    /// A replay's plan, state and progress.
    Show { id: String },
    /// The newest replays.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Stop a replay at its next checkpoint (resumable).
    Cancel { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    Postgres,
    Clickhouse,
    Fanout,
    Normalizer,
    Router,
    Topic,
}

#[derive(Args)]
struct StartArgs {
    /// Topic to read, without the deployment's prefix (wa.events, wa.webhooks.raw,
    /// wa.send.requests, wa.deliveries.attempts, a dead-letter topic, ...).
    #[arg(long)]
    source: String,
    /// Start of the range: RFC 3339, `now`, or relative (`-24h`, `-7d`).
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the range (exclusive; default now).
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Start offset, in every partition read (instead of times).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    from_offset: Option<i64>,
    /// End offset (exclusive), in every partition read.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    to_offset: Option<i64>,
    /// Everything the topic retains.
    #[arg(long, conflicts_with_all = ["from", "to", "from_offset", "to_offset"])]
    all: bool,
    /// Partitions to read (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<i32>,
    /// Only this tenant's records (with --target fanout: all of its endpoints).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this BSP's records (meta, 360dialog, gupshup, twilio, waha, aisensy, karix).
    #[arg(long)]
    bsp: Option<String>,
    /// Only this business number's records (E.164).
    #[arg(long)]
    number: Option<String>,
    /// Only these event types (message.status, message.received, ...; repeatable).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Dead-letter sources: only these reasons (repeatable).
    #[arg(long = "reason")]
    reasons: Vec<String>,
    /// Where the records go.
    #[arg(long, value_enum)]
    target: TargetKind,
    /// ClickHouse target: write into this database (created with the sink's DDL if
    /// missing) instead of the live one.
    #[arg(long)]
    clickhouse_database: Option<String>,
    /// Fan-out target: re-deliver to this endpoint only.
    #[arg(long)]
    endpoint: Option<String>,
    /// Normalizer target: skip the dedupe store. Events already delivered are delivered
    /// to client endpoints again (with the same webhook-id); the stores are unaffected.
    #[arg(long)]
    bypass_dedupe: bool,
    /// Topic target: the topic to copy into (without prefix).
    #[arg(long)]
    to_topic: Option<String>,
    /// At most this many records per second (0: as fast as the target takes them).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Print the plan (per partition: start, end, records) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Create the job and leave it to a running replayer.
    #[arg(long)]
    detach: bool,
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Dead letters per stage and reason, then the letters themselves.
    List(SelArgs),
    /// One dead letter with its payload.
    Show {
        stage: String,
        /// The letter's position on the stage's topic: PARTITION:OFFSET.
        position: String,
    },
    /// Send selected letters back to their stage (a replay job), with counts before and
    /// after.
    Redrive {
        #[command(flatten)]
        sel: SelArgs,
        /// Show what would be redriven and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mark selected letters as purged (hidden from `list`; retention deletes them).
    Purge {
        #[command(flatten)]
        sel: SelArgs,
    },
}

#[derive(Args)]
struct SelArgs {
    /// Stage: normalizer, router, pg-sink, ch-sink, fanout, deliveries, replay, media (list:
    /// default all).
    #[arg(long)]
    stage: Option<String>,
    /// Only these reasons (repeatable).
    #[arg(long = "reason")]
    reasons: Vec<String>,
    /// Letters written at or after this time (RFC 3339 or relative, `-24h`).
    #[arg(long, allow_hyphen_values = true)]
    since: Option<String>,
    /// Letters written before this time.
    #[arg(long, alias = "before", allow_hyphen_values = true)]
    until: Option<String>,
    /// Include purged letters.
    #[arg(long)]
    all: bool,
    /// At most this many letters per stage (0: all).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// `list`: only the counts per stage and reason.
    #[arg(long)]
    counts: bool,
}

impl SelArgs {
    fn selection(&self) -> anyhow::Result<Selection> {
        let now = switchboard_runtime::now_ms();
        let t = |s: &Option<String>| s.as_deref().map(|s| spec::parse_time(s, now)).transpose();
        Ok(Selection {
            reasons: self.reasons.clone(),
            since_ms: t(&self.since)?,
            until_ms: t(&self.until)?,
            all: self.all,
            limit: self.limit,
        })
    }

    fn stages(&self) -> anyhow::Result<Vec<&str>> {
        match &self.stage {
            Some(s) => {
                dlq::topic_of(s)?;
                Ok(vec![s.as_str()])
            }
            None => Ok(dlq::STAGES.iter().map(|(s, _)| *s).collect()),
        }
    }

    fn one_stage(&self) -> anyhow::Result<&str> {
        let s = self
            .stage
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--stage is required"))?;
        dlq::topic_of(s)?;
        Ok(s)
    }
}

fn main() {
    let cli = Cli::parse();
    // Logs go to stderr as text, warnings only, unless asked otherwise; progress and
    // results go to stdout. Set before any thread starts.
    if std::env::var("SWITCHBOARD_LOG_FORMAT").is_err() {
        std::env::set_var("SWITCHBOARD_LOG_FORMAT", "text");
    }
    if std::env::var("RUST_LOG").is_err() {
        std::env::set_var("RUST_LOG", "warn");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        switchboard_runtime::telemetry::init("switchboard");
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let cfg: Config = switchboard_runtime::config::load()?;
    match cli.cmd {
        Cmd::CreateTopics { partitions } => {
            anyhow::ensure!(partitions >= 1, "--partitions must be at least 1");
            let topics = Topics::new(&cfg.kafka.topic_prefix).with_partitions(partitions);
            let drift = ensure_topics(&cfg.kafka, &topics).await?;
            for t in topics {
                let compacted = if t.compacted { ", compacted" } else { "" };
                println!("{}\t{} partitions{compacted}", t.name, t.partitions);
            }
            // Existing topics are never altered (a partition count or a retention change
            // is an operator's decision); say where they differ, and exit 3 if they do.
            for d in &drift {
                eprintln!("differs: {d}");
            }
            Ok(if drift.is_empty() { 0 } else { 3 })
        }
        Cmd::Replay(c) => replay_cmd(cfg, c, cli.json).await,
        Cmd::Dlq(c) => dlq_cmd(cfg, c, cli.json).await,
    }
}

fn request(a: &StartArgs) -> anyhow::Result<ReplayRequest> {
    let target = match a.target {
        TargetKind::Postgres => Target::Postgres,
        TargetKind::Clickhouse => Target::Clickhouse {
            database: a.clickhouse_database.clone(),
        },
        TargetKind::Fanout => Target::Fanout {
            endpoint_id: a.endpoint.clone(),
            tenant_id: a.tenant.clone(),
        },
        TargetKind::Normalizer => Target::Normalizer {
            bypass_dedupe: a.bypass_dedupe,
        },
        TargetKind::Router => Target::Router,
        TargetKind::Topic => Target::Topic {
            topic: a
                .to_topic
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--target topic needs --to-topic"))?,
        },
    };
    Ok(ReplayRequest {
        source: a.source.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        from_offset: a.from_offset,
        to_offset: a.to_offset,
        all: a.all,
        partitions: a.partitions.iter().copied().collect::<BTreeSet<_>>(),
        filters: Filters {
            tenant: a.tenant.clone(),
            bsp: a.bsp.clone(),
            business_number: a.number.clone(),
            event_types: a.event_types.clone(),
            reasons: a.reasons.clone(),
        },
        target: Some(target),
        rate_per_sec: a.rate,
        dry_run: a.dry_run,
    })
}

async fn replay_cmd(cfg: Config, c: ReplayCmd, json: bool) -> anyhow::Result<i32> {
    match c {
        ReplayCmd::Start(a) => {
            let req = request(&a)?;
            let (spec, plan) = replay::prepare(&cfg, &req).await?;
            if a.dry_run {
                if json {
                    println!("{}", serde_json::json!({"spec": spec, "plan": plan}));
                } else {
                    print_plan(&spec, &plan);
                    println!("dry run: nothing was changed");
                }
                return Ok(0);
            }
            let env = Env::new(cfg)?;
            let jobs = env.jobs();
            jobs.migrate().await?;
            let job = jobs.create(&spec, &plan, "cli").await?;
            if !json {
                print_plan(&spec, &plan);
                println!("replay {} created", job.id);
            }
            if a.detach {
                if json {
                    println!("{}", serde_json::to_string(&job)?);
                }
                return Ok(0);
            }
            run_foreground(&env, &job.id, false, json).await
        }
        ReplayCmd::Resume { id, detach } => {
            let env = Env::new(cfg)?;
            env.jobs().migrate().await?;
            if detach {
                // A replayer takes pending jobs and those whose lease ran out.
                let job = env
                    .jobs()
                    .get(&id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no replay {id}"))?;
                anyhow::ensure!(job.state != State::Done, "replay {id} is done");
                println!(
                    "replay {id} is {}; a replayer resumes it once its lease is free",
                    job.state.as_str()
                );
                return Ok(0);
            }
            run_foreground(&env, &id, true, json).await
        }
        ReplayCmd::Show { id } => {
            let env = Env::new(cfg)?;
            let job = env
                .jobs()
                .get(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no replay {id}"))?;
            if json {
                println!("{}", serde_json::to_string(&job)?);
            } else {
                print_job(&job);
            }
            Ok(0)
        }
        ReplayCmd::List { limit } => {
            let env = Env::new(cfg)?;
            env.jobs().migrate().await?;
            let list = env.jobs().list(limit).await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!(
                    "{:<34} {:<10} {:<24} {:<12} {:>10} {:>10}  created",
                    "id", "state", "source", "target", "read", "written"
                );
                for j in list {
                    println!(
                        "{:<34} {:<10} {:<24} {:<12} {:>10} {:>10}  {}",
                        j.id,
                        j.state.as_str(),
                        j.spec.source,
                        j.spec.target.name(),
                        j.plan.records() - j.remaining(),
                        j.records_written,
                        j.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                }
            }
            Ok(0)
        }
        ReplayCmd::Cancel { id } => {
            let env = Env::new(cfg)?;
            let job = env
                .jobs()
                .cancel(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no replay {id}"))?;
            println!(
                "replay {id}: {} (cancel requested: {})",
                job.state.as_str(),
                job.cancel_requested
            );
            Ok(0)
        }
    }
}

/// Claim and run a job here, showing progress; Ctrl-C cancels it (resumable).
async fn run_foreground(env: &Env, id: &str, resume: bool, json: bool) -> anyhow::Result<i32> {
    let jobs = env.jobs();
    let owner = replay::jobs::owner_name("cli");
    let job = loop {
        let current = jobs
            .get(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no replay {id}"))?;
        anyhow::ensure!(current.state != State::Done, "replay {id} is done");
        // A runner killed on this host leaves its lease behind: take it at once.
        let dead = current
            .lease_owner
            .as_deref()
            .filter(|o| replay::jobs::owner_is_dead_here(o));
        if let Some(job) = jobs.claim(id, &owner, resume, dead).await? {
            break job;
        }
        eprintln!(
            "replay {id} is held by {} until its lease runs out; waiting",
            current.lease_owner.as_deref().unwrap_or("another runner")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let (tx, rx) = tokio::sync::watch::channel(replay::run::Progress::default());
    let shutdown = switchboard_runtime::shutdown::on_signal();
    let show = tokio::spawn(show_progress(rx, job.plan.records(), json));
    let r = replay::run::run(env, &jobs, job, &owner, &tx, &shutdown, State::Cancelled).await;
    drop(tx);
    let _ = show.await;
    let job = jobs
        .get(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("replay {id} vanished"))?;
    if json {
        println!("{}", serde_json::to_string(&job)?);
    } else {
        print_job(&job);
    }
    Ok(match (r, job.state) {
        (Err(_), _) | (_, State::Failed) => 1,
        (_, State::Done) => 0,
        _ => 3,
    })
}

/// A progress bar on a terminal; plain lines every two seconds otherwise.
async fn show_progress(
    mut rx: tokio::sync::watch::Receiver<replay::run::Progress>,
    total: i64,
    json: bool,
) {
    let tty = std::io::stdout().is_terminal() && !json;
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(total.max(0) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let changed = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        let p = rx.borrow().clone();
        match &bar {
            Some(b) => {
                b.set_position(p.read.max(0) as u64);
                b.set_message(format!(
                    "written {} skipped {} dead-lettered {}",
                    p.written, p.skipped, p.dead_letters
                ));
            }
            None if !json && last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = p.read as f64 / secs;
                let eta = if rate > 0.0 {
                    (total - p.read).max(0) as f64 / rate
                } else {
                    0.0
                };
                println!(
                    "progress: {}/{} records ({:.0}%), {:.0}/s, written {}, skipped {}, dead-lettered {}, eta {:.0}s",
                    p.read,
                    total,
                    if total > 0 { 100.0 * p.read as f64 / total as f64 } else { 100.0 },
                    rate,
                    p.written,
                    p.skipped,
                    p.dead_letters,
                    eta
                );
            }
            None => {}
        }
        if matches!(changed, Ok(Err(_))) {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
}

fn print_plan(spec: &replay::ReplaySpec, plan: &replay::Plan) {
    println!("source   {}", plan.topic);
    match spec.range {
        replay::Range::Time { from_ms, to_ms } => println!(
            "range    [{}, {}) by record time",
            fmt_ms(from_ms),
            fmt_ms(to_ms)
        ),
        replay::Range::Offsets { from, to } => println!(
            "range    [{}, {}) by offset",
            from.map(|o| o.to_string())
                .unwrap_or_else(|| "log start".into()),
            to.map(|o| o.to_string()).unwrap_or_else(|| "end".into())
        ),
    }
    println!(
        "filters  {}",
        if spec.filters.is_empty() {
            "none".to_string()
        } else {
            serde_json::to_string(&spec.filters).unwrap_or_default()
        }
    );
    println!(
        "target   {}",
        serde_json::to_string(&spec.target).unwrap_or_default()
    );
    if spec.rate_per_sec > 0 {
        println!("rate     at most {}/s", spec.rate_per_sec);
    }
    println!(
        "{:>9} {:>12} {:>12} {:>10}  offsets found by",
        "partition", "start", "end", "records"
    );
    for p in &plan.partitions {
        println!(
            "{:>9} {:>12} {:>12} {:>10}  {}",
            p.partition,
            p.start,
            p.end,
            p.records(),
            p.method
        );
    }
    println!(
        "{:>9} {:>12} {:>12} {:>10}",
        "total",
        "",
        "",
        plan.records()
    );
}

fn print_job(j: &Job) {
    println!("replay   {} ({})", j.id, j.state.as_str());
    println!(
        "source   {} → {}",
        j.spec.source,
        serde_json::to_string(&j.spec.target).unwrap_or_default()
    );
    println!(
        "records  {} of {} read, {} written, {} filtered out, {} dead-lettered",
        j.plan.records() - j.remaining(),
        j.plan.records(),
        j.records_written,
        j.records_skipped,
        j.dead_letters
    );
    if j.cancel_requested {
        println!("cancel   requested");
    }
    if let Some(e) = &j.error {
        println!("error    {e}");
    }
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

async fn dlq_cmd(cfg: Config, c: DlqCmd, json: bool) -> anyhow::Result<i32> {
    let env = Env::new(cfg)?;
    env.jobs().migrate().await?;
    match c {
        DlqCmd::List(a) => {
            let mut sel = a.selection()?;
            if a.counts {
                // Counts are of every selected letter, not of a page.
                sel.limit = 0;
            }
            let mut all = Vec::new();
            for stage in a.stages()? {
                all.extend(dlq::list(&env, stage, &sel).await?);
            }
            if json {
                println!("{}", serde_json::to_string(&all)?);
                return Ok(0);
            }
            let mut counts: std::collections::BTreeMap<(String, String), (usize, usize)> =
                Default::default();
            for l in &all {
                let c = counts
                    .entry((l.stage.clone(), l.reason.clone()))
                    .or_default();
                c.0 += 1;
                if l.mark.as_deref() == Some("redriven") {
                    c.1 += 1;
                }
            }
            println!(
                "{:<12} {:<24} {:>8} {:>9}",
                "stage", "reason", "letters", "redriven"
            );
            for ((s, r), (n, redriven)) in &counts {
                println!("{s:<12} {r:<24} {n:>8} {redriven:>9}");
            }
            if a.counts {
                return Ok(0);
            }
            println!();
            for l in &all {
                println!(
                    "{} {}:{} {} {} from {}/{}@{}{}  {}",
                    l.stage,
                    l.partition,
                    l.offset,
                    fmt_ms(l.failed_at_ms),
                    l.reason,
                    l.source_topic,
                    l.source_partition,
                    l.source_offset,
                    l.mark
                        .as_deref()
                        .map(|m| format!(" [{m}]"))
                        .unwrap_or_default(),
                    l.detail.chars().take(200).collect::<String>()
                );
            }
            Ok(0)
        }
        DlqCmd::Show { stage, position } => {
            let (p, o) = position
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
                .ok_or_else(|| {
                    anyhow::anyhow!("position must be PARTITION:OFFSET, got {position:?}")
                })?;
            let Some(l) = dlq::show(&env, &stage, p, o).await? else {
                anyhow::bail!("no dead letter at {stage} {position}");
            };
            if json {
                let mut v = serde_json::to_value(&l)?;
                v["payload"] = serde_json::Value::String(dlq::describe_payload(&env, &l).await);
                println!("{v}");
                return Ok(0);
            }
            println!("stage    {}", l.stage);
            println!("reason   {}", l.reason);
            println!("failed   {}", fmt_ms(l.failed_at_ms));
            println!(
                "source   {}/{}@{}",
                l.source_topic, l.source_partition, l.source_offset
            );
            println!(
                "size     {} bytes{}",
                l.payload_size,
                if l.payload_truncated {
                    " (not embedded: read from the source)"
                } else {
                    ""
                }
            );
            if let Some(m) = &l.mark {
                println!("mark     {m} {}", l.job_id.clone().unwrap_or_default());
            }
            println!("detail   {}", l.detail);
            println!("payload  {}", dlq::describe_payload(&env, &l).await);
            Ok(0)
        }
        DlqCmd::Redrive { sel, dry_run } => {
            let stage = sel.one_stage()?;
            let selection = sel.selection()?;
            let selection_all = Selection {
                limit: 0,
                ..selection.clone()
            };
            let before = dlq::list(&env, stage, &selection_all).await?;
            let pending = before.iter().filter(|l| l.mark.is_none()).count();
            println!(
                "{stage}: {} letters selected ({pending} never redriven)",
                before.len()
            );
            let req = dlq::redrive_request(stage, &selection_all)?;
            let (spec, plan) = replay::prepare(&env.cfg, &req).await?;
            if dry_run {
                print_plan(&spec, &plan);
                println!("dry run: nothing was changed");
                return Ok(0);
            }
            if before.is_empty() {
                println!("nothing to redrive");
                return Ok(0);
            }
            let letters_topic = format!("{}{}", env.cfg.kafka.topic_prefix, dlq::topic_of(stage)?);
            let dl_before = count_records(&env, &letters_topic).await;
            let job = env.jobs().create(&spec, &plan, "cli dlq redrive").await?;
            println!("replay {} redrives them", job.id);
            let code = run_foreground(&env, &job.id, false, json).await?;
            if code == 0 {
                let dl_after = count_records(&env, &letters_topic).await;
                let job = env
                    .jobs()
                    .get(&job.id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("job vanished"))?;
                let after = dlq::list(&env, stage, &selection_all).await?;
                println!(
                    "redrive: {} letters before, {} handed back to {stage}, {} now marked redriven; {} new letters on {letters_topic} since (still failing)",
                    before.len(),
                    job.records_written,
                    after.iter().filter(|l| l.job_id.as_deref() == Some(job.id.as_str())).count(),
                    dl_after - dl_before
                );
            }
            Ok(code)
        }
        DlqCmd::Purge { sel } => {
            let stage = sel.one_stage()?;
            let selection = Selection {
                limit: 0,
                ..sel.selection()?
            };
            let n = dlq::mark(&env, stage, &selection, "purged", None).await?;
            println!("{stage}: {n} letters purged");
            Ok(0)
        }
    }
}

async fn count_records(env: &Env, topic: &str) -> i64 {
    replay::plan::plan(
        &env.cfg.kafka,
        topic,
        &replay::Range::Offsets {
            from: None,
            to: None,
        },
        &BTreeSet::new(),
    )
    .await
    .map(|p| p.partitions.iter().map(|x| x.end).sum())
    .unwrap_or(0)
}
