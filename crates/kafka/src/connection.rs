//! One client connection: a reader that frames and dispatches requests in order, and a
//! writer that sends the answers in the same order.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::frame::decode_frame;
use crate::{Context, handlers};

/// Requests read ahead of the response being written. Kafka clients pipeline up to five
/// per connection by default; beyond this the reader simply waits.
const PIPELINE_MAX: usize = 64;

/// What to do with a finished request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Send this framed response.
    Respond(BytesMut),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// Close the connection, logging why.
    Close(String),
}

/// A request being served; resolves to its reply.
pub(crate) type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Wraps an already-known reply as a [`Pending`].
pub(crate) fn ready(reply: Reply) -> Pending {
    Box::pin(std::future::ready(reply))
}

/// Frames `response` with its response header for `key` at `version`.
pub(crate) fn encode_reply<R: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Reply {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0); // length, filled in below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encoded = header
        .encode(&mut out, R::header_version(version))
        .and_then(|()| response.encode(&mut out, version));
    if let Err(error) = encoded {
        // A response we cannot encode is our bug; closing beats a client waiting forever.
        return Reply::Close(format!(
            "could not encode {key:?} v{version} response: {error}"
        ));
    }
    let length = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&length.to_be_bytes());
    Reply::Respond(out)
}

/// Serves one connection until the client leaves, sends something unacceptable, or the
/// server shuts down (then the requests already read are still answered).
pub(crate) async fn run(
    socket: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut reader, writer) = socket.into_split();
    let budget = context.config.inflight_bytes_per_connection_max;
    let inflight = Arc::new(Semaphore::new(budget));
    let idle = context.config.connections_idle;
    let mut idle_deadline = Instant::now() + idle;
    let (queue, pending) = mpsc::channel(PIPELINE_MAX);
    let writer = tokio::spawn(write_replies(writer, pending, peer));
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let limit = context.config.frame_bytes_max;
    'serve: loop {
        loop {
            match decode_frame(&mut buffer, limit) {
                Ok(Some(frame)) => {
                    // The limit check above guarantees the frame fits in the budget.
                    let Ok(permit) = Arc::clone(&inflight)
                        .acquire_many_owned(frame.len() as u32)
                        .await
                    else {
                        break 'serve;
                    };
                    let reply = handlers::dispatch(&context, frame.freeze(), peer).await;
                    if queue.send((reply, permit)).await.is_err() {
                        break 'serve;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    warn!(%peer, %error, "closing connection: bad frame");
                    break 'serve;
                }
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) => {
                    if !buffer.is_empty() {
                        debug!(%peer, bytes = buffer.len(), "client closed mid-frame");
                    }
                    break;
                }
                Ok(_) => idle_deadline = Instant::now() + idle,
                Err(error) => {
                    debug!(%peer, %error, "read failed");
                    break;
                }
            },
            () = tokio::time::sleep_until(idle_deadline) => {
                // Idle means nothing read and nothing in flight: a long-polling fetch or
                // a reply still being written keeps the connection busy.
                if inflight.available_permits() == budget {
                    info!(%peer, idle_ms = idle.as_millis() as u64, "closing idle connection (kafka.connections_idle_ms)");
                    break;
                }
                idle_deadline = Instant::now() + idle;
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            // The writer gave up (client gone, or a reply asked to close): stop reading.
            () = queue.closed() => break,
        }
    }
    drop(queue);
    let _ = writer.await;
}

async fn write_replies(
    mut writer: OwnedWriteHalf,
    mut pending: mpsc::Receiver<(Pending, OwnedSemaphorePermit)>,
    peer: SocketAddr,
) {
    while let Some((reply, permit)) = pending.recv().await {
        match reply.await {
            Reply::Respond(bytes) => {
                if let Err(error) = writer.write_all(&bytes).await {
                    debug!(%peer, %error, "write failed");
                    break;
                }
            }
            Reply::Silent => {}
            // Logged with the request's span where the reply was made (see dispatch).
            Reply::Close(_) => break,
        }
        drop(permit);
    }
    let _ = writer.shutdown().await;
}
