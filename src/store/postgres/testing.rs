//! A throwaway PostgreSQL server for tests (unit tests here, integration tests
//! through `tests/common/postgres.rs`): `initdb` into a temporary directory,
//! `pg_ctl start` on a free loopback port with its unix socket in that
//! directory, one fresh ordinary role and database per test, and `pg_ctl stop -m
//! immediate` plus removal of the directory when the last user drops it.
//!
//! The server binaries are found in `$CARDGATE_PG_BINDIR`, `pg_config --bindir`,
//! on `PATH`, or in Debian's `/usr/lib/postgresql/<version>/bin` (newest first).
//! Missing binaries skip the PostgreSQL half of a test with a message, unless
//! `CARDGATE_REQUIRE_POSTGRES=1` (CI, `scripts/test`) makes them a failure.
//!
//! PostgreSQL refuses to run as root: as root, `initdb` and `pg_ctl` run as the
//! `postgres` system user (Debian's package creates it) through `runuser`, on a
//! directory handed to that user.
//!
//! The server is tuned for tests (`fsync=off`): nothing in it is meant to
//! survive a crash.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Set to `1` to fail, not skip, when no PostgreSQL server binaries are found.
pub const REQUIRE_ENV: &str = "CARDGATE_REQUIRE_POSTGRES";

/// Names the directory holding `initdb` and `pg_ctl`, overriding the search.
pub const BINDIR_ENV: &str = "CARDGATE_PG_BINDIR";

/// The superuser `initdb` creates; used only over the unix socket, to create
/// each test's role and database.
const SUPERUSER: &str = "postgres";

/// The system user the server runs as when the tests run as root.
const SERVICE_USER: &str = "postgres";

/// Ports tried before giving up when another process takes the one found free.
const PORT_ATTEMPTS: usize = 5;

/// Why the harness could not provide a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("test PostgreSQL: {0}")]
pub struct HarnessError(pub String);

fn fail(message: impl Into<String>) -> HarnessError {
    HarnessError(message.into())
}

/// A running PostgreSQL server in a temporary directory; stopped and removed on
/// drop.
#[derive(Debug)]
pub struct TestServer {
    root: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// `Some("postgres")` when the server runs as another user than the tests.
    run_as: Option<&'static str>,
    databases: AtomicU32,
}

static SHARED: Mutex<Weak<TestServer>> = Mutex::new(Weak::new());

/// The server shared by the tests running now (started if none is), or `None`
/// when the binaries are missing and [`REQUIRE_ENV`] is not set (the message
/// says so on stderr). The server stops when the last test holding it drops it.
pub fn shared() -> Result<Option<Arc<TestServer>>, HarnessError> {
    let Some(bindir) = find_bindir() else {
        if required() {
            return Err(fail(format!(
                "{REQUIRE_ENV}=1 but no PostgreSQL server binaries (initdb, pg_ctl) were found; \
                 install Debian's `postgresql` or set {BINDIR_ENV}"
            )));
        }
        eprintln!(
            "note: PostgreSQL server binaries (initdb, pg_ctl) not found: skipping the \
             PostgreSQL backend of this test (set {REQUIRE_ENV}=1 to fail instead)"
        );
        return Ok(None);
    };
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = slot.upgrade() {
        return Ok(Some(server));
    }
    let server = Arc::new(TestServer::start(&bindir)?);
    *slot = Arc::downgrade(&server);
    Ok(Some(server))
}

/// A server of the caller's own, not shared with other tests (one that the test
/// stops and restarts), or `None` as in [`shared`].
pub fn private() -> Result<Option<TestServer>, HarnessError> {
    let Some(bindir) = find_bindir() else {
        if required() {
            return Err(fail(format!(
                "{REQUIRE_ENV}=1 but no PostgreSQL server binaries (initdb, pg_ctl) were found"
            )));
        }
        eprintln!("note: PostgreSQL server binaries not found: skipping this test");
        return Ok(None);
    };
    TestServer::start(&bindir).map(Some)
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// The directory holding PostgreSQL's `initdb` and `pg_ctl`, if any.
pub fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    // Debian's pg_config names the client's directory, which may lack the server.
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    from_pg_config
        .into_iter()
        .chain(on_path)
        .chain(debian.into_iter().map(|(_, dir)| dir))
        .find(|d| has_server(d))
        .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
}

