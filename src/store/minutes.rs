//! Finding decision-log rows by time without an index on `decided_at` (schema
//! 11, issue 19): `decision_minutes` keeps, for every minute a decision was made
//! in, the id of the first row decided in it.
//!
//! Ids follow the order of commits. Times almost do, but not exactly (request
//! threads race to the writer; the clock may be stepped back), so a minute's
//! first id is a bound, not a boundary: every row decided at or after `since`
//! has an id at least [`first_id_since`], and a reader scans that range of ids
//! with its `decided_at` filter kept. A search by time costs a range of the
//! rowid b-tree, and a commit writes the minute table once a minute instead of an
//! index leaf per commit.

use rusqlite::{Connection, Statement, params};

use super::schema::MINUTES_VERSION;

/// Seconds per bucket of `decision_minutes` (`decided_at` is in Unix seconds).
const MINUTE: i64 = 60;

/// The bucket of a decision time, as migration 11 computes it in SQL.
fn minute_of(at: i64) -> i64 {
    at.div_euclid(MINUTE)
}

/// The smallest id a row of the file decided at or after `since` can have:
/// `i64::MAX` when no row is that recent, `i64::MIN` (no bound) for a file older
/// than the minute table (read-only and never migrated: its `decided_at` index
/// serves the readers' time filter instead).
pub(super) fn first_id_since(conn: &Connection, since: Option<i64>) -> rusqlite::Result<i64> {
    let Some(since) = since else {
        return Ok(i64::MIN);
    };
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < MINUTES_VERSION {
        return Ok(i64::MIN);
    }
    // Every minute from `since`'s on: a row of a later minute may precede a
    // row of an earlier one in the log when the clock went back.
    let first: Option<i64> = conn.query_row(
        "SELECT MIN(first_id) FROM decision_minutes WHERE minute >= ?1",
        params![minute_of(since)],
        |r| r.get(0),
    )?;
    Ok(first.unwrap_or(i64::MAX))
}

/// The writer's side: which minute already has its row, so a decision writes
/// `decision_minutes` only when its minute differs from the last one written.
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// The minute of the last row committed with its mark.
    committed: Option<i64>,
    /// The same within the batch in progress (kept only if it commits).
    pending: Option<i64>,
}

impl Marks {
    /// Marks the minute of a decision row just inserted with id `id`, unless the
    /// last row's minute was the same. `INSERT OR IGNORE`: a minute met again (the
    /// clock went back) keeps its first, smaller id.
    pub(super) fn mark(
        &mut self,
        insert: &mut Statement<'_>,
        decided_at: i64,
        id: i64,
    ) -> rusqlite::Result<()> {
        let minute = minute_of(decided_at);
        if self.pending.or(self.committed) == Some(minute) {
            return Ok(());
        }
        insert.execute(params![minute, id])?;
        self.pending = Some(minute);
        Ok(())
    }

    /// The batch committed: its marks are in the file.
    pub(super) fn committed(&mut self) {
        if let Some(minute) = self.pending.take() {
            self.committed = Some(minute);
        }
    }

    /// The batch rolled back, its marks with it.
    pub(super) fn rolled_back(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_is_the_floor_of_its_seconds_as_the_migration_computes_it() {
        let conn = Connection::open_in_memory().unwrap();
        for at in [-121, -61, -60, -59, -1, 0, 1, 59, 60, 61, 1_795_003_020] {
            let sql: i64 = conn
                .query_row("SELECT (?1 - ((?1 % 60) + 60) % 60) / 60", [at], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(minute_of(at), sql, "{at}");
            assert!(minute_of(at) * MINUTE <= at && at < (minute_of(at) + 1) * MINUTE);
        }
    }
}
