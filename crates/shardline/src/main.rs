//! `shardline`: the server and its admin commands.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shardline::config::ServeConfig;
use shardline::group_cmd;
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
    let format = if args.json {
        group_cmd::Format::Json
    } else {
        group_cmd::Format::Table
    };
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
