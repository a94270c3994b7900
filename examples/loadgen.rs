//! A fixed-rate (open-loop) HTTP load generator for `scripts/bench`: it offers a
//! server R requests per second and reports the latency each one saw, so that
//! issue 19's "p99 at 50 % of max" can be measured at all. wrk runs closed-loop
//! (each connection sends its next request when the last one is answered, so a
//! slow server is offered less and its stalls hide: coordinated omission), k6
//! tops out near 3.5k req/s signing in JavaScript, and wrk2 is not packaged.
//!
//! Request k is due at `t0 + k/R` whatever has been answered. It goes out on a
//! free keep-alive connection; when all are busy it waits for one, and its latency
//! still counts from when it was due, so a stalled server shows as latency, not as
//! a lower offered rate. The bodies come pre-signed (`load-tests/wrk_events.py
//! jsonl N SECRET OUT.jsonl`): the generator does no HMAC work.
//!
//! `--rate max` runs closed-loop instead: each connection sends its next request
//! as soon as its last one is answered, for the duration, and the result is the
//! rate the server sustained. That is wrk's measurement, but over the events file
//! in order, so a file as long as the run makes every request a distinct event
//! (wrk's Lua table cannot hold that many signed bodies); `resent` in the result
//! counts measured requests that re-sent an event because the file ran out.
//!
//! It runs on one thread (a tokio `current_thread` runtime) so that `taskset` to
//! one core is an honest statement of what it uses, and it only ever talks to
//! loopback addresses: it is a benchmark tool, not a way to load someone else's
//! server.
//!
//! `--server-pid PID` also reads how much CPU the server's threads ran during the
//! measured part (`/proc/PID/task/*/schedstat`, exact nanoseconds) and adds
//! `server_cpu_us=… server_busy=…` (the share of one core) to the result. On a box
//! where the generator's core is the limit (a 2-core machine, a cheap server) the
//! server is not saturated and req/s measures the generator; its CPU time per
//! request still measures the server.
//!
//! Run: `cargo run --release --example loadgen -- --url http://127.0.0.1:PORT
//! --events events.jsonl --rate 5000 --duration 10s`. Prints one line,
//! `LOADGEN_RESULT offered=… achieved=… sent=… answered=… bad=… errors=… late=…
//! p50_us=… p99_us=… p999_us=… max_us=… resent=…[ server_cpu_us=… server_busy=…]`, and exits 1 if any answer was bad or any
//! request failed.

use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where requests go when the URL names no path: cardgate's webhook endpoint.
const DEFAULT_PATH: &str = "/webhooks/stripe";

/// A request that leaves later than this after it was due counts as `late`: the
/// generator (or a shortage of free connections) shifted the offered schedule.
const LATE: Duration = Duration::from_millis(1);

/// tokio's timer fires on whole milliseconds; further than this from the next due
/// time the pacer sleeps on it, closer it yields to the runtime in a loop (see
/// [`pace_until`]).
const COARSE: Duration = Duration::from_millis(1);

/// How long the run waits, after the last request was due, for the answers still
/// outstanding; those still missing then count as errors.
const DRAIN: Duration = Duration::from_secs(10);

/// What the body of a good answer contains (unless `--no-check`): cardgate's
/// decision field, as `load-tests/wrk.lua` checks it.
const APPROVED: &[u8] = b"\"approved\"";

