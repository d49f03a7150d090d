//! Wiring: bind the listeners, open the broker, run the Kafka and HTTP fronts, and shut
//! everything down in order.
//!
//! Shutdown order: stop accepting and reading new requests → let the requests already
//! read finish (bounded by the grace period) → stop the broker, which drains each shard's
//! queue, fsyncs and closes every log cleanly → exit.

use std::net::SocketAddr;

use anyhow::Context as _;
use shardline_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Validated;
use crate::http;

/// The engine type, re-exported for in-process callers such as the test kit.
pub use shardline_broker::Broker as BrokerHandle;
/// A committed consumer-group offset, re-exported for in-process callers.
pub use shardline_broker::CommittedOffset;

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the Kafka listener is bound.
    pub kafka_addr: SocketAddr,
    /// Where the HTTP listener is bound.
    pub http_addr: SocketAddr,
    broker: Broker,
    stop: watch::Sender<bool>,
    kafka_task: JoinHandle<std::io::Result<()>>,
    http_task: JoinHandle<()>,
}

impl RunningServer {
    /// Binds, opens the data directory (recovering it) and starts serving.
    pub async fn start(config: Validated) -> anyhow::Result<RunningServer> {
        let kafka_listener = TcpListener::bind(config.kafka_listen)
            .await
            .with_context(|| format!("binding the Kafka listener on {}", config.kafka_listen))?;
        let kafka_addr = kafka_listener.local_addr()?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", config.http_listen))?;
        let http_addr = http_listener.local_addr()?;
        if let Some(directory) = config
            .broker
            .tier
            .as_ref()
            .and_then(|tier| tier.url.strip_prefix("file://"))
        {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("creating the object directory {directory}"))?;
        }
        let broker = Broker::open(config.broker.clone()).await.with_context(|| {
            format!(
                "opening data directory {}",
                config.broker.data_dir.display()
            )
        })?;
        let mut kafka = config.kafka.clone();
        let (host, port) = config
            .advertised
            .clone()
            .unwrap_or_else(|| (kafka_addr.ip().to_string(), kafka_addr.port()));
        kafka.advertised_host = host;
        kafka.advertised_port = port;
        let (stop, stopped) = watch::channel(false);
        let kafka_task = tokio::spawn(shardline_kafka::serve(
            kafka_listener,
            broker.clone(),
            kafka,
            stopped.clone(),
        ));
        let kinesis = shardline_kinesis::Kinesis::new(broker.clone(), config.kinesis.clone());
        let http_task = tokio::spawn(http::serve(
            http_listener,
            broker.clone(),
            kinesis,
            config.http,
            stopped,
        ));
        info!(kafka = %kafka_addr, http = %http_addr, "shardline serving");
        Ok(RunningServer {
            kafka_addr,
            http_addr,
            broker,
            stop,
            kafka_task,
            http_task,
        })
    }

    /// The engine, for in-process callers.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Graceful shutdown; returns once every log is fsynced and closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        info!("shutting down: no new requests; finishing in-flight ones");
        let _ = self.stop.send(true);
        let kafka = self.kafka_task.await;
        let _ = self.http_task.await;
        self.broker.shutdown().await;
        kafka
            .context("kafka listener task")?
            .context("kafka listener")?;
        Ok(())
    }
}
