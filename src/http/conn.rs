//! What one connection may cost: its phase (waiting for a request head, serving a
//! request, idle between requests), the timeout of each phase in which cardgate
//! waits for the client, and the eviction that lets a new client in when every slot
//! is held by connections that are not in the middle of a request.
//!
//! *Why here and not hyper's own timers:* hyper's `header_read_timeout` starts when
//! it is ready for the next request head, so on a kept-alive connection it counts
//! the idle wait too and a separate, longer idle timeout cannot be had from it (it
//! is still set, as a backstop, by `serve_with`). And eviction needs to know which
//! connections are idle, which only the connection's own task can tell.
//!
//! Each connection's state is one atomic word (phase + since when), so the accept
//! loop (evicting) and the connection's task (starting a request) settle a race with
//! one compare-and-swap; the request's side always wins, because it runs inside the
//! connection's task, which looks at an eviction only between two polls of hyper.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is in its life. Stored in the top bits of [`Conn::word`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head: from the open, or from the first byte of the next
    /// request. Bounded by the header-read timeout; evictable.
    Reading = 0,
    /// A request head arrived; its handler runs (its own deadlines bound it).
    Busy = 1,
    /// Answered, waiting for the next request. Bounded by the idle timeout; evictable.
    Idle = 2,
    /// Evicted or timed out: its task drops it at its next poll.
    Closed = 3,
}

const PHASE_SHIFT: u32 = 62;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

fn pack(phase: Phase, since_us: u64) -> u64 {
    ((phase as u64) << PHASE_SHIFT) | (since_us & SINCE_MASK)
}

fn unpack(word: u64) -> (Phase, u64) {
    let phase = match word >> PHASE_SHIFT {
        0 => Phase::Reading,
        1 => Phase::Busy,
        2 => Phase::Idle,
        _ => Phase::Closed,
    };
    (phase, word & SINCE_MASK)
}

/// The two client-side waits a connection may cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Open (or first byte of a request) → complete request head.
    pub header_read: Duration,
    /// Answered → first byte of the next request.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// `[http]`'s defaults.
    fn default() -> Self {
        crate::config::HttpConfig::default().into()
    }
}

impl From<crate::config::HttpConfig> for Timeouts {
    fn from(http: crate::config::HttpConfig) -> Self {
        Timeouts {
            header_read: http.header_read_timeout,
            idle: http.idle_timeout,
        }
    }
}

/// Why a connection was closed by cardgate rather than by its client or hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Its request head did not arrive within the header-read timeout.
    HeaderTimeout,
    /// It sent nothing for the idle timeout after its last answer.
    IdleTimeout,
    /// A new client needed its slot.
    Evicted,
}

impl Closed {
    /// For logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_read_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
        }
    }
}

/// One served connection's state, shared by its task, its socket wrapper and the
/// registry the accept loop evicts from.
pub(crate) struct Conn {
    /// `Phase` in the top two bits, the phase's start in microseconds since
    /// `epoch` in the rest (a connection and its successor on localhost can be
    /// less than a millisecond apart, and "oldest" must still tell them apart).
    word: AtomicU64,
    /// Wakes the connection's watcher after a change it cannot see coming (the end
    /// of a request, an eviction); `notify_one` keeps a permit when nobody waits.
    wake: Notify,
    epoch: Instant,
}

impl Conn {
    fn new(epoch: Instant) -> Conn {
        let conn = Conn {
            word: AtomicU64::new(0),
            wake: Notify::new(),
            epoch,
        };
        conn.word
            .store(pack(Phase::Reading, conn.now_us()), Ordering::Release);
        conn
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(SINCE_MASK)
    }

    #[cfg(test)]
    fn load(&self) -> (Phase, u64) {
        unpack(self.word.load(Ordering::Acquire))
    }

