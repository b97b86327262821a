//! The accept loop every listener runs, and the life of one connection in it.
//!
//! - At most `max_connections` connections are served at once. One more is accepted and closed
//!   at once rather than left in the kernel's backlog: a backlog full of a flood's handshakes
//!   would make a later, honest client wait behind all of them, while a closed connection tells
//!   it straight away to retry.
//! - An accept error about the process rather than one connection (EMFILE, ENFILE, ENOBUFS,
//!   ENOMEM) pauses accepting, 5 ms doubling up to 1 s, and is logged at most every 10 s.
//! - A connection that has not sent a complete first request header within
//!   `read_header_timeout` (HTTP/2: its first request) is shut down: closed if it sent nothing,
//!   sent GOAWAY otherwise, and closed [`DRAIN_GRACE`] later whatever the client does.
//! - A connection with no request in flight for `idle_timeout` is shut down gracefully (HTTP/1:
//!   closed; HTTP/2: GOAWAY). So is one older than `max_connection_age`; whatever is still in
//!   flight `max_connection_age_grace` later is cut off.
//! - On shutdown the listening socket closes, every connection finishes the requests in flight
//!   and closes, and [`serve`] returns once all of them are gone.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::MAX_CONNECTIONS_LIMIT;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection being shut down may stay open with nothing in flight (a client that
/// never answers a GOAWAY, a request header that never ends).
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A recurring warning (accept errors, connections over the limit) is logged this often at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// HTTP/2 PINGs to a quiet client: after `interval` without a frame, ping; no answer within
/// `timeout` closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// How one listener treats its connections (built from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub read_header_timeout: Duration,
    /// With no request in flight for this long, a connection is shut down gracefully.
    pub idle_timeout: Duration,
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Option<Duration>,
    pub http2_keepalive: Option<Http2Keepalive>,
    /// gRPC speaks HTTP/2 only (with prior knowledge).
    pub http2_only: bool,
}

impl ConnectionLimits {
    /// The limits of a plain HTTP listener (HTTP/1 and HTTP/2, no connection age or pings).
    pub fn http(max_connections: usize, read_header_timeout: Duration, idle_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            read_header_timeout,
            idle_timeout,
            max_connection_age: None,
            max_connection_age_grace: None,
            http2_keepalive: None,
            http2_only: false,
        }
    }
}

/// The two ends of an accepted connection, for the service that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// Serves HTTP/1 and HTTP/2 on an already bound listener until `shutdown` resolves, then waits
/// for the connections to finish. `make_service` builds the service of each connection.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    name: &str,
    limits: ConnectionLimits,
    mut make_service: M,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    M: FnMut(Peer) -> S,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let local = listener.local_addr()?;
    let capacity = limits.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let permits = Arc::new(Semaphore::new(capacity));
    let builder = Arc::new(http_builder(&limits));
    let limits = Arc::new(limits);
    let closing = CancellationToken::new();
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    let mut accept_errors = Throttled::default();
    let mut over_limit = Throttled::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            // Shutdown: accept nothing more.
            () = &mut shutdown => break,
            // A connection, or the reason none could be accepted.
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                accepted
            }
            // That one client gave up before it was accepted; the next may be fine.
            Err(error) if is_connection_error(&error) => continue,
            // Out of descriptors or memory: retrying at once would spin until something closes.
            Err(error) => {
                if let Some(suppressed) = accept_errors.due() {
                    let pause_ms = backoff.as_millis() as u64;
                    tracing::warn!(%error, listener = %name, pause_ms, suppressed, "cannot accept connections; pausing");
                }
                let pause = backoff;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(suppressed) = over_limit.due() {
                tracing::warn!(listener = %name, max_connections = capacity, %remote, suppressed, "connection limit reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        // Replies are small: without TCP_NODELAY they can wait ~40 ms for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let service = make_service(Peer { remote, local: stream.local_addr().unwrap_or(local) });
        tokio::spawn(serve_connection(stream, service, builder.clone(), limits.clone(), closing.clone(), permit));
    }
    // Closing the listening socket refuses new clients at once instead of leaving them queued.
    drop(listener);
    closing.cancel();
    // Each connection holds a permit until it is gone. `capacity` fits: it is at most a million.
    let _ = permits.acquire_many(capacity as u32).await;
    Ok(())
}

/// [`serve`] for an axum router (the API, OTLP/HTTP): handlers find the client's address in
/// `ConnectInfo<SocketAddr>`, as under axum's own server.
pub async fn serve_router(
    listener: TcpListener,
    name: &str,
    limits: ConnectionLimits,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let make_service = move |peer: Peer| {
        tower::ServiceExt::map_request(router.clone(), move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer.remote));
            request
        })
    };
    serve(listener, name, limits, make_service, shutdown).await
}

/// Errors of one pending connection (the client reset it before it was accepted).
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if limits.http2_only {
        builder = builder.http2_only();
    }
    // hyper's own HTTP/1 header timeout restarts on every keep-alive wait, which would cut
    // `idle_timeout` short; `serve_connection` enforces both instead.
    builder.http1().header_read_timeout(None);
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new());
    if let Some(keepalive) = limits.http2_keepalive {
        http2.keep_alive_interval(keepalive.interval).keep_alive_timeout(keepalive.timeout);
    }
    builder
}

/// What a connection has been doing, as its service reports it.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests whose header arrived, ever.
    requests: u64,
    /// Requests whose response (body included) is not finished.
    in_flight: usize,
    /// When `in_flight` last fell to 0 (or the connection was accepted).
    idle_since: Instant,
}

