//! The Kafka wire front: accepts TCP connections, frames and decodes Kafka requests,
//! turns them into calls on the protocol-agnostic [`shardline_broker::Broker`], and encodes
//! the answers.
//!
//! ```text
//! TcpListener ─accept (capped)─▶ connection task
//!     reader:  length prefix ─limit check─▶ frame ─▶ header ─▶ dispatch ─▶ Pending (in order)
//!     writer:  awaits each Pending in request order ─▶ response frame
//! ```
//!
//! Requests on one connection are answered strictly in request order (clients match
//! responses by position as well as correlation id). Produce requests enqueue their
//! batches with the broker while still in the reader, so pipelined produces keep their
//! order per partition and share group commits. Consumer groups (classic protocol) are
//! coordinated by this node: see `group`, a pure state machine per group driven by one
//! timer task. `kafka_protocol` types never leave this crate. Depends on broker and core.

mod codes;
mod connection;
mod frame;
mod group;
mod guard;
mod handlers;
mod versions;

pub use group::GroupConfig;

/// Decodes one request frame (everything after the length prefix) the way a connection
/// does before any handler runs, and says whether it would be served (`true`) or close
/// the connection (`false`). Touches no state: for the fuzz targets in `fuzz/`, which
/// check that no frame panics or allocates what its bytes cannot back.
#[doc(hidden)]
pub fn decode_request_frame(frame: bytes::Bytes) -> bool {
    // The frame layer refuses shorter frames before anything decodes them.
    if frame.len() < frame::REQUEST_LEN_MIN {
        return false;
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    handlers::decode(&frame, raw_key, version).is_ok()
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardline_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Host clients should connect to, as returned in Metadata.
    pub advertised_host: String,
    /// Port clients should connect to, as returned in Metadata.
    pub advertised_port: u16,
    /// This node's broker id.
    pub node_id: i32,
    /// Largest request frame accepted; larger ones close the connection (Kafka's
    /// `socket.request.max.bytes`).
    pub frame_bytes_max: usize,
    /// Most open client connections; more are closed at accept.
    pub connections_max: usize,
    /// Most request bytes one connection may have in flight (read but not yet answered).
    pub inflight_bytes_per_connection_max: usize,
    /// Most record bytes one Fetch answer carries, whatever the client asks (Kafka's
    /// broker-side `fetch.max.bytes`); the first batch still always comes whole.
    pub fetch_bytes_max: usize,
    /// A connection with nothing in flight and nothing read for this long is closed
    /// (Kafka's `connections.max.idle.ms`); clients reconnect when they need to.
    pub connections_idle: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Consumer-group coordinator settings.
    pub groups: GroupConfig,
}

impl KafkaConfig {
    /// Defaults for a listener advertised as `host:port`.
    pub fn new(advertised_host: String, advertised_port: u16) -> KafkaConfig {
        KafkaConfig {
            advertised_host,
            advertised_port,
            node_id: 1,
            frame_bytes_max: 100 * 1024 * 1024,
            connections_max: 10_000,
            inflight_bytes_per_connection_max: 100 * 1024 * 1024,
            fetch_bytes_max: FETCH_BYTES_MAX_DEFAULT,
            connections_idle: Duration::from_millis(CONNECTIONS_IDLE_MS_DEFAULT),
            shutdown_grace: Duration::from_secs(10),
            groups: GroupConfig::default(),
        }
    }
}

/// Default of [`KafkaConfig::fetch_bytes_max`]: Kafka's 55 MiB.
pub const FETCH_BYTES_MAX_DEFAULT: usize = 55 * 1024 * 1024;

/// Default of [`KafkaConfig::connections_idle`]: Kafka's 10 minutes.
pub const CONNECTIONS_IDLE_MS_DEFAULT: u64 = 600_000;

/// Shared by every connection.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) broker: Broker,
    pub(crate) config: KafkaConfig,
    /// The consumer-group coordinator (this node coordinates every group).
    pub(crate) groups: group::coordinator::Coordinator,
}

/// Serves Kafka clients on `listener` until `shutdown` turns true, then stops accepting,
/// lets each connection finish the requests it has read (up to the grace period) and
/// returns. The caller shuts the broker down afterwards.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    config: KafkaConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let groups = group::coordinator::Coordinator::new(broker.clone(), config.groups.clone());
    // Group timers and offset expiry; at shutdown it answers parked JoinGroup and
    // SyncGroup requests so that connections can drain.
    let coordinator_task = tokio::spawn(groups.clone().run(shutdown.clone()));
    let context = Arc::new(Context {
        broker,
        config: config.clone(),
        groups,
    });
    let slots = Arc::new(Semaphore::new(config.connections_max));
    let mut connections = JoinSet::new();
    let local: Option<SocketAddr> = listener.local_addr().ok();
    info!(listen = ?local, advertised = %format!("{}:{}", config.advertised_host, config.advertised_port), "kafka listener ready");
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    warn!(%peer, limit = config.connections_max, "connection limit reached; closing new connection");
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let context = Arc::clone(&context);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    connection::run(socket, peer, context, shutdown).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("grace period over; aborting remaining connections");
        connections.abort_all();
    }
    let _ = coordinator_task.await;
    Ok(())
}