impl TestServer {
    /// Initialises a cluster in a new temporary directory and starts it on a free
    /// loopback port.
    pub fn start(bindir: &Path) -> Result<TestServer, HarnessError> {
        let root = temp_root()?;
        let run_as = if std::fs::metadata(&root)
            .map_err(|e| fail(format!("{}: {e}", root.display())))?
            .uid()
            == 0
        {
            Some(SERVICE_USER)
        } else {
            None
        };
        let mut server = TestServer {
            root,
            bindir: bindir.to_path_buf(),
            port: 0,
            run_as,
            databases: AtomicU32::new(0),
        };
        // From here on, dropping `server` removes the directory.
        if let Some(user) = run_as {
            checked(
                Command::new("chown").arg(user).arg(&server.root),
                "chown the test directory to the postgres user",
            )?;
        }
        let data = server.data();
        checked(
            server
                .as_server_user("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
                // The superuser only over the socket in our directory; every TCP
                // connection proves its password, as a real deployment would.
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]),
            "initdb",
        )?;
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let out = server.pg_ctl_start(port)?;
            if out.status.success() {
                server.port = port;
                return Ok(server);
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(server.root.join("server.log")).unwrap_or_default()
            );
            // Someone took the port between our probe and the server's bind: try
            // another; any other failure is final.
            if !last.contains("could not bind") && !last.contains("already in use") {
                break;
            }
        }
        Err(fail(format!("pg_ctl start failed:\n{last}")))
    }

    fn pg_ctl_start(&self, port: u16) -> Result<Output, HarnessError> {
        let log = self.root.join("server.log");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.root.display()
        );
        self.as_server_user("pg_ctl")
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&options)
            .output()
            .map_err(|e| fail(format!("pg_ctl start: {e}")))
    }

    /// Stops the server (fast shutdown: sessions are ended, clients see their
    /// connections drop), keeping its data: the database "goes away".
    pub fn stop(&self) -> Result<(), HarnessError> {
        checked(
            self.as_server_user("pg_ctl")
                .args(["stop", "-m", "fast", "-w", "-s", "-D"])
                .arg(self.data()),
            "pg_ctl stop",
        )
        .map(drop)
    }

    /// Sends `signal` (`STOP` or `CONT`) to this server's processes only: the
    /// postmaster named in its `postmaster.pid` and its children. `STOP` makes a
    /// database that accepts connections but never answers; `CONT` undoes it.
    pub fn signal_all(&self, signal: &str) -> Result<(), HarnessError> {
        let pid_file = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| fail(format!("{}: {e}", pid_file.display())))?;
        let postmaster: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| fail("postmaster.pid names no pid"))?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces.
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(postmaster) {
                pids.push(pid);
            }
        }
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}"));
        kill.args(pids.iter().map(u32::to_string));
        checked(&mut kill, "kill").map(drop)
    }

    /// Starts a server [`stop`](Self::stop)ped before, on the same port and data.
    pub fn restart(&self) -> Result<(), HarnessError> {
        let out = self.pg_ctl_start(self.port)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(fail(format!(
                "pg_ctl start (restart) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh role (login, password, nothing more: no superuser, no
    /// `CREATEDB`, no `CREATEROLE`) owning a fresh database, and answers its
    /// `postgres://` URL.
    pub fn database(&self) -> Result<String, HarnessError> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("cardgate_{n}");
        let password = random_hex(12)?;
        self.psql(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}' \
             NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        ))?;
        self.psql(&format!("CREATE DATABASE {name} OWNER {name}"))?;
        Ok(format!(
            "postgres://{name}:{password}@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Runs one SQL statement as the superuser (over the unix socket).
    pub fn psql(&self, sql: &str) -> Result<(), HarnessError> {
        let psql = self.bindir.join("psql");
        let psql = if psql.is_file() {
            psql
        } else {
            PathBuf::from("psql")
        };
        checked(
            Command::new(psql)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", SUPERUSER])
                .arg("-h")
                .arg(&self.root)
                .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
                .env_remove("PGPASSWORD")
                .env_remove("PGSERVICE"),
            "psql",
        )
        .map(drop)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command for a server binary, as the user the server runs as.
    fn as_server_user(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let stopped = self
                .as_server_user("pg_ctl")
                .args(["stop", "-m", "immediate", "-s", "-D"])
                .arg(self.data())
                .output();
            match stopped {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "test PostgreSQL: pg_ctl stop: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("test PostgreSQL: pg_ctl stop: {e}"),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("test PostgreSQL: removing {}: {e}", self.root.display());
        }
    }
}

/// Runs `cmd`, failing with its output when it fails.
fn checked(cmd: &mut Command, what: &str) -> Result<Output, HarnessError> {
    let out = cmd.output().map_err(|e| {
        let program = cmd.get_program().to_string_lossy();
        fail(format!("{what}: cannot run {program}: {e}"))
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(fail(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A new directory under the system's temporary directory.
fn temp_root() -> Result<PathBuf, HarnessError> {
    let base = std::env::temp_dir();
    for _ in 0..8 {
        let dir = base.join(format!(
            "cardgate-pg-{}-{}",
            std::process::id(),
            random_hex(6)?
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                // Only the server's user (and root) may reach its trusting socket.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("{}: {e}", dir.display()))),
        }
    }
    Err(fail("no free temporary directory name"))
}

fn random_hex(bytes: usize) -> Result<String, HarnessError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| fail(format!("random: {e}")))?;
    Ok(hex::encode(buf))
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, HarnessError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| fail(format!("finding a free port: {e}")))
}
