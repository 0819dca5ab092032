//! A WebSocket of binary messages as a byte stream: each binary message is
//! a chunk of the stream, an empty one is EOF of that direction (a
//! WebSocket has no half close), and a close frame ends both. Clients reach
//! a relayed stream over such a WebSocket (`…/workspaces/{name}/connect`).

use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

use super::MAX_CHUNK;

/// What a WebSocket message is to the byte stream.
pub enum Frame {
    /// Bytes of the stream.
    Bytes(Vec<u8>),
    /// The other side is done.
    Close,
    /// Anything else (pings, pongs, text): skipped.
    Other,
}

/// Bridges `ws` to the returned byte stream until either side ends.
/// `binary` makes a message of bytes and `close` a close message;
/// `frame` says what a message is.
pub fn bridge<W, M, E>(
    ws: W,
    binary: fn(Vec<u8>) -> M,
    close: fn() -> M,
    frame: fn(M) -> Frame,
) -> DuplexStream
where
    W: Sink<M> + Stream<Item = Result<M, E>> + Send + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    let (near, far) = tokio::io::duplex(4 * MAX_CHUNK);
    let (mut sink, mut stream) = ws.split();
    let (mut r, mut w) = tokio::io::split(far);
    tokio::spawn(async move {
        // Stream → WebSocket; an empty binary message is EOF (a WebSocket
        // has no half close, and a stream needs one).
        let up = async {
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(binary(buf[..n].to_vec())).await.is_err() {
                            return false;
                        }
                    }
                }
            }
            sink.send(binary(Vec::new())).await.is_ok()
        };
        // WebSocket → stream.
        let closed = std::sync::atomic::AtomicBool::new(true);
        let down = async {
            while let Some(Ok(m)) = stream.next().await {
                match frame(m) {
                    Frame::Bytes(b) if b.is_empty() => {
                        closed.store(false, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    Frame::Bytes(b) => {
                        if w.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Frame::Close => break,
                    Frame::Other => {}
                }
            }
            let _ = w.shutdown().await;
        };
        // A close (or a failure) from the WebSocket ends both directions;
        // a half close waits for the other direction.
        let open = {
            tokio::pin!(up, down);
            tokio::select! {
                open = &mut up => {
                    if open {
                        (&mut down).await;
                    }
                    open
                }
                () = &mut down => {
                    if closed.load(std::sync::atomic::Ordering::Relaxed) {
                        false
                    } else {
                        (&mut up).await
                    }
                }
            }
        };
        if open {
            let _ = sink.send(close()).await;
        }
    });
    near
}

/// [`bridge`] for the operator's (axum) WebSockets.
pub fn axum_io(ws: axum::extract::ws::WebSocket) -> DuplexStream {
    use axum::extract::ws::Message;
    bridge(
        ws,
        |b| Message::Binary(b.into()),
        || Message::Close(None),
        |m| match m {
            Message::Binary(b) => Frame::Bytes(b.to_vec()),
            Message::Close(_) => Frame::Close,
            _ => Frame::Other,
        },
    )
}

/// [`bridge`] for a client's (tungstenite) WebSocket.
pub fn tungstenite_io<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio_tungstenite::tungstenite::Message;
    bridge(
        ws,
        |b| Message::Binary(b.into()),
        || Message::Close(None),
        |m| match m {
            Message::Binary(b) => Frame::Bytes(b.to_vec()),
            Message::Close(_) => Frame::Close,
            _ => Frame::Other,
        },
    )
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The request failed.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The server answered without upgrading (with its status and message).
    #[error("{status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's message (its `Status` JSON's `message`, else the body).
        message: String,
    },
}

/// A client WebSocket over reqwest's HTTP/1.1 upgrade (so `https` uses the
/// same TLS as every other request), with `headers` (the bearer token goes
/// in one, never in the URL).
pub async fn dial(
    client: &reqwest::Client,
    url: &str,
    headers: reqwest::header::HeaderMap,
) -> Result<tokio_tungstenite::WebSocketStream<reqwest::Upgraded>, DialError> {
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    let resp = client
        .get(url)
        .headers(headers)
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "websocket")
        .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
        .header(
            reqwest::header::SEC_WEBSOCKET_KEY,
            crate::agent::conn::websocket_key(),
        )
        .send()
        .await?;
    let status = resp.status().as_u16();
    if status != 101 {
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| body.chars().take(300).collect());
        return Err(DialError::Refused { status, message });
    }
    let upgraded = resp.upgrade().await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(4 * MAX_CHUNK))
        .max_frame_size(Some(4 * MAX_CHUNK));
    Ok(
        tokio_tungstenite::WebSocketStream::from_raw_socket(upgraded, Role::Client, Some(config))
            .await,
    )
}