/// Fixed-rate (open-loop) load generator for cardgate's benchmarks.
///
/// Request k is sent at start + k/RATE whatever has been answered, on a free
/// keep-alive connection; if all are busy it waits, and its latency still counts
/// from when it was due (no coordinated omission). Answers must be 200 and contain
/// "approved" (unless --no-check). Prints one LOADGEN_RESULT line on stdout; exits
/// 1 if any answer was bad or any request failed. Only loopback targets are
/// accepted.
#[derive(Debug, Parser)]
#[command(name = "loadgen", verbatim_doc_comment)]
#[allow(
    clippy::doc_markdown,
    reason = "these doc comments are the --help text, read in a terminal, not rendered"
)]
struct Args {
    /// Server to load, e.g. http://127.0.0.1:8080 (host: a loopback IP or
    /// localhost). Without a path, requests go to /webhooks/stripe.
    #[arg(long)]
    url: String,
    /// Pre-signed events, one JSON object {"body": "...", "signature": "t=...,v1=..."}
    /// a line (load-tests/wrk_events.py jsonl N SECRET OUT.jsonl); cycled over if
    /// the run needs more requests than there are lines.
    #[arg(long)]
    events: PathBuf,
    /// Requests per second offered, counted from the scheduled times; or `max`:
    /// closed loop, each connection sending its next request when its last one
    /// is answered (the server's maximum; latencies then count from sending).
    #[arg(long, value_parser = parse_rate)]
    rate: Rate,
    /// How long the measured part of the run offers load (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive connections to spread the requests over (opened before the
    /// first request is due).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Load offered at the same rate before the measured part: sent and checked
    /// (bad answers and errors count), but not in sent/answered/late or the
    /// percentiles.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Only require status 200, not "approved" in the body (for servers that are
    /// not cardgate, such as nginx answering a constant).
    #[arg(long)]
    no_check: bool,
    /// Also measure the CPU time this process's threads (the server's, on this
    /// machine) run during the measured part: server_cpu_us and server_busy (of
    /// one core) in the result. Linux only (/proc/PID/task/*/schedstat).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

fn main() -> ExitCode {
    match run_cli() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Parses and checks everything before the first connection, runs, prints the
/// result; `Ok(false)` when an answer was bad or a request failed.
fn run_cli() -> anyhow::Result<bool> {
    let args = Args::parse();
    let target = Target::parse(&args.url)?;
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let server = args.server_pid.map(ServerCpu::open).transpose()?;
    let events = load_events(&args.events)?;
    let plan = Plan {
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        connections: args.connections,
        check: !args.no_check,
        server,
    };
    eprintln!(
        "loadgen: {} req/s to {} for {} (+{} warm-up) over {} connections, {} events",
        plan.rate,
        args.url,
        humantime::format_duration(plan.duration),
        humantime::format_duration(plan.warmup),
        plan.connections,
        events.len()
    );
    let report = generate(&target, &events, &plan)?;
    println!("{}", report.line(&plan.rate));
    std::io::stdout().flush()?;
    Ok(report.bad + report.errors == 0)
}

// === impl Target ===

/// Where the requests go, checked to be on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    addr: SocketAddr,
    /// The `Host` header: the URL's authority as given.
    host: HeaderValue,
    /// Path and query of every request.
    path: Uri,
}

impl Target {
    /// Accepts `http://HOST[:PORT][/PATH]` whose host is a loopback IP literal
    /// (127.0.0.0/8 or `::1`) or `localhost`, which is taken as 127.0.0.1 without
    /// asking a resolver (so no name can lead elsewhere).
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url {url:?}: only http:// is supported");
        }
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            bail!("--url {url:?}: no host");
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            literal.parse::<IpAddr>().map_err(|_| {
                anyhow::anyhow!("--url {url:?}: the host must be a loopback IP or localhost")
            })?
        };
        let loopback = match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => v6.is_loopback(),
        };
        if !loopback {
            bail!("--url {url:?}: {ip} is not a loopback address; loadgen only loads this machine");
        }
        let port = uri.port_u16().unwrap_or(80);
        let path = match uri
            .path_and_query()
            .map(hyper::http::uri::PathAndQuery::as_str)
        {
            None | Some("" | "/") => Uri::from_static(DEFAULT_PATH),
            Some(p) => p.parse().with_context(|| format!("--url {url:?}: path"))?,
        };
        let host = HeaderValue::from_str(authority.as_str())
            .with_context(|| format!("--url {url:?}: host"))?;
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host,
            path,
        })
    }
}

// === events ===

/// One pre-signed webhook: the body bytes as sent and its `Stripe-Signature`.
#[derive(Debug, Clone)]
struct Event {
    body: Bytes,
    signature: HeaderValue,
}

/// A line of the events file, as `wrk_events.py jsonl` writes it.
#[derive(serde::Deserialize)]
struct EventLine {
    body: String,
    signature: String,
}

