//! Reading the security history and the event log. Both are written only as part
//! of the changes they record (see `store.rs`); the history is append-only.

use super::model::{EventRecord, HistoryEntry, HistoryFilter, Page};
use super::{Approvals, Error, invalid};

impl Approvals {
    /// Security history, newest first, filtered by type, actor, object and time.
    pub async fn history(
        &self,
        f: &HistoryFilter,
        page: &Page,
    ) -> Result<(Vec<HistoryEntry>, bool), Error> {
        let before = match page.starting_after.as_deref() {
            None => None,
            Some(s) => Some(
                s.strip_prefix("sh_")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| invalid(format!("starting_after {s:?} is not a history id")))?,
            ),
        };
        Ok(self.store.history(f, before, page.size()).await?)
    }

    /// Events, newest first, with their delivery state.
    pub async fn events(
        &self,
        kind: Option<&str>,
        page: &Page,
    ) -> Result<(Vec<EventRecord>, bool), Error> {
        Ok(self
            .store
            .events(kind, page.starting_after.as_deref(), page.size())
            .await?)
    }
}
