//! The admitted connection: the stream, its place in the caps, and its deadlines.
//!
//! The deadlines are kept below HTTP, on the bytes the client sends (after TLS), so that one implementation
//! serves hyper's HTTP/1 and HTTP/2 as axum and tonic drive them (tonic offers no header timeout, and hyper none
//! for HTTP/2). [`RequestWatch`] recognises the end of each request head: a blank line in HTTP/1, a HEADERS or
//! CONTINUATION frame with END_HEADERS in HTTP/2. In HTTP/2 the connection's own head, the preface and the
//! client's first frame (its SETTINGS), counts as the first: gRPC clients connect before their first call (tonic's
//! `connect`, grpc-go's blocking dial), and a connection established that way is idle, not half-sent. The first
//! head must arrive within the header timeout of the connection's admission; each next one within the idle timeout
//! of the previous one. When the deadline passes, reads fail with `TimedOut`, and hyper closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::Permit;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the client is in its byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestWatch {
    /// Not yet known: this many bytes matched the HTTP/2 preface.
    Unknown(usize),
    /// HTTP/1: the last two bytes (to find `\n\n` or `\n\r\n`).
    Http1([u8; 2]),
    /// HTTP/2: a frame header being read, then payload bytes to skip; `settled` once the first frame came.
    Http2 { header: [u8; FRAME_HEADER], filled: usize, skip: usize, settled: bool },
}

impl RequestWatch {
    fn new() -> Self {
        Self::Unknown(0)
    }

    /// Follows `bytes`; true when they end at least one request head.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut ended = false;
        while !bytes.is_empty() {
            match self {
                Self::Unknown(matched) => {
                    let byte = bytes[0];
                    if byte == PREFACE[*matched] {
                        *matched += 1;
                        bytes = &bytes[1..];
                        if *matched == PREFACE.len() {
                            *self = Self::Http2 { header: [0; FRAME_HEADER], filled: 0, skip: 0, settled: false };
                        }
                    } else {
                        // Not HTTP/2: replay what matched so far as HTTP/1 (the byte itself is read next).
                        let seen = PREFACE[..*matched].to_vec();
                        *self = Self::Http1([0; 2]);
                        ended |= self.feed(&seen);
                    }
                }
                Self::Http1(last) => {
                    for &byte in bytes {
                        if byte == b'\n' && (last[1] == b'\n' || (last[1] == b'\r' && last[0] == b'\n')) {
                            ended = true;
                        }
                        *last = [last[1], byte];
                    }
                    bytes = &[];
                }
                Self::Http2 { header, filled, skip, settled } => {
                    if *skip > 0 {
                        let n = (*skip).min(bytes.len());
                        *skip -= n;
                        bytes = &bytes[n..];
                        continue;
                    }
                    let n = (FRAME_HEADER - *filled).min(bytes.len());
                    header[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == FRAME_HEADER {
                        let length =
                            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
                        let (kind, flags) = (header[3], header[4]);
                        if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                            ended = true;
                        }
                        // The preface and the first frame: the connection's head.
                        ended |= !std::mem::replace(settled, true);
                        *filled = 0;
                        *skip = length;
                    }
                }
            }
        }
        ended
    }
}

/// An admitted connection (`S` is a `TcpStream` or a TLS stream over one): reads fail with `TimedOut` once its
/// request deadline passes; dropping it closes the stream and gives its place back.
pub struct Guarded<S> {
    inner: S,
    permit: Permit,
    watch: RequestWatch,
    deadline: Pin<Box<Sleep>>,
    first: bool,
    expired: bool,
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("permit", &self.permit).field("first", &self.first).finish()
    }
}

