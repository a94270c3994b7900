//! A real PostgreSQL for integration tests: the library's test server
//! (`cardgate::store::postgres::testing`: `initdb` in a temporary directory,
//! `pg_ctl` on a free loopback port, as the `postgres` user when run as root,
//! stopped when the last test holding it drops it), and one fresh database per
//! test, owned by an ordinary role.
//!
//! Without PostgreSQL installed a test is skipped with a message, unless
//! `CARDGATE_REQUIRE_POSTGRES=1` (`scripts/test`) makes that a failure.

use std::sync::Arc;

use cardgate::store::postgres::testing::{TestServer, shared};

/// A fresh database on the shared server and its `postgres://` URL, or `None`
/// (skipped). Hold the server handle for as long as the test uses the URL.
pub fn database() -> Option<(Arc<TestServer>, String)> {
    let server = shared().unwrap()?;
    let url = server.database().unwrap();
    Some((server, url))
}
