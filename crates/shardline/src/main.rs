//! `shardline`: the server and its admin commands.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shardline::config::ServeConfig;
use shardline::group_cmd;
use shardline::output::human_bytes;
use shardline::server::RunningServer;
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "shardline",
    version,
    about = "A Kafka-wire stream store with Kinesis semantics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server. With no flags: data in ./data, Kafka on 127.0.0.1:9092, HTTP on 127.0.0.1:4567.
    Serve(ServeArgs),
    /// Inspect consumer groups over the Kafka protocol (like kafka-consumer-groups.sh).
    Group(GroupArgs),
    /// Manage streams (topics) and their shards through the server's Kinesis API.
    Stream(StreamArgs),
    /// Rebuild an empty data directory from the object store (stream metadata, shard
    /// lineage, committed offsets; tiered records keep their offsets), then exit.
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// TOML config file (its [tier] names the bucket). Flags override it.
    #[arg(long, env = "SHARDLINE_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory to rebuild; it must hold no metadata yet.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The object store to restore from (s3://bucket/prefix, file:///dir).
    #[arg(long)]
    object_store: Option<String>,
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.object_store {
        config.tier.url = url;
    }
    config.tier.enabled = true;
    let metadata = shardline_broker::metadata_document_path(&config.data_dir);
    if metadata.exists() {
        anyhow::bail!(
            "{} already holds stream metadata; restore only rebuilds an empty data directory",
            config.data_dir.display()
        );
    }
    let validated = config.validate().context("invalid configuration")?;
    let url = validated
        .broker
        .tier
        .as_ref()
        .map(|tier| tier.url.clone())
        .unwrap_or_default();
    if let Some(directory) = url.strip_prefix("file://") {
        std::fs::create_dir_all(directory)?;
    }
    eprintln!("restoring {} from {url} ...", config.data_dir.display());
    let broker = shardline_broker::Broker::open(validated.broker)
        .await
        .context("opening the data directory on the object store")?;
    // Every segment the manifests list is looked for in the store with its recorded
    // size (HEADs, no data read), so "restored" means present, not just listed.
    let mut bar = shardline::output::Progress::new("verifying tiered segments");
    let verified = broker
        .verify_remote(|progress| {
            bar.update(
                progress.bytes_done,
                progress.bytes_total,
                &format!(
                    "{}/{} segments, {} of {}",
                    progress.segments_done,
                    progress.segments_total,
                    human_bytes(progress.bytes_done),
                    human_bytes(progress.bytes_total)
                ),
            );
        })
        .await;
    bar.finish();
    let verified = match verified {
        Ok(verified) => verified,
        Err(error) => {
            broker.shutdown().await;
            return Err(error).context("reading the manifests of the object store");
        }
    };
    let streams = broker.streams();
    let mut rows = Vec::new();
    for stream in &streams {
        let mut records = 0;
        for shard in &stream.shards {
            // A stream deleted meanwhile has no offsets; it simply counts none.
            if let Ok((start, end)) = broker.offsets(&stream.name, i64::from(shard.index)) {
                records += end - start;
            }
        }
        rows.push(vec![
            stream.name.clone(),
            stream.shards.len().to_string(),
            records.to_string(),
        ]);
    }
    eprint!(
        "{}",
        shardline::output::table(&["STREAM", "SHARDS", "RECORDS READABLE"], &rows)
    );
    let groups = broker.groups_with_committed_offsets().len();
    broker.shutdown().await;
    eprintln!(
        "restored {} streams, committed offsets of {groups} groups; {} tiered segments ({}) present in the object store",
        streams.len(),
        verified.segments_total - verified.problems.len() as u64,
        human_bytes(verified.bytes_total - verified.bytes_unreadable)
    );
    if !verified.problems.is_empty() {
        for problem in &verified.problems {
            eprintln!("  unreadable: {problem}");
        }
        anyhow::bail!(
            "{} tiered segments are missing or truncated in the object store; their records cannot be read",
            verified.problems.len()
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct StreamArgs {
    #[command(subcommand)]
    command: StreamCommand,
    /// The server's HTTP listener (Kinesis API).
    #[arg(long, global = true, default_value = "http://127.0.0.1:4567")]
    endpoint: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum StreamCommand {
    /// Create a stream.
    Create {
        /// Stream (topic) name.
        name: String,
        /// Number of shards (partitions); on-demand streams default to 4.
        #[arg(long)]
        shards: Option<u32>,
        /// Let the server split hot shards and merge cold ones (Kinesis ON_DEMAND).
        #[arg(long)]
        on_demand: bool,
    },
    /// Every stream with its status, mode, open shards and retention.
    List,
    /// Shards, lineage and a bar of the hash-key space.
    Describe {
        /// Stream name.
        name: String,
    },
    /// Split an open shard (at the middle of its hash range unless --at is given).
    Split {
        /// Stream name.
        name: String,
        /// Shard id or index, e.g. shardId-000000000000 or 0.
        shard: String,
        /// The new starting hash key (decimal).
        #[arg(long)]
        at: Option<String>,
    },
    /// Merge two adjacent open shards.
    Merge {
        /// Stream name.
        name: String,
        /// First shard id or index.
        shard: String,
        /// The adjacent shard id or index.
        adjacent: String,
    },
    /// Scale to COUNT open shards of equal ranges (UpdateShardCount, uniform scaling).
    Scale {
        /// Stream name.
        name: String,
        /// Target number of open shards.
        count: u32,
    },
    /// Set the retention period in hours (24 to 8760).
    Retention {
        /// Stream name.
        name: String,
        /// Hours.
        hours: u32,
    },
    /// Delete a stream and all its data.
    Delete {
        /// Stream name.
        name: String,
    },
}

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    use shardline::stream_cmd;
    let format = shardline::output::Format::from_flag(args.json);
    let endpoint = args.endpoint.as_str();
    match args.command {
        StreamCommand::Create {
            name,
            shards,
            on_demand,
        } => stream_cmd::create(endpoint, &name, shards, on_demand, format).await,
        StreamCommand::List => stream_cmd::list(endpoint, format).await,
        StreamCommand::Describe { name } => stream_cmd::describe(endpoint, &name, format).await,
        StreamCommand::Split { name, shard, at } => {
            stream_cmd::split(endpoint, &name, &shard, at, format).await
        }
        StreamCommand::Merge {
            name,
            shard,
            adjacent,
        } => stream_cmd::merge(endpoint, &name, &shard, &adjacent, format).await,
        StreamCommand::Scale { name, count } => {
            stream_cmd::scale(endpoint, &name, count, format).await
        }
        StreamCommand::Retention { name, hours } => {
            stream_cmd::retention(endpoint, &name, hours, format).await
        }
        StreamCommand::Delete { name } => stream_cmd::delete(endpoint, &name, format).await,
    }
}

#[derive(Debug, clap::Args)]
struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    /// host:port of the server's Kafka listener.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Every group, with its state, protocol and member count.
    List,
    /// One group: members with their assignments, and per partition the committed
    /// offset, log end offset and lag.
    Describe {
        /// The group id.
        group: String,
    },
}

async fn group(args: GroupArgs) -> anyhow::Result<()> {
    let format = shardline::output::Format::from_flag(args.json);
    match args.command {
        GroupCommand::List => {
            let rows = group_cmd::list_groups(&args.bootstrap).await?;
            group_cmd::print_list(&rows, format)
        }
        GroupCommand::Describe { group } => {
            let detail = group_cmd::describe_group(&args.bootstrap, &group).await?;
            group_cmd::print_detail(&detail, format)
        }
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (see config/embedded.toml for every key). Flags override it.
    #[arg(long, env = "SHARDLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for all local state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener address.
    #[arg(long)]
    listen: Option<String>,
    /// host:port that clients are told to connect to (defaults to the bound address).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Object store for tiered segments: s3://bucket/prefix, file:///dir or memory://
    /// (default: file://<data-dir>/objects).
    #[arg(long)]
    object_store: Option<String>,
    /// HTTP listener address (/healthz, /metrics).
    #[arg(long)]
    http_listen: Option<String>,
    /// Create unknown topics on first use.
    #[arg(long)]
    auto_create_topics: bool,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    log_json: bool,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_not_set| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.kafka.listen = listen;
    }
    if let Some(url) = args.object_store {
        config.tier.url = url;
    }
    if let Some(advertised) = args.advertised_listener {
        config.kafka.advertised_listener = Some(advertised);
    }
    if let Some(listen) = args.http_listen {
        config.http.listen = listen;
    }
    if args.auto_create_topics {
        config.streams.auto_create = true;
    }
    let validated = config.validate().context("invalid configuration")?;
    let server = RunningServer::start(validated).await?;
    // Scripts and tests read this line to learn the bound ports.
    println!(
        "shardline listening kafka={} http={}",
        server.kafka_addr, server.http_addr
    );
    let signal = wait_for_signal().await?;
    info!(signal, "shutdown requested");
    server.shutdown().await?;
    info!("shutdown complete");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = matches!(&cli.command, Command::Serve(args) if args.log_json);
    init_tracing(json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Group(args) => group(args).await,
            Command::Stream(args) => stream(args).await,
            Command::Restore(args) => restore(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
