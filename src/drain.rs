//! Closing the listening sockets the moment shutdown begins. tonic's graceful shutdown keeps its incoming stream,
//! and with it the listening socket, until every connection has drained; meanwhile the kernel still completes new
//! connections that nobody will serve, so a client's call hangs until the process exits instead of being refused
//! at once and retried on another replica. The failure drills found this (`tests/api/drills.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

/// Incoming connections from a stream that is dropped, closing its listening socket, when shutdown begins.
pub struct ClosingIncoming<S> {
    inner: Arc<Mutex<Option<Pin<Box<S>>>>>,
}

impl<S: Stream> Stream for ClosingIncoming<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.as_mut() {
            Some(incoming) => incoming.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

/// Wraps `incoming` for `serve_with_incoming_shutdown`: the returned signal completes when `token` is cancelled,
/// after dropping `incoming`, so no new connection is taken while the ones already taken drain.
pub fn close_on_shutdown<S: Stream>(
    incoming: S,
    token: CancellationToken,
) -> (ClosingIncoming<S>, impl Future<Output = ()>) {
    let inner = Arc::new(Mutex::new(Some(Box::pin(incoming))));
    let closer = Arc::clone(&inner);
    let signal = async move {
        token.cancelled().await;
        let incoming = closer.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(incoming);
    };
    (ClosingIncoming { inner }, signal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::TcpListenerStream;

    #[tokio::test]
    async fn connections_are_taken_until_shutdown_then_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let (mut incoming, signal) = close_on_shutdown(TcpListenerStream::new(listener), token.clone());

        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(incoming.next().await.unwrap().is_ok(), "taken before shutdown");

        token.cancel();
        signal.await;
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(incoming.next().await.is_none(), "the stream ends");
    }
}
