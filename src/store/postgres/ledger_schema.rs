//! The ledger and decision-log tables of the PostgreSQL schema, and the PL/pgSQL
//! functions through which the database itself decides holds (migration steps
//! 2, 6 and 7, listed in `schema.rs`).
//!
//! **Mirror of `crate::ledger`.** `ledger_facts` keeps every fact (one row,
//! unique by event id: the dedupe); `ledger_records` keeps, per authorization (or
//! unlinked transaction), what the in-memory `Record` derives from its facts —
//! metadata, held amount and spend — recomputed by `cardgate_settle` with the same
//! rules as `entry.rs` (`Record::value`): the first authorization-sourced fact's
//! metadata, else the earliest transaction's; the latest authorization state by
//! `(event created, event id)`; reserves beyond the state's approved requests added
//! in arrival order; captures and refunds per transaction id. `ledger_windows`
//! keeps the window totals (migration 7): per window and spend key, the sum of
//! the spend of the records created in it, moved whenever a record's row is
//! written, as the in-memory `Holder::windows`.
//!
//! **Locking.** Every change to a cardholder's records first locks its row in
//! `ledger_cardholders` (the in-memory ledger's entry lock): `cardgate_reserve`
//! re-checks every limit and inserts the hold under it, so two replicas can never
//! both fit one limit. Text comparisons that order facts use `COLLATE "C"`
//! (byte order, as Rust compares `str`) whatever the database's locale.
//!
//! **Requests.** `ledger_requests` remembers the answer given to every request
//! event, so a duplicate delivery (to the same or another replica) answers the
//! same and holds once.

/// The migration step (see `schema::MIGRATIONS`).
pub(super) const LEDGER: &str = r#"
CREATE TABLE ledger_facts (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL CHECK (kind IN ('reserve', 'authorization', 'transaction')),
    cardholder        TEXT NOT NULL,
    record_id         TEXT NOT NULL,
    card              TEXT NOT NULL,
    created           BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    category          TEXT NOT NULL,
    mcc               TEXT NOT NULL,
    cat_name          INTEGER,
    cat_mcc           INTEGER,
    amount            BIGINT NOT NULL,
    event_created     BIGINT,
    approved          BOOLEAN,
    status            TEXT,
    approved_requests INTEGER,
    txn_id            TEXT,
    authorization_id  TEXT
);
CREATE INDEX ledger_facts_record ON ledger_facts (cardholder, record_id);
CREATE INDEX ledger_facts_card ON ledger_facts (card);
CREATE TABLE ledger_cardholders (
    cardholder TEXT PRIMARY KEY
);
CREATE TABLE ledger_records (
    cardholder TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    from_auth  BOOLEAN NOT NULL,
    card       TEXT NOT NULL,
    created    BIGINT NOT NULL,
    currency   TEXT NOT NULL,
    category   TEXT NOT NULL,
    mcc        TEXT NOT NULL,
    cat_name   INTEGER,
    cat_mcc    INTEGER,
    spend      BIGINT NOT NULL,
    held       BIGINT NOT NULL,
    PRIMARY KEY (cardholder, record_id)
);
CREATE INDEX ledger_records_window ON ledger_records (cardholder, created);
CREATE TABLE ledger_requests (
    event_id TEXT PRIMARY KEY,
    approved BOOLEAN NOT NULL,
    amount   BIGINT NOT NULL,
    reason   TEXT NOT NULL,
    cut      INTEGER
);
CREATE TABLE decisions (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          TEXT NOT NULL,
    authorization_id  TEXT NOT NULL,
    card              TEXT NOT NULL,
    cardholder        TEXT NOT NULL,
    amount            BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    merchant_category TEXT NOT NULL,
    merchant_mcc      TEXT NOT NULL,
    merchant_country  TEXT NOT NULL,
    merchant_name     TEXT NOT NULL,
    approved          BOOLEAN NOT NULL,
    approved_amount   BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    rule              TEXT,
    ruleset           TEXT NOT NULL,
    latency_us        BIGINT NOT NULL,
    decided_at        BIGINT NOT NULL,
    event_json        BYTEA NOT NULL,
    spend_json        TEXT NOT NULL,
    shadow_rules      TEXT
);
CREATE INDEX decisions_decided_at ON decisions (decided_at);