/// A connection being shut down: since when, and when whatever is in flight is cut off.
#[derive(Debug, Clone, Copy)]
struct Drain {
    since: Instant,
    cut_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Drop the connection.
    Close,
    /// Shut it down gracefully.
    Drain { cut_at: Option<Instant> },
}

/// The next deadline of a connection and what happens then.
fn next_step(limits: &ConnectionLimits, accepted: Instant, activity: &Activity, drain: Option<Drain>) -> Option<(Instant, Step)> {
    let earliest = |a: Option<(Instant, Step)>, b: Option<(Instant, Step)>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    if let Some(drain) = drain {
        // max_connection_age_grace is over: cut off what is still in flight.
        let cut = drain.cut_at.map(|at| (at, Step::Close));
        // Nothing in flight: close even if the client ignores the GOAWAY or never ends its header.
        let quiet = (activity.in_flight == 0).then(|| (drain.since.max(activity.idle_since) + DRAIN_GRACE, Step::Close));
        return earliest(cut, quiet);
    }
    let waiting = if activity.requests == 0 {
        Some((accepted + limits.read_header_timeout, Step::Drain { cut_at: None }))
    } else if activity.in_flight == 0 {
        Some((activity.idle_since + limits.idle_timeout, Step::Drain { cut_at: None }))
    } else {
        None
    };
    let aged = limits.max_connection_age.map(|age| {
        let cut_at = limits.max_connection_age_grace.map(|grace| accepted + age + grace);
        (accepted + age, Step::Drain { cut_at })
    });
    earliest(waiting, aged)
}

/// Serves one connection until it closes, enforcing the limits' deadlines.
async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<ConnectionLimits>,
    closing: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let accepted = Instant::now();
    let (activity, mut changes) = watch::channel(Activity { requests: 0, in_flight: 0, idle_since: accepted });
    let service = TowerToHyperService::new(Tracked { inner: service, activity: Arc::new(activity) });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut drain: Option<Drain> = None;
    let mut watching = true;
    loop {
        let activity = *changes.borrow_and_update();
        let next = next_step(&limits, accepted, &activity, drain);
        tokio::select! {
            // The connection is over: the client closed it, or it finished shutting down.
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            // The listener shuts down: finish what is in flight, take nothing new.
            () = closing.cancelled(), if drain.is_none() => {
                connection.as_mut().graceful_shutdown();
                drain = Some(Drain { since: Instant::now(), cut_at: None });
            }
            // A request started or finished: the deadlines move.
            changed = changes.changed(), if watching => watching = changed.is_ok(),
            // A deadline passed.
            () = sleep_until(next.map(|(at, _)| at)) => match next {
                Some((_, Step::Drain { cut_at })) => {
                    connection.as_mut().graceful_shutdown();
                    drain = Some(Drain { since: Instant::now(), cut_at });
                }
                Some((_, Step::Close)) | None => return,
            },
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A connection's service that reports each request to the connection's deadlines.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<watch::Sender<Activity>>,
}

/// One request in flight, until its response body is finished or dropped.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: &Arc<watch::Sender<Activity>>) -> InFlight {
        activity.send_modify(|a| {
            a.requests += 1;
            a.in_flight += 1;
        });
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
            }
        });
    }
}

impl<S, B> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TrackedBody { inner, _in_flight: in_flight }))
        })
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A warning that may recur often: [`Throttled::due`] says when to log it, and how many
/// occurrences were not logged since.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 10,
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connection_age: Some(Duration::from_secs(600)),
            max_connection_age_grace: Some(Duration::from_secs(30)),
            http2_keepalive: None,
            http2_only: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_through_its_life() {
        let t0 = Instant::now();
        let l = limits();
        let fresh = Activity { requests: 0, in_flight: 0, idle_since: t0 };
        // No header yet: read_header_timeout.
        let (at, step) = next_step(&l, t0, &fresh, None).unwrap();
        assert_eq!(at, t0 + Duration::from_secs(10));
        assert!(matches!(step, Step::Drain { cut_at: None }));
        // A request in flight: only the age limit, with its grace.
        let busy = Activity { requests: 1, in_flight: 1, idle_since: t0 };
        let (at, step) = next_step(&l, t0, &busy, None).unwrap();
        assert_eq!(at, t0 + Duration::from_secs(600));
        assert!(matches!(step, Step::Drain { cut_at: Some(cut) } if cut == t0 + Duration::from_secs(630)));
        // Idle after a request: idle_timeout from when it went quiet.
        let idle = Activity { requests: 1, in_flight: 0, idle_since: t0 + Duration::from_secs(5) };
        assert_eq!(next_step(&l, t0, &idle, None).unwrap().0, t0 + Duration::from_secs(65));
        // Draining with nothing in flight: closed DRAIN_GRACE later; with a request in flight,
        // only the grace of max_connection_age cuts it off.
        let drain = Drain { since: t0 + Duration::from_secs(100), cut_at: None };
        let (at, step) = next_step(&l, t0, &idle, Some(drain)).unwrap();
        assert_eq!(at, t0 + Duration::from_secs(100) + DRAIN_GRACE);
        assert!(matches!(step, Step::Close));
        assert!(next_step(&l, t0, &busy, Some(drain)).is_none());
        let cut = Drain { since: t0, cut_at: Some(t0 + Duration::from_secs(630)) };
        assert_eq!(next_step(&l, t0, &busy, Some(cut)).unwrap().0, t0 + Duration::from_secs(630));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recurring_warning_is_logged_every_ten_seconds_with_the_count_in_between() {
        let mut warning = Throttled::default();
        assert_eq!(warning.due(), Some(0));
        assert_eq!(warning.due(), None);
        assert_eq!(warning.due(), None);
        tokio::time::advance(WARN_EVERY).await;
        assert_eq!(warning.due(), Some(2));
    }
}