/// Reads every event up front: nothing is parsed or allocated per request beyond
/// the request itself (the body is a shared `Bytes`). Line by line, so a file of
/// hundreds of MB is not held twice.
fn load_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.with_context(at)?;
        if line.trim().is_empty() {
            continue;
        }
        let e: EventLine = serde_json::from_str(&line).with_context(at)?;
        events.push(Event {
            body: Bytes::from(e.body),
            signature: HeaderValue::from_str(&e.signature).with_context(at)?,
        });
    }
    if events.is_empty() {
        bail!("{}: no events", path.display());
    }
    Ok(events)
}

// === the run ===

/// What to offer.
#[derive(Debug, Clone)]
struct Plan {
    rate: Rate,
    warmup: Duration,
    duration: Duration,
    connections: usize,
    check: bool,
    /// The server process whose CPU time the measured part counts.
    server: Option<ServerCpu>,
}

impl Plan {
    /// (requests in the warm-up, requests in all): request k belongs to the part
    /// its due time `k/R` falls in, so the counts are `⌈warmup·R⌉` and
    /// `⌈(warmup + duration)·R⌉`.
    fn counts(&self, rate: f64) -> (u64, u64) {
        let warm = requests_before(self.warmup, rate);
        (warm, requests_before(self.warmup + self.duration, rate))
    }
}

/// How load is offered: at a fixed rate (open loop) or as fast as answers come
/// back (closed loop).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    /// Requests per second, positive and finite.
    Fixed(f64),
    /// Closed loop: the server's maximum.
    Max,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Fixed(r) => write!(f, "{r:.1}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// `--rate`: a positive number of requests per second, or `max`.
fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::Fixed(r)),
        _ => Err(format!(
            "{s:?}: a positive number of requests per second, or `max`"
        )),
    }
}

/// How many of the requests 0, 1, 2, … fall due before `span` at `rate`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rate is checked positive and finite; a run of 2^64 requests is not a run"
)]
fn requests_before(span: Duration, rate: f64) -> u64 {
    (span.as_secs_f64() * rate).ceil() as u64
}

/// When request k is due, counted from the start: k/R seconds.
#[allow(
    clippy::cast_precision_loss,
    reason = "k stays far below 2^53, where f64 is exact"
)]
fn due_offset(k: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(k as f64 / rate)
}

// === the server's CPU time ===

/// A process on this machine whose threads' CPU time is read from
/// `/proc/PID/task/*/schedstat` (first field: nanoseconds on a CPU, exact, where
/// `/proc/PID/stat` counts 10 ms ticks). A thread that ends between two readings
/// takes its time along, so this counts the threads that live through the run:
/// a server's workers do.
#[derive(Debug, Clone)]
struct ServerCpu {
    pid: u32,
}

/// The server's CPU use over the measured part.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ServerUse {
    /// CPU time its threads ran.
    cpu: Duration,
    /// `cpu` ÷ the wall time between the two readings: 1.0 is one core busy.
    busy: f64,
}

impl ServerCpu {
    /// Checks that the process is there and readable, before the run starts.
    fn open(pid: u32) -> anyhow::Result<Self> {
        let server = ServerCpu { pid };
        server
            .read()
            .with_context(|| format!("--server-pid {pid}"))?;
        Ok(server)
    }

    /// CPU time all of its threads have run so far.
    fn read(&self) -> anyhow::Result<Duration> {
        let dir = format!("/proc/{}/task", self.pid);
        let mut ns = 0u64;
        for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
            let path = entry.with_context(|| dir.clone())?.path().join("schedstat");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // The thread ended between listing and reading.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| path.display().to_string()),
            };
            let on_cpu = schedstat_on_cpu_ns(&text)
                .with_context(|| format!("{}: not a schedstat line: {text:?}", path.display()))?;
            ns = ns.saturating_add(on_cpu);
        }
        Ok(Duration::from_nanos(ns))
    }
}

/// The first field of a `schedstat` line (`"ON_CPU_NS WAITING_NS TIMESLICES"`).
fn schedstat_on_cpu_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Starts reading the server's CPU time at `from` (a task on the run's thread);
/// [`finish_cpu`] reads it again at the end.
fn start_cpu(
    server: Option<&ServerCpu>,
    from: Instant,
) -> Option<tokio::task::JoinHandle<(Instant, anyhow::Result<Duration>)>> {
    let server = server?.clone();
    Some(tokio::task::spawn_local(async move {
        tokio::time::sleep_until(from).await;
        (Instant::now(), server.read())
    }))
}