-- Recomputes one record from its facts (entry.rs `Record::value`).
CREATE FUNCTION cardgate_settle(p_ch TEXT, p_rid TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    m          RECORD;
    l          RECORD;
    v_from_auth BOOLEAN;
    authorized BIGINT;
    st         TEXT;
    captured   BIGINT;
    net        BIGINT;
    v_held     BIGINT;
    v_spend    BIGINT;
BEGIN
    SELECT f.card, f.created, f.currency, f.category, f.mcc, f.cat_name, f.cat_mcc INTO m
        FROM ledger_facts f
        WHERE f.cardholder = p_ch AND f.record_id = p_rid AND f.kind <> 'transaction'
        ORDER BY f.seq LIMIT 1;
    v_from_auth := FOUND;
    IF NOT v_from_auth THEN
        SELECT f.card, f.created, f.currency, f.category, f.mcc, f.cat_name, f.cat_mcc INTO m
            FROM ledger_facts f
            WHERE f.cardholder = p_ch AND f.record_id = p_rid AND f.kind = 'transaction'
            ORDER BY f.created, f.txn_id COLLATE "C" LIMIT 1;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    SELECT f.amount, CASE WHEN f.approved THEN f.status ELSE 'closed' END AS status,
           f.approved_requests INTO l
        FROM ledger_facts f
        WHERE f.cardholder = p_ch AND f.record_id = p_rid AND f.kind = 'authorization'
        ORDER BY f.event_created DESC, f.event_id COLLATE "C" DESC LIMIT 1;
    IF FOUND THEN
        SELECT l.amount + COALESCE(SUM(r.amount), 0) INTO authorized FROM (
            SELECT f.amount FROM ledger_facts f
            WHERE f.cardholder = p_ch AND f.record_id = p_rid AND f.kind = 'reserve'
            ORDER BY f.seq OFFSET l.approved_requests) r;
        st := l.status;
    ELSE
        SELECT COALESCE(SUM(f.amount), 0) INTO authorized FROM ledger_facts f
            WHERE f.cardholder = p_ch AND f.record_id = p_rid AND f.kind = 'reserve';
        st := 'pending';
    END IF;
    SELECT COALESCE(SUM(CASE WHEN t.a < 0 THEN -t.a ELSE 0 END), 0), COALESCE(SUM(-t.a), 0)
        INTO captured, net FROM (
            SELECT DISTINCT ON (f.txn_id) f.amount AS a FROM ledger_facts f
            WHERE f.cardholder = p_ch AND f.record_id = p_rid AND f.kind = 'transaction'
            ORDER BY f.txn_id, f.seq DESC) t;
    v_held := CASE WHEN st = 'pending' THEN GREATEST(authorized - captured, 0) ELSE 0 END;
    v_spend := GREATEST(v_held + net, 0);
    INSERT INTO ledger_records AS r (cardholder, record_id, from_auth, card, created, currency,
                                     category, mcc, cat_name, cat_mcc, spend, held)
        VALUES (p_ch, p_rid, v_from_auth, m.card, m.created, m.currency, m.category, m.mcc,
                m.cat_name, m.cat_mcc, v_spend, v_held)
        ON CONFLICT (cardholder, record_id) DO UPDATE SET
            from_auth = excluded.from_auth, card = excluded.card, created = excluded.created,
            currency = excluded.currency, category = excluded.category, mcc = excluded.mcc,
            cat_name = excluded.cat_name, cat_mcc = excluded.cat_mcc,
            spend = excluded.spend, held = excluded.held;
END $$;

-- Applies a lifecycle fact under the cardholder's lock (ledger `apply`).
CREATE FUNCTION cardgate_apply(
    p_event_id TEXT, p_kind TEXT, p_ch TEXT, p_rid TEXT, p_card TEXT, p_created BIGINT,
    p_currency TEXT, p_category TEXT, p_mcc TEXT, p_cat_name INTEGER, p_cat_mcc INTEGER,
    p_amount BIGINT, p_event_created BIGINT, p_approved BOOLEAN, p_status TEXT,
    p_approved_requests INTEGER, p_txn_id TEXT, p_authorization_id TEXT
) RETURNS TEXT
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_cardholders AS c (cardholder) VALUES (p_ch)
        ON CONFLICT (cardholder) DO UPDATE SET cardholder = c.cardholder;
    INSERT INTO ledger_facts (event_id, kind, cardholder, record_id, card, created, currency,
                              category, mcc, cat_name, cat_mcc, amount, event_created, approved,
                              status, approved_requests, txn_id, authorization_id)
        VALUES (p_event_id, p_kind, p_ch, p_rid, p_card, p_created, p_currency, p_category,
                p_mcc, p_cat_name, p_cat_mcc, p_amount, p_event_created, p_approved, p_status,
                p_approved_requests, p_txn_id, p_authorization_id)
        ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    PERFORM cardgate_settle(p_ch, p_rid);
    IF p_kind = 'transaction' AND p_authorization_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM ledger_records r
        WHERE r.cardholder = p_ch AND r.record_id = p_rid AND r.from_auth) THEN
        RETURN 'unknown_authorization';
    END IF;
    RETURN 'applied';