    /// Bytes arrived: an idle connection starts reading its next request head.
    fn on_bytes(&self) {
        let word = self.word.load(Ordering::Acquire);
        if unpack(word).0 == Phase::Idle {
            // Losing this race to an eviction is fine: the connection closes anyway.
            let _ = self.word.compare_exchange(
                word,
                pack(Phase::Reading, self.now_us()),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// A complete request head arrived. Wins over an eviction not yet acted on: the
    /// request is served (the accept loop then evicts another connection).
    pub(crate) fn start_request(&self) {
        self.word
            .store(pack(Phase::Busy, self.now_us()), Ordering::Release);
    }

    /// The handler answered; the connection waits for its next request.
    pub(crate) fn finish_request(&self) {
        self.word
            .store(pack(Phase::Idle, self.now_us()), Ordering::Release);
        self.wake.notify_one();
    }

    /// Marks the connection closed if it is still exactly `word`.
    fn close(&self, word: u64) -> bool {
        let (_, since) = unpack(word);
        let closed = self
            .word
            .compare_exchange(
                word,
                pack(Phase::Closed, since),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if closed {
            self.wake.notify_one();
        }
        closed
    }

    /// Resolves when the connection must be closed: a phase in which cardgate waits
    /// for the client outlived its timeout, or the connection was evicted. Never
    /// resolves while a request is being served.
    ///
    /// One timer serves the connection's life, moved only when it would fire too
    /// late: each answer moves the deadline later, and re-arming per request (a
    /// removal from the timer wheel and an insertion, under its lock) cost more than
    /// the early wake-up it avoids, which happens at most once per timeout.
    pub(crate) async fn expired(&self, timeouts: Timeouts) -> Closed {
        let sleep = tokio::time::sleep_until(self.epoch);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let word = self.word.load(Ordering::Acquire);
            let (phase, since) = unpack(word);
            let (limit, reason) = match phase {
                Phase::Closed => return Closed::Evicted,
                Phase::Busy => {
                    self.wake.notified().await;
                    continue;
                }
                Phase::Reading => (timeouts.header_read, Closed::HeaderTimeout),
                Phase::Idle => (timeouts.idle, Closed::IdleTimeout),
            };
            let deadline = self.epoch + Duration::from_micros(since) + limit;
            if armed.is_none_or(|at| at > deadline) {
                sleep.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            tokio::select! {
                () = &mut sleep => {
                    armed = None;
                    // Still the same phase since the same instant, and its own
                    // deadline passed (not an earlier phase's): no progress.
                    if Instant::now() >= deadline && self.close(word) {
                        return reason;
                    }
                }
                () = self.wake.notified() => {}
            }
        }
    }
}

/// Every open connection of one listener, for eviction.
pub(crate) struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    epoch: Instant,
}

/// A connection's entry in the [`Registry`]; removes itself when dropped.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: u64,
    /// The connection's state.
    pub conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    pub(crate) fn new() -> Arc<Registry> {
        Arc::new(Registry {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a freshly accepted connection (phase: reading its first request head).
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.epoch));
        self.lock().insert(id, conn.clone());
        Registration {
            registry: self.clone(),
            id,
            conn,
        }
    }

    /// Closes the connection that has waited longest without a request in flight
    /// (idle, or still sending its request head). False when every connection is
    /// serving a request: then nothing may be taken from anyone.
    pub(crate) fn evict_oldest_waiting(&self) -> bool {
        // A lost race (the victim started a request meanwhile) picks again; a few
        // rounds are plenty, the next accept tries anew.
        for _ in 0..4 {
            let victim = self
                .lock()
                .iter()
                .filter_map(|(id, c)| {
                    let word = c.word.load(Ordering::Acquire);
                    match unpack(word) {
                        // Ties go to the connection accepted first.
                        (Phase::Idle | Phase::Reading, since) => {
                            Some(((since, *id), word, c.clone()))
                        }
                        _ => None,
                    }
                })
                .min_by_key(|(age, _, _)| *age);
            let Some((_, word, conn)) = victim else {
                return false;
            };
            if conn.close(word) {
                return true;
            }
        }
        false
    }
}

/// A socket that tells its [`Conn`] when bytes arrive, so an idle connection's
/// header-read timeout starts at the next request's first byte.
pub(crate) struct Watched<T> {
    io: T,
    conn: Arc<Conn>,
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, conn: Arc<Conn>) -> Self {
        Watched { io, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_bytes();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time with short limits (the crate's tokio has no paused clock): every
    // assertion allows scheduling slack upwards only.
    const T: Timeouts = Timeouts {
        header_read: Duration::from_millis(60),
        idle: Duration::from_millis(150),
    };

    fn took(started: Instant, limit: Duration) {
        let took = started.elapsed();
        assert!(
            took >= limit && took < limit + Duration::from_millis(500),
            "closed after {took:?}, limit {limit:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_closes_at_the_header_timeout() {
        let r = Registry::new();
        let reg = r.register();
        let started = Instant::now();
        assert_eq!(reg.conn.expired(T).await, Closed::HeaderTimeout);
        took(started, T.header_read);
    }

    #[tokio::test]
    async fn idle_waits_the_idle_timeout_and_a_first_byte_starts_the_header_clock() {
        let r = Registry::new();
        let reg = r.register();
        reg.conn.start_request();
        reg.conn.finish_request();
        let started = Instant::now();
        assert_eq!(reg.conn.expired(T).await, Closed::IdleTimeout);
        took(started, T.idle);

        let reg = r.register();
        reg.conn.start_request();
        reg.conn.finish_request();
        let conn = reg.conn.clone();
        let first_byte = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.on_bytes();
            Instant::now()
        });
        assert_eq!(reg.conn.expired(T).await, Closed::HeaderTimeout);
        took(first_byte.await.unwrap(), T.header_read);
    }

    #[tokio::test]
    async fn a_request_in_flight_never_expires_and_is_never_evicted() {
        let r = Registry::new();
        let reg = r.register();
        reg.conn.start_request();
        let waited = tokio::time::timeout(T.idle * 2, reg.conn.expired(T)).await;
        assert!(waited.is_err(), "a busy connection expired");
        assert!(!r.evict_oldest_waiting());
        assert_eq!(reg.conn.load().0, Phase::Busy);
        // Answered: from now on it is idle, and its timeout runs.
        reg.conn.finish_request();
        assert_eq!(reg.conn.expired(T).await, Closed::IdleTimeout);
    }

    #[tokio::test]
    async fn eviction_takes_the_longest_waiting_and_a_request_beats_it() {
        let r = Registry::new();
        let old = r.register();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = r.register();
        busy.conn.start_request();
        let young = r.register();
        assert!(r.evict_oldest_waiting());
        assert_eq!(old.conn.load().0, Phase::Closed);
        assert_eq!(old.conn.expired(T).await, Closed::Evicted);
        assert_eq!(young.conn.load().0, Phase::Reading);
        // Evicted, but its request head arrived before its task looked: served.
        assert!(r.evict_oldest_waiting());
        young.conn.start_request();
        assert_eq!(young.conn.load().0, Phase::Busy);
        drop(old);
        assert_eq!(r.lock().len(), 2);
    }
}