/// The CPU time between the reading [`start_cpu`] took and now.
async fn finish_cpu(
    server: Option<&ServerCpu>,
    started: Option<tokio::task::JoinHandle<(Instant, anyhow::Result<Duration>)>>,
) -> anyhow::Result<Option<ServerUse>> {
    let (Some(server), Some(started)) = (server, started) else {
        return Ok(None);
    };
    let (from, before) = started.await.context("reading the server's CPU time")?;
    let before = before?;
    let after = server.read()?;
    let wall = from.elapsed();
    let cpu = after.saturating_sub(before);
    Ok(Some(ServerUse {
        cpu,
        busy: if wall.is_zero() {
            0.0
        } else {
            cpu.as_secs_f64() / wall.as_secs_f64()
        },
    }))
}

/// What the run measured (sent, answered, late and the latencies over the
/// measured part only; bad and errors over the whole run, warm-up included).
#[derive(Debug, Default)]
struct Report {
    sent: u64,
    answered: u64,
    bad: u64,
    errors: u64,
    late: u64,
    /// Measured requests whose event had been sent before in the run.
    resent: u64,
    /// Measured answers per second: answered ÷ the longer of the planned duration
    /// and the time from its start to the last measured answer (a server that
    /// falls behind stretches the run and shows a lower rate).
    achieved: f64,
    /// Microseconds from due time to the end of the answer, sorted.
    latencies_us: Vec<u32>,
    /// With `--server-pid`: the server's CPU use over the measured part.
    server: Option<ServerUse>,
}

impl Report {
    /// The machine-readable line `scripts/bench` parses.
    fn line(&self, offered: &Rate) -> String {
        let p = |q| percentile(&self.latencies_us, q);
        let server = self.server.map_or_else(String::new, |s| {
            format!(
                " server_cpu_us={} server_busy={:.3}",
                s.cpu.as_micros(),
                s.busy
            )
        });
        format!(
            "LOADGEN_RESULT offered={offered} achieved={:.1} sent={} answered={} bad={} \
             errors={} late={} p50_us={} p99_us={} p999_us={} max_us={} resent={}{server}",
            self.achieved,
            self.sent,
            self.answered,
            self.bad,
            self.errors,
            self.late,
            p(0.5),
            p(0.99),
            p(0.999),
            self.latencies_us.last().copied().unwrap_or(0),
            self.resent,
        )
    }
}

/// The value at quantile `q` of sorted samples by nearest rank: the smallest
/// sample with at least a fraction q of all samples at or below it (0 if none).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "q is in [0, 1] and the rank at most the sample count"
)]
fn percentile(sorted: &[u32], q: f64) -> u32 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(0)
}

/// Whether an answer is a good one: 200, and (when checking) a body with the
/// `"approved"` field of a cardgate decision.
fn answer_ok(status: StatusCode, body: &[u8], check: bool) -> bool {
    status == StatusCode::OK && (!check || body.windows(APPROVED.len()).any(|w| w == APPROVED))
}

/// Counters shared by the request tasks. All tasks run on the one thread, so an
/// `Rc<RefCell<…>>` is enough; no borrow is held across an `.await`.
struct Tally {
    measured_from: Instant,
    sent: u64,
    answered: u64,
    bad: u64,
    errors: u64,
    late: u64,
    /// Measured requests that re-sent an event of the file (it ran out).
    resent: u64,
    in_flight: u64,
    last_answer: Option<Instant>,
    latencies_us: Vec<u32>,
}

/// A keep-alive connection slot: `None` when it must be (re)opened by the next
/// request that takes it.
type Slot = Option<SendRequest<Full<Bytes>>>;

/// Runs the plan against the target on a single-threaded runtime and returns
/// what it measured. Fails only if the first connections cannot be opened.
fn generate(target: &Target, events: &[Event], plan: &Plan) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(offer(target.clone(), events.to_vec(), plan.clone())))
}