END $$;

-- The atomic check-and-reserve (ledger `reserve`): under the cardholder's lock,
-- the answer already given to this request event if any; else every interval
-- limit's room re-checked (limit i: card scope, window [lo, hi), amount, and
-- when filtered, the category ids / unknown names listed under index i), the
-- grant cut or declined, the hold inserted, and the answer remembered.
-- Returns (outcome, amount, limit index, reason): outcome 'held', 'declined',
-- 'passed' (a decline of decide()'s, recorded), or 'duplicate' /
-- 'duplicate_declined' with the first answer's amount, cut and reason.
CREATE FUNCTION cardgate_reserve(
    p_event_id TEXT, p_ch TEXT, p_auth TEXT, p_card TEXT, p_at BIGINT, p_currency TEXT,
    p_category TEXT, p_mcc TEXT, p_cat_name INTEGER, p_cat_mcc INTEGER,
    p_approved BOOLEAN, p_wanted BIGINT, p_controllable BOOLEAN, p_cashback BIGINT,
    p_reason TEXT, p_card_scope BOOLEAN[], p_lo BIGINT[], p_hi BIGINT[], p_limit BIGINT[],
    p_filtered BOOLEAN[], p_cat_limit INTEGER[], p_cat_id INTEGER[], p_unk_limit INTEGER[],
    p_unk_name TEXT[],
    OUT o_outcome TEXT, OUT o_amount BIGINT, OUT o_cut INTEGER, OUT o_reason TEXT
)
LANGUAGE plpgsql AS $$
DECLARE
    prev  RECORD;
    i     INTEGER;
    spent BIGINT;
    room  BIGINT;
BEGIN
    INSERT INTO ledger_cardholders AS c (cardholder) VALUES (p_ch)
        ON CONFLICT (cardholder) DO UPDATE SET cardholder = c.cardholder;
    SELECT q.approved, q.amount, q.cut, q.reason INTO prev FROM ledger_requests q
        WHERE q.event_id = p_event_id;
    IF FOUND THEN
        o_outcome := CASE WHEN prev.approved THEN 'duplicate' ELSE 'duplicate_declined' END;
        o_amount := prev.amount;
        o_cut := prev.cut;
        o_reason := prev.reason;
        RETURN;
    END IF;
    IF NOT p_approved OR p_wanted <= 0 THEN
        INSERT INTO ledger_requests (event_id, approved, amount, reason)
            VALUES (p_event_id, p_approved, GREATEST(p_wanted, 0), p_reason);
        o_outcome := 'passed';
        o_amount := p_wanted;
        RETURN;
    END IF;
    o_amount := p_wanted;
    o_cut := NULL;
    FOR i IN 1 .. COALESCE(array_length(p_lo, 1), 0) LOOP
        SELECT COALESCE(SUM(r.spend), 0) INTO spent FROM ledger_records r
            WHERE r.cardholder = p_ch AND r.currency = p_currency
              AND r.created >= p_lo[i] AND r.created < p_hi[i]
              AND (NOT p_card_scope[i] OR r.card = p_card)
              AND (NOT p_filtered[i]
                   OR EXISTS (SELECT 1 FROM unnest(p_cat_limit, p_cat_id) AS k(li, id)
                              WHERE k.li = i AND (k.id = r.cat_name OR k.id = r.cat_mcc))
                   OR (r.cat_name IS NULL AND EXISTS (
                              SELECT 1 FROM unnest(p_unk_limit, p_unk_name) AS u(li, name)
                              WHERE u.li = i AND u.name = r.category)));
        room := p_limit[i] - spent;
        IF o_amount > room THEN
            IF p_controllable AND room > 0 AND room >= p_cashback THEN
                o_amount := room;
                o_cut := i;
            ELSE
                INSERT INTO ledger_requests (event_id, approved, amount, reason, cut)
                    VALUES (p_event_id, FALSE, 0, 'spending_limit', i);
                o_outcome := 'declined';
                o_amount := 0;
                o_cut := i;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    INSERT INTO ledger_facts (event_id, kind, cardholder, record_id, card, created, currency,
                              category, mcc, cat_name, cat_mcc, amount)
        VALUES (p_event_id, 'reserve', p_ch, p_auth, p_card, p_at, p_currency, p_category,
                p_mcc, p_cat_name, p_cat_mcc, o_amount);
    INSERT INTO ledger_requests (event_id, approved, amount, reason, cut)
        VALUES (p_event_id, TRUE, o_amount,
                CASE WHEN o_cut IS NULL THEN p_reason ELSE 'spending_limit' END, o_cut);
    PERFORM cardgate_settle(p_ch, p_auth);
    o_outcome := 'held';
END $$;
"#;

/// Migration 6: `cardgate_reserve` without `cardgate_settle` for a new
/// authorization. Settling re-reads every fact of the record in six statements;
/// a first hold's record follows from the hold alone, and was most of the
/// reserve's server time (`EXPLAIN`/`pg_stat_statements`, BENCHMARKS.md). The
/// signature and answers are migration 2's.
pub(super) const RESERVE_FIRST_HOLD: &str = r"
CREATE OR REPLACE FUNCTION cardgate_reserve(
    p_event_id TEXT, p_ch TEXT, p_auth TEXT, p_card TEXT, p_at BIGINT, p_currency TEXT,
    p_category TEXT, p_mcc TEXT, p_cat_name INTEGER, p_cat_mcc INTEGER,
    p_approved BOOLEAN, p_wanted BIGINT, p_controllable BOOLEAN, p_cashback BIGINT,
    p_reason TEXT, p_card_scope BOOLEAN[], p_lo BIGINT[], p_hi BIGINT[], p_limit BIGINT[],
    p_filtered BOOLEAN[], p_cat_limit INTEGER[], p_cat_id INTEGER[], p_unk_limit INTEGER[],
    p_unk_name TEXT[],
    OUT o_outcome TEXT, OUT o_amount BIGINT, OUT o_cut INTEGER, OUT o_reason TEXT
)
LANGUAGE plpgsql AS $$
DECLARE
    prev  RECORD;
    i     INTEGER;
    spent BIGINT;
    room  BIGINT;
BEGIN
    INSERT INTO ledger_cardholders AS c (cardholder) VALUES (p_ch)
        ON CONFLICT (cardholder) DO UPDATE SET cardholder = c.cardholder;
    SELECT q.approved, q.amount, q.cut, q.reason INTO prev FROM ledger_requests q
        WHERE q.event_id = p_event_id;
    IF FOUND THEN
        o_outcome := CASE WHEN prev.approved THEN 'duplicate' ELSE 'duplicate_declined' END;
        o_amount := prev.amount;
        o_cut := prev.cut;
        o_reason := prev.reason;
        RETURN;
    END IF;
    IF NOT p_approved OR p_wanted <= 0 THEN
        INSERT INTO ledger_requests (event_id, approved, amount, reason)
            VALUES (p_event_id, p_approved, GREATEST(p_wanted, 0), p_reason);
        o_outcome := 'passed';
        o_amount := p_wanted;
        RETURN;
    END IF;
    o_amount := p_wanted;
    o_cut := NULL;
    FOR i IN 1 .. COALESCE(array_length(p_lo, 1), 0) LOOP
        SELECT COALESCE(SUM(r.spend), 0) INTO spent FROM ledger_records r
            WHERE r.cardholder = p_ch AND r.currency = p_currency
              AND r.created >= p_lo[i] AND r.created < p_hi[i]
              AND (NOT p_card_scope[i] OR r.card = p_card)
              AND (NOT p_filtered[i]
                   OR EXISTS (SELECT 1 FROM unnest(p_cat_limit, p_cat_id) AS k(li, id)
                              WHERE k.li = i AND (k.id = r.cat_name OR k.id = r.cat_mcc))
                   OR (r.cat_name IS NULL AND EXISTS (
                              SELECT 1 FROM unnest(p_unk_limit, p_unk_name) AS u(li, name)
                              WHERE u.li = i AND u.name = r.category)));
        room := p_limit[i] - spent;
        IF o_amount > room THEN
            IF p_controllable AND room > 0 AND room >= p_cashback THEN
                o_amount := room;
                o_cut := i;
            ELSE
                INSERT INTO ledger_requests (event_id, approved, amount, reason, cut)
                    VALUES (p_event_id, FALSE, 0, 'spending_limit', i);
                o_outcome := 'declined';
                o_amount := 0;
                o_cut := i;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    INSERT INTO ledger_facts (event_id, kind, cardholder, record_id, card, created, currency,
                              category, mcc, cat_name, cat_mcc, amount)
        VALUES (p_event_id, 'reserve', p_ch, p_auth, p_card, p_at, p_currency, p_category,
                p_mcc, p_cat_name, p_cat_mcc, o_amount);
    INSERT INTO ledger_requests (event_id, approved, amount, reason, cut)
        VALUES (p_event_id, TRUE, o_amount,
                CASE WHEN o_cut IS NULL THEN p_reason ELSE 'spending_limit' END, o_cut);
    -- A record row exists exactly when the record has facts (cardgate_settle
    -- writes one for every record it finds facts of). Without one, this reserve
    -- is the record's only fact and settling it gives: metadata from it, state
    -- pending, held = spend = the grant.
    INSERT INTO ledger_records (cardholder, record_id, from_auth, card, created, currency,
                                category, mcc, cat_name, cat_mcc, spend, held)
        VALUES (p_ch, p_auth, TRUE, p_card, p_at, p_currency, p_category, p_mcc,
                p_cat_name, p_cat_mcc, o_amount, o_amount)
        ON CONFLICT (cardholder, record_id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM cardgate_settle(p_ch, p_auth);
    END IF;
    o_outcome := 'held';
END $$;
";

/// Migration 7: window totals kept as they change, as the in-memory ledger keeps
/// them (`Holder::windows`), instead of summed from every record at each request.
///
/// Before, the snapshot and every limit's re-check in `cardgate_reserve` summed
/// `ledger_records` over the window's time range: the `all_time` window read every
/// record the cardholder ever had, so a decision's cost grew with the
/// cardholder's history (BENCHMARKS.md, "PostgreSQL: window totals kept").
/// Now `ledger_windows` holds, per cardholder, window `[lo, hi)` (the bounds
/// `holds::window_bounds` gives: they name the window, so a limit finds its rows
/// by the bounds it is checked against) and spend key (card, currency,
/// category), the sum of the spend of the records created in that window.
///
/// Triggers on `ledger_records` move a record's contribution (minus the old
/// row's, plus the new one's) whenever a row is written, by whatever writes it:
/// replicas of an older build, still running while this one migrates, write
/// records through the functions of migrations 2 and 6, and their writes keep
/// the totals right too. `CREATE TRIGGER` locks `ledger_records` against writes
/// until the migration commits, so the sums taken here see every record and
/// every later write fires a trigger. Only `cardgate_reserve` changes (its
/// re-checks read `ledger_windows`); its signature and answers are migration
/// 6's. The velocity counts get an index by card (`ledger_records_velocity`)
/// in place of the one by cardholder and time.
pub(super) const WINDOW_TOTALS: &str = r"
CREATE TABLE ledger_windows (
    cardholder TEXT NOT NULL,
    lo         BIGINT NOT NULL,
    hi         BIGINT NOT NULL,
    card       TEXT NOT NULL,
    currency   TEXT NOT NULL,
    category   TEXT NOT NULL,
    mcc        TEXT NOT NULL,
    cat_name   INTEGER,
    cat_mcc    INTEGER,
    spend      BIGINT NOT NULL,
    PRIMARY KEY (cardholder, lo, hi, card, currency, category, mcc)
);

-- The [lo, hi) bounds of the daily, weekly, monthly, yearly and all-time windows
-- holding Unix time p_t, in that order: `window::window_start` and
-- `holds::window_bounds` in integer SQL (UTC calendar, weeks from Sunday; H.
-- Hinnant's civil-date algorithm with floor division, as the Rust code uses
-- `div_euclid`). PL/pgSQL, so its callers' plans are cached.
CREATE FUNCTION cardgate_window_bounds(p_t BIGINT, OUT lo BIGINT[], OUT hi BIGINT[])
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    d   BIGINT := (p_t - ((p_t % 86400) + 86400) % 86400) / 86400;
    w   BIGINT := d - ((d + 4) % 7 + 7) % 7;
    z   BIGINT := d + 719468;
    era BIGINT := (z - ((z % 146097) + 146097) % 146097) / 146097;
    doe BIGINT := z - era * 146097;
    yoe BIGINT := (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy BIGINT := doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp  BIGINT := (5 * doy + 2) / 153;
    m   BIGINT := CASE WHEN mp < 10 THEN mp + 3 ELSE mp - 9 END;
    y   BIGINT := yoe + era * 400 + CASE WHEN m <= 2 THEN 1 ELSE 0 END;
BEGIN
    lo := ARRAY[d * 86400, w * 86400, cardgate_civil_day(y, m) * 86400,
                cardgate_civil_day(y, 1) * 86400, -9223372036854775808];
    hi := ARRAY[(d + 1) * 86400, (w + 7) * 86400,
                cardgate_civil_day(y + m / 12, m % 12 + 1) * 86400,
                cardgate_civil_day(y + 1, 1) * 86400, 9223372036854775807];
END $$;

-- Days since 1970-01-01 of the first day of month p_m (1-12) of year p_y.
CREATE FUNCTION cardgate_civil_day(p_y BIGINT, p_m BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    y   BIGINT := p_y - CASE WHEN p_m <= 2 THEN 1 ELSE 0 END;
    era BIGINT := (y - ((y % 400) + 400) % 400) / 400;
    yoe BIGINT := y - era * 400;
    doy BIGINT := (153 * CASE WHEN p_m > 2 THEN p_m - 3 ELSE p_m + 9 END + 2) / 5;
BEGIN
    RETURN era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
END $$;

-- The same bounds as rows (the sums below, and tests).
CREATE FUNCTION cardgate_windows(p_t BIGINT) RETURNS TABLE (lo BIGINT, hi BIGINT)
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT u.lo, u.hi FROM cardgate_window_bounds(p_t) b, unnest(b.lo, b.hi) AS u(lo, hi)
$$;

-- Adds p_delta to the five windows of a record created at p_created.
CREATE FUNCTION cardgate_window_add(
    p_ch TEXT, p_created BIGINT, p_card TEXT, p_currency TEXT, p_category TEXT, p_mcc TEXT,
    p_cat_name INTEGER, p_cat_mcc INTEGER, p_delta BIGINT
) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    b RECORD;
BEGIN
    b := cardgate_window_bounds(p_created);
    INSERT INTO ledger_windows AS w (cardholder, lo, hi, card, currency, category, mcc,
                                     cat_name, cat_mcc, spend)
        SELECT p_ch, u.lo, u.hi, p_card, p_currency, p_category, p_mcc, p_cat_name,
               p_cat_mcc, p_delta
        FROM unnest(b.lo, b.hi) AS u(lo, hi)
        ON CONFLICT (cardholder, lo, hi, card, currency, category, mcc)
        DO UPDATE SET spend = w.spend + excluded.spend;
END $$;

-- A record row written: its old contribution out of its windows, its new one in.
CREATE FUNCTION cardgate_record_windows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.spend <> 0 THEN
        PERFORM cardgate_window_add(OLD.cardholder, OLD.created, OLD.card, OLD.currency,
                                    OLD.category, OLD.mcc, OLD.cat_name, OLD.cat_mcc,
                                    -OLD.spend);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.spend <> 0 THEN
        PERFORM cardgate_window_add(NEW.cardholder, NEW.created, NEW.card, NEW.currency,
                                    NEW.category, NEW.mcc, NEW.cat_name, NEW.cat_mcc,
                                    NEW.spend);
    END IF;
    RETURN NULL;
END $$;

-- (Each trigger locks ledger_records against writes until the migration commits.)
CREATE TRIGGER ledger_records_windows_insert AFTER INSERT ON ledger_records
    FOR EACH ROW WHEN (NEW.spend <> 0) EXECUTE FUNCTION cardgate_record_windows();
-- Settling rewrites a record's row whenever one of its facts arrives; most
-- leave its contribution as it was (an authorization event for a held amount).
CREATE TRIGGER ledger_records_windows_update AFTER UPDATE ON ledger_records
    FOR EACH ROW
    WHEN ((OLD.spend, OLD.created, OLD.card, OLD.currency, OLD.category, OLD.mcc)
          IS DISTINCT FROM (NEW.spend, NEW.created, NEW.card, NEW.currency, NEW.category,
                            NEW.mcc))
    EXECUTE FUNCTION cardgate_record_windows();
CREATE TRIGGER ledger_records_windows_delete AFTER DELETE ON ledger_records
    FOR EACH ROW WHEN (OLD.spend <> 0) EXECUTE FUNCTION cardgate_record_windows();

INSERT INTO ledger_windows (cardholder, lo, hi, card, currency, category, mcc, cat_name,
                            cat_mcc, spend)
    SELECT r.cardholder, b.lo, b.hi, r.card, r.currency, r.category, r.mcc,
           min(r.cat_name), min(r.cat_mcc), sum(r.spend)::BIGINT
    FROM ledger_records r, cardgate_windows(r.created) b
    WHERE r.spend <> 0
    GROUP BY r.cardholder, b.lo, b.hi, r.card, r.currency, r.category, r.mcc;

CREATE OR REPLACE FUNCTION cardgate_reserve(
    p_event_id TEXT, p_ch TEXT, p_auth TEXT, p_card TEXT, p_at BIGINT, p_currency TEXT,
    p_category TEXT, p_mcc TEXT, p_cat_name INTEGER, p_cat_mcc INTEGER,
    p_approved BOOLEAN, p_wanted BIGINT, p_controllable BOOLEAN, p_cashback BIGINT,
    p_reason TEXT, p_card_scope BOOLEAN[], p_lo BIGINT[], p_hi BIGINT[], p_limit BIGINT[],
    p_filtered BOOLEAN[], p_cat_limit INTEGER[], p_cat_id INTEGER[], p_unk_limit INTEGER[],
    p_unk_name TEXT[],
    OUT o_outcome TEXT, OUT o_amount BIGINT, OUT o_cut INTEGER, OUT o_reason TEXT
)
LANGUAGE plpgsql AS $$
DECLARE
    prev  RECORD;
    i     INTEGER;
    spent BIGINT;
    room  BIGINT;
BEGIN
    INSERT INTO ledger_cardholders AS c (cardholder) VALUES (p_ch)
        ON CONFLICT (cardholder) DO UPDATE SET cardholder = c.cardholder;
    SELECT q.approved, q.amount, q.cut, q.reason INTO prev FROM ledger_requests q
        WHERE q.event_id = p_event_id;
    IF FOUND THEN
        o_outcome := CASE WHEN prev.approved THEN 'duplicate' ELSE 'duplicate_declined' END;
        o_amount := prev.amount;
        o_cut := prev.cut;
        o_reason := prev.reason;
        RETURN;
    END IF;
    IF NOT p_approved OR p_wanted <= 0 THEN
        INSERT INTO ledger_requests (event_id, approved, amount, reason)
            VALUES (p_event_id, p_approved, GREATEST(p_wanted, 0), p_reason);
        o_outcome := 'passed';
        o_amount := p_wanted;
        RETURN;
    END IF;
    o_amount := p_wanted;
    o_cut := NULL;
    FOR i IN 1 .. COALESCE(array_length(p_lo, 1), 0) LOOP
        -- The window's totals by spend key (the bounds name the window).
        SELECT COALESCE(SUM(r.spend), 0) INTO spent FROM ledger_windows r
            WHERE r.cardholder = p_ch AND r.lo = p_lo[i] AND r.hi = p_hi[i]
              AND r.currency = p_currency
              AND (NOT p_card_scope[i] OR r.card = p_card)
              AND (NOT p_filtered[i]
                   OR EXISTS (SELECT 1 FROM unnest(p_cat_limit, p_cat_id) AS k(li, id)
                              WHERE k.li = i AND (k.id = r.cat_name OR k.id = r.cat_mcc))
                   OR (r.cat_name IS NULL AND EXISTS (
                              SELECT 1 FROM unnest(p_unk_limit, p_unk_name) AS u(li, name)
                              WHERE u.li = i AND u.name = r.category)));
        room := p_limit[i] - spent;
        IF o_amount > room THEN
            IF p_controllable AND room > 0 AND room >= p_cashback THEN
                o_amount := room;
                o_cut := i;
            ELSE
                INSERT INTO ledger_requests (event_id, approved, amount, reason, cut)
                    VALUES (p_event_id, FALSE, 0, 'spending_limit', i);
                o_outcome := 'declined';
                o_amount := 0;
                o_cut := i;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    INSERT INTO ledger_facts (event_id, kind, cardholder, record_id, card, created, currency,
                              category, mcc, cat_name, cat_mcc, amount)
        VALUES (p_event_id, 'reserve', p_ch, p_auth, p_card, p_at, p_currency, p_category,
                p_mcc, p_cat_name, p_cat_mcc, o_amount);
    INSERT INTO ledger_requests (event_id, approved, amount, reason, cut)
        VALUES (p_event_id, TRUE, o_amount,
                CASE WHEN o_cut IS NULL THEN p_reason ELSE 'spending_limit' END, o_cut);
    -- As migration 6 (the triggers move the windows).
    INSERT INTO ledger_records (cardholder, record_id, from_auth, card, created, currency,
                                category, mcc, cat_name, cat_mcc, spend, held)
        VALUES (p_ch, p_auth, TRUE, p_card, p_at, p_currency, p_category, p_mcc,
                p_cat_name, p_cat_mcc, o_amount, o_amount)
        ON CONFLICT (cardholder, record_id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM cardgate_settle(p_ch, p_auth);
    END IF;
    o_outcome := 'held';
END $$;

-- The velocity counts read the card's authorizations of the last day: by
-- cardholder and time they read those of every card of the cardholder (a
-- company's hundreds). The window sums, which used that index, read
-- ledger_windows now. Last: dropping an index locks the table against reads
-- too (older replicas' snapshots), so only until the commit that follows.
CREATE INDEX ledger_records_velocity ON ledger_records (cardholder, card, created)
    WHERE from_auth;
DROP INDEX ledger_records_window;
";