impl<S> Guarded<S> {
    /// `inner`, holding `permit`, whose first request head is due within the admission's header timeout.
    pub fn new(inner: S, permit: Permit) -> Self {
        let header = permit.admission().timeouts().header;
        Self {
            inner,
            permit,
            watch: RequestWatch::new(),
            deadline: Box::pin(tokio::time::sleep(header)),
            first: true,
            expired: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn timed_out(&mut self) -> io::Error {
        if !self.expired {
            self.expired = true;
            let admission = self.permit.admission();
            admission.closed_idle(self.first);
            tracing::debug!(
                listener = admission.listener(),
                first_request = self.first,
                "closing a connection that sent no request in time"
            );
        }
        io::Error::new(io::ErrorKind::TimedOut, "no request in time")
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Checked before reading too: a client trickling bytes never lets the read be pending.
        if this.expired || this.deadline.is_elapsed() {
            return Poll::Ready(Err(this.timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.watch.feed(&buf.filled()[before..]) {
                    this.first = false;
                    let idle = this.permit.admission().timeouts().idle;
                    this.deadline.as_mut().reset(Instant::now() + idle);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.timed_out())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request in time")));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request in time")));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// tonic reads the peer from the wrapped stream: `Request::remote_addr` (and the per-IP limits) see the same
/// `TcpConnectInfo`, or `TlsConnectInfo` around it, as without the guard.
impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> Vec<bool> {
        let mut watch = RequestWatch::new();
        chunks.iter().map(|c| watch.feed(c)).collect()
    }

    #[test]
    fn http1_heads_end_at_a_blank_line_however_the_bytes_are_split() {
        assert_eq!(ends(&[b"POST /receipts/http HTTP/1.1\r\nHost: x\r\n"]), [false]);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]), [true]);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n", b"\r", b"\n"]), [false, false, false, true]);
        assert_eq!(ends(&[b"GET / HTTP/1.0\n\n"]), [true]);
        // Starts like the HTTP/2 preface, then is not.
        assert_eq!(ends(&[b"PRI * HTTP/2.0\r\n\r\nXX"]), [true]);
        assert_eq!(ends(&[b"PRI * HTTP/1.1\r\nHost: x\r\n"]), [false]);
    }

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn http2_heads_end_at_end_headers_and_payloads_are_skipped() {
        let settings = frame(0x4, 0, &[0; 12]);
        // A DATA frame whose payload looks like a HEADERS frame header.
        let data = frame(0x0, 0, &frame(HEADERS, END_HEADERS, b"")[..9]);
        let open = frame(HEADERS, 0, &[0x82; 20]);
        let cont = frame(CONTINUATION, END_HEADERS, &[0x84; 3]);
        // The preface and the first frame (SETTINGS) are the connection's head; then only request heads count.
        assert_eq!(ends(&[PREFACE, &settings, &data]), [false, true, false]);
        assert_eq!(ends(&[PREFACE, &settings, &open, &cont]), [false, true, false, true]);
        assert_eq!(ends(&[PREFACE, &settings[..8], &settings[8..], &settings]), [false, false, true, false]);
        let mut all = PREFACE.to_vec();
        all.extend(&settings);
        all.extend(frame(HEADERS, END_HEADERS | 0x1, &[0x82; 5]));
        // Byte by byte.
        let mut watch = RequestWatch::new();
        let results: Vec<bool> = all.iter().map(|b| watch.feed(std::slice::from_ref(b))).collect();
        assert_eq!(results.iter().filter(|e| **e).count(), 2);
        assert!(results[results.len() - 1 - 5]);
        // The preface alone is no request.
        assert_eq!(ends(&[PREFACE]), [false]);
    }
}

#[cfg(test)]
mod deadline_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_stream::StreamExt;

    use crate::listen::{Admission, Incoming, ListenSettings, Timeouts};
    use crate::metrics::{ListenerName, Metrics};

    async fn pair(header: Duration, idle: Duration) -> (TcpStream, super::Guarded<TcpStream>, Arc<Metrics>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = ListenSettings {
            max_connections: 4,
            max_connections_per_address: 4,
            max_handshakes_per_address: 1,
            timeouts: Timeouts { header, idle },
            http2_keepalive_interval: Duration::from_secs(1),
            http2_keepalive_timeout: Duration::from_secs(1),
            allowed_hosts: Vec::new(),
            admin_allow: crate::listen::AllowedAddresses::default(),
        };
        let metrics = Arc::new(Metrics::new());
        let mut incoming = Incoming::new(listener, Admission::new(ListenerName::Admin, &settings, metrics.clone()));
        let client = TcpStream::connect(addr).await.unwrap();
        let server = incoming.next().await.unwrap().unwrap();
        (client, server, metrics)
    }

    #[tokio::test]
    async fn a_trickled_request_head_is_cut_off_at_the_header_timeout() {
        let (mut client, mut server, metrics) = pair(Duration::from_millis(300), Duration::from_secs(60)).await;
        let trickle = tokio::spawn(async move {
            for byte in b"POST /receipts/http HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        let error = loop {
            match server.read(&mut buf).await {
                Ok(0) => panic!("the client closed first"),
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(2), "{took:?}");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("otpd_connections_closed_total{listener=\"admin\",reason=\"header_timeout\"} 1"),
            "{text}"
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn a_connection_idle_after_its_request_is_closed_at_the_idle_timeout() {
        let (mut client, mut server, metrics) = pair(Duration::from_millis(200), Duration::from_millis(600)).await;
        client.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(server.read(&mut buf).await.unwrap() > 0);
        // Past the header timeout but within the idle one, the connection is still open.
        let started = tokio::time::Instant::now();
        let error = server.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(3), "{took:?}");
        let text = metrics.encode().unwrap();
        assert!(text.contains("otpd_connections_closed_total{listener=\"admin\",reason=\"idle_timeout\"} 1"), "{text}");
    }
}