async fn offer(target: Target, events: Vec<Event>, plan: Plan) -> anyhow::Result<Report> {
    let target = Rc::new(target);
    // Every connection is opened before the first request is due, so connecting
    // is not in the first requests' latency.
    let (free_tx, mut free_rx) = mpsc::unbounded_channel::<Slot>();
    for _ in 0..plan.connections {
        let sender = connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        // The receiver lives in this function: the send cannot fail.
        let _ = free_tx.send(Some(sender));
    }
    let t0 = Instant::now();
    // Sized for the run up front (bounded, in case of an absurd --rate), so
    // recording a sample does not reallocate mid-run; a closed loop is sized for
    // 400k answers a second.
    let samples = match plan.rate {
        Rate::Fixed(rate) => {
            let (warm, total) = plan.counts(rate);
            total - warm
        }
        Rate::Max => requests_before(plan.duration, 400_000.0),
    };
    let tally = Rc::new(RefCell::new(Tally::new(t0 + plan.warmup, samples)));
    let cpu = start_cpu(plan.server.as_ref(), t0 + plan.warmup);
    let spawn = |k: usize, slot: Slot, due: Instant, measured: bool| {
        let resent = k >= events.len();
        {
            let mut t = tally.borrow_mut();
            t.in_flight += 1;
            if measured && resent {
                t.resent += 1;
            }
        }
        tokio::task::spawn_local(request(
            Rc::clone(&target),
            slot,
            events[k % events.len()].clone(),
            due,
            measured,
            plan.check,
            Rc::clone(&tally),
            free_tx.clone(),
        ));
    };
    match plan.rate {
        Rate::Fixed(rate) => {
            let (warm, total) = plan.counts(rate);
            for k in 0..total {
                let due = t0 + due_offset(k, rate);
                pace_until(due).await;
                // Waits while every connection is busy; the latency still runs
                // from `due`.
                let Some(slot) = free_rx.recv().await else {
                    break; // cannot happen: free_tx is held here
                };
                spawn(
                    usize::try_from(k).unwrap_or(usize::MAX),
                    slot,
                    due,
                    k >= warm,
                );
            }
        }
        Rate::Max => {
            let measured_from = t0 + plan.warmup;
            let end = measured_from + plan.duration;
            for k in 0.. {
                // A connection is free when its last answer came back.
                let Some(slot) = free_rx.recv().await else {
                    break; // cannot happen: free_tx is held here
                };
                let now = Instant::now();
                if now >= end {
                    let _ = free_tx.send(slot);
                    break;
                }
                spawn(k, slot, now, now >= measured_from);
            }
        }
    }
    // Every slot back means every request has ended.
    let drained = tokio::time::timeout(DRAIN, async {
        for _ in 0..plan.connections {
            if free_rx.recv().await.is_none() {
                break;
            }
        }
    })
    .await;
    let server = finish_cpu(plan.server.as_ref(), cpu).await?;
    let mut t = tally.borrow_mut();
    if drained.is_err() {
        eprintln!(
            "loadgen: {} requests unanswered {} after the last was due",
            t.in_flight,
            humantime::format_duration(DRAIN)
        );
        t.errors += t.in_flight;
    }
    let mut report = t.report(plan.duration);
    report.server = server;
    Ok(report)
}

impl Tally {
    /// Nothing counted yet; room for `samples` latencies (at most 10 million).
    fn new(measured_from: Instant, samples: u64) -> Self {
        Tally {
            measured_from,
            sent: 0,
            answered: 0,
            bad: 0,
            errors: 0,
            late: 0,
            resent: 0,
            in_flight: 0,
            last_answer: None,
            latencies_us: Vec::with_capacity(usize::try_from(samples.min(10_000_000)).unwrap_or(0)),
        }
    }

    /// What the run measured, once every request has ended; `planned` is the
    /// measured part's planned length.
    fn report(&mut self, planned: Duration) -> Report {
        let mut latencies_us = std::mem::take(&mut self.latencies_us);
        latencies_us.sort_unstable();
        let measured_for = self
            .last_answer
            .map_or(planned, |last| last.duration_since(self.measured_from))
            .max(planned);
        #[allow(
            clippy::cast_precision_loss,
            reason = "a count of answers, far below 2^53"
        )]
        let achieved = if measured_for.is_zero() {
            0.0
        } else {
            self.answered as f64 / measured_for.as_secs_f64()
        };
        Report {
            sent: self.sent,
            answered: self.answered,
            bad: self.bad,
            errors: self.errors,
            late: self.late,
            resent: self.resent,
            achieved,
            latencies_us,
            server: None,
        }
    }
}

/// Returns at `due`, to within the runtime's turn rather than tokio's 1 ms timer:
/// far from it, sleeps on the timer; in the last stretch, yields in a loop, and
/// each yield lets the runtime poll the sockets (answers are read while waiting).
/// At the rates the bench offers (a request every ≤ 1 ms) that is all of the time,
/// so loadgen keeps its core busy: it is pinned to a core of its own.
async fn pace_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > COARSE {
            tokio::time::sleep_until(due - COARSE).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Opens a keep-alive HTTP/1.1 connection and drives it on this thread.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    // Requests are small writes that must leave at once, as the servers do.
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        // Its end shows on the sender (closed), where the next request sees it.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on `slot` (opening it first if needed), checks and records
/// the answer, and gives the slot back.
#[allow(
    clippy::too_many_arguments,
    reason = "one spawned task's inputs; a struct would only rename them"
)]
async fn request(
    target: Rc<Target>,
    slot: Slot,
    event: Event,
    due: Instant,
    measured: bool,
    check: bool,
    tally: Rc<RefCell<Tally>>,
    free: mpsc::UnboundedSender<Slot>,
) {
    let mut req = Request::new(Full::new(event.body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = target.path.clone();
    let h = req.headers_mut();
    h.insert(HOST, target.host.clone());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("stripe-signature", event.signature);

    // A connection the server closed after its last answer (nginx does after
    // keepalive_requests) is re-opened without counting an error, as wrk does.
    let opened = match slot {
        Some(sender) if !sender.is_closed() => Ok(sender),
        _ => connect(target.addr).await,
    };
    let (outcome, back) = match opened {
        Ok(mut sender) => {
            let left = Instant::now();
            {
                let mut t = tally.borrow_mut();
                if measured {
                    t.sent += 1;
                    if left.duration_since(due) > LATE {
                        t.late += 1;
                    }
                }
            }
            match exchange(&mut sender, req).await {
                Ok((status, body, close)) => {
                    let good = answer_ok(status, &body, check);
                    (Some(good), if close { None } else { Some(sender) })
                }
                Err(_) => (None, None),
            }
        }
        Err(_) => (None, None),
    };
    let done = Instant::now();
    {
        let mut t = tally.borrow_mut();
        t.in_flight -= 1;
        match outcome {
            Some(good) => {
                if !good {
                    t.bad += 1;
                }
                if measured {
                    t.answered += 1;
                    t.last_answer = Some(done);
                    let us = done.duration_since(due).as_micros();
                    t.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            // A failed connect or exchange: the slot is re-opened by its next user.
            None => t.errors += 1,
        }
    }
    // The receiver outlives every request task (it is dropped only when the run
    // ends, and then nothing is waiting for this slot).
    let _ = free.send(back);
}

/// One request and its whole answer: status, body, and whether the server said it
/// will close the connection.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes, bool), hyper::Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let close = resp
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::sync::mpsc as std_mpsc;

    use hyper::body::Incoming;
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};

    #[test]
    fn request_k_is_due_at_k_over_rate() {
        assert_eq!(due_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(due_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(due_offset(2500, 500.0), Duration::from_secs(5));
        assert_eq!(due_offset(3, 4.0), Duration::from_millis(750));
    }

    #[test]
    fn plan_counts_the_requests_due_in_each_part() {
        let plan = Plan {
            rate: Rate::Fixed(500.0),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            connections: 1,
            check: true,
            server: None,
        };
        // Due at 0, 2 ms, …: 500 in the first second, 1,500 in three.
        assert_eq!(plan.counts(500.0), (500, 1500));
        // A fractional rate still sends the request due at 0.
        assert_eq!(requests_before(Duration::from_secs(1), 0.5), 1);
        assert_eq!(requests_before(Duration::ZERO, 100.0), 0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        // 2 samples: p50 is the first, p99 the second.
        assert_eq!(percentile(&[10, 20], 0.5), 10);
        assert_eq!(percentile(&[10, 20], 0.99), 20);
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/webhooks/stripe");
        let t = Target::parse("http://127.3.4.5:81/").unwrap();
        assert_eq!(t.addr, "127.3.4.5:81".parse().unwrap());
        assert_eq!(t.path, "/webhooks/stripe");
        let t = Target::parse("http://localhost:9000/other?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.host, "localhost:9000");
        assert_eq!(t.path, "/other?x=1");
        let t = Target::parse("http://[::1]:7000").unwrap();
        assert_eq!(t.addr, "[::1]:7000".parse().unwrap());
        assert_eq!(Target::parse("http://127.0.0.1").unwrap().addr.port(), 80);

        for url in [
            "http://10.0.0.1:80",
            "http://192.168.1.2:8080",
            "http://0.0.0.0:8080",
            "http://128.0.0.1:8080",
            "http://[::]:8080",
            "http://[::ffff:8.8.8.8]:80",
            "http://example.com:80",
            "http://localhost.example.com:80",
            "https://127.0.0.1:443",
            "127.0.0.1:8080",
            "not a url",
        ] {
            assert!(Target::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn an_answer_is_good_only_if_200_and_a_decision() {
        let decision = br#"{"approved":false,"metadata":{}}"#;
        assert!(answer_ok(StatusCode::OK, decision, true));
        assert!(answer_ok(StatusCode::OK, br#"{"approved":true}"#, true));
        assert!(!answer_ok(StatusCode::OK, b"{}", true));
        assert!(!answer_ok(StatusCode::OK, b"approved", true));
        assert!(!answer_ok(StatusCode::OK, b"", true));
        assert!(!answer_ok(StatusCode::BAD_REQUEST, decision, true));
        // --no-check: any 200 will do, nothing else.
        assert!(answer_ok(StatusCode::OK, b"hello", false));
        assert!(!answer_ok(StatusCode::SERVICE_UNAVAILABLE, decision, false));
    }

    #[test]
    fn the_result_line_has_every_field() {
        let r = Report {
            sent: 3,
            answered: 3,
            achieved: 2.96,
            latencies_us: vec![100, 200, 300],
            ..Report::default()
        };
        assert_eq!(
            r.line(&Rate::Fixed(3.0)),
            "LOADGEN_RESULT offered=3.0 achieved=3.0 sent=3 answered=3 bad=0 errors=0 late=0 \
             p50_us=200 p99_us=300 p999_us=300 max_us=300 resent=0"
        );
    }

    /// A server answering like cardgate does on a runtime and thread of its own;
    /// returns its address.
    fn spawn_server(body: &'static [u8]) -> SocketAddr {
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    tokio::spawn(async move {
                        let service = service_fn(|req: hyper::Request<Incoming>| async move {
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
                        });
                        let _ = server_http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        rx.recv().unwrap()
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                body: Bytes::from(format!(r#"{{"id":"evt_{i}"}}"#)),
                signature: HeaderValue::from_static("t=1,v1=00"),
            })
            .collect()
    }

    #[test]
    fn offers_the_rate_to_a_real_server_and_counts_every_answer() {
        let addr = spawn_server(br#"{"approved":true}"#);
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let plan = Plan {
            rate: Rate::Fixed(500.0),
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            connections: 4,
            check: true,
            server: None,
        };
        let r = generate(&target, &events(64), &plan).unwrap();
        assert_eq!(r.sent, 500);
        assert_eq!(r.answered, r.sent);
        assert_eq!(r.latencies_us.len(), 500);
        assert_eq!((r.bad, r.errors), (0, 0));
        // Answers ÷ the longer of the planned second and the time to the last
        // answer: at most the 500 offered, and how much less depends on the box
        // (timing belongs in the benchmarks).
        assert!(
            r.achieved > 0.0 && r.achieved <= 500.0,
            "achieved {}",
            r.achieved
        );
    }

    #[test]
    fn rate_is_a_positive_number_or_max() {
        assert_eq!(parse_rate("2500"), Ok(Rate::Fixed(2500.0)));
        assert_eq!(parse_rate("0.5"), Ok(Rate::Fixed(0.5)));
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("MAX"), Ok(Rate::Max));
        for bad in ["0", "-1", "inf", "NaN", "fast", ""] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Rate::Max.to_string(), "max");
        assert_eq!(Rate::Fixed(2500.0).to_string(), "2500.0");
    }

    /// The closed loop sends for the duration as fast as answers come back, over
    /// the file in order, and counts the requests that had to re-send an event.
    #[test]
    fn max_rate_keeps_every_connection_busy_for_the_duration() {
        let addr = spawn_server(br#"{"approved":true}"#);
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let plan = Plan {
            rate: Rate::Max,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            connections: 4,
            check: true,
            server: None,
        };
        let r = generate(&target, &events(8), &plan).unwrap();
        // Not `late`: it counts requests whose task started over 1 ms after it
        // was spawned, which a busy test machine decides, not the code.
        assert_eq!((r.bad, r.errors), (0, 0));
        assert_eq!(r.answered, r.sent);
        assert_eq!(r.latencies_us.len(), usize::try_from(r.sent).unwrap());
        // Far more than 8 requests in 300 ms on loopback: all past the eighth
        // re-sent an event.
        assert!(r.sent > 8, "sent {}", r.sent);
        assert_eq!(r.resent, r.sent - 8);
        let line = r.line(&plan.rate);
        assert!(
            line.starts_with("LOADGEN_RESULT offered=max achieved="),
            "{line}"
        );
        assert!(line.ends_with(&format!(" resent={}", r.resent)), "{line}");
    }

    #[test]
    fn the_result_line_ends_with_the_servers_cpu_when_measured() {
        let r = Report {
            sent: 3,
            answered: 3,
            server: Some(ServerUse {
                cpu: Duration::from_micros(1_234_567),
                busy: 0.4567,
            }),
            ..Report::default()
        };
        let line = r.line(&Rate::Max);
        assert!(
            line.ends_with(" resent=0 server_cpu_us=1234567 server_busy=0.457"),
            "{line}"
        );
    }

    #[test]
    fn schedstat_gives_the_time_on_a_cpu() {
        assert_eq!(
            schedstat_on_cpu_ns("2917190000 27328 1\n"),
            Some(2_917_190_000)
        );
        assert_eq!(schedstat_on_cpu_ns(""), None);
        assert_eq!(schedstat_on_cpu_ns("x 1 2"), None);
    }

    /// Above any pid Linux gives (at most 2^22), so never a running process.
    #[test]
    fn a_server_pid_that_is_not_running_is_refused_before_the_run() {
        let e = ServerCpu::open(u32::MAX).unwrap_err();
        assert!(
            format!("{e:#}").contains("--server-pid 4294967295"),
            "{e:#}"
        );
    }

    /// The server here is a thread of this test process, so its pid is ours: the
    /// reading must count the CPU its threads ran during the measured part.
    #[test]
    fn server_cpu_counts_what_the_server_ran_in_the_measured_part() {
        let addr = spawn_server(br#"{"approved":true}"#);
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let plan = Plan {
            rate: Rate::Max,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            connections: 4,
            check: true,
            server: Some(ServerCpu::open(std::process::id()).unwrap()),
        };
        let r = generate(&target, &events(8), &plan).unwrap();
        assert_eq!((r.bad, r.errors), (0, 0));
        let used = r.server.expect("measured");
        // Hundreds of requests answered and sent by this process's threads.
        assert!(used.cpu > Duration::ZERO, "{used:?}");
        assert!(used.busy > 0.0, "{used:?}");
        let line = r.line(&plan.rate);
        assert!(line.contains(" server_cpu_us="), "{line}");
    }

    #[test]
    fn answers_without_a_decision_count_as_bad() {
        let addr = spawn_server(b"{}");
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let mut plan = Plan {
            rate: Rate::Fixed(200.0),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(100),
            connections: 2,
            check: true,
            server: None,
        };
        let r = generate(&target, &events(3), &plan).unwrap();
        assert_eq!((r.sent, r.answered, r.bad, r.errors), (20, 20, 20, 0));
        plan.check = false;
        let r = generate(&target, &events(3), &plan).unwrap();
        assert_eq!((r.sent, r.answered, r.bad, r.errors), (20, 20, 0, 0));
    }

    #[test]
    fn a_server_that_is_not_there_fails_the_run_before_it_starts() {
        // Bind and drop: the port is (very likely) free and refuses connections.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let plan = Plan {
            rate: Rate::Fixed(10.0),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(100),
            connections: 1,
            check: true,
            server: None,
        };
        assert!(generate(&target, &events(1), &plan).is_err());
    }
}
