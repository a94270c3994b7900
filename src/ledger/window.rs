//! UTC calendar windows of Stripe's spending-limit intervals: which window a Unix
//! time falls in, named by the window's first second. Pure integer arithmetic on
//! days since the epoch (no time-zone database: every window is UTC).

use crate::decision::Interval;

const DAY: i64 = 86_400;

/// First second (Unix, UTC) of the `interval` window containing `t`.
///
/// `per_authorization` has no window: it maps to `t` itself. `weekly` starts on
/// Sunday 00:00 UTC (Stripe's definition, not ISO's Monday).
pub fn window_start(interval: Interval, t: i64) -> i64 {
    let day = t.div_euclid(DAY);
    match interval {
        Interval::PerAuthorization => t,
        Interval::Daily => day * DAY,
        // 1970-01-01 was a Thursday: (day + 4) mod 7 is 0 on Sundays.
        Interval::Weekly => (day - (day + 4).rem_euclid(7)) * DAY,
        Interval::Monthly => {
            let (y, m, _) = civil_from_days(day);
            days_from_civil(y, m, 1) * DAY
        }
        Interval::Yearly => {
            let (y, _, _) = civil_from_days(day);
            days_from_civil(y, 1, 1) * DAY
        }
        Interval::AllTime => 0,
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01, proleptic Gregorian
/// (H. Hinnant's public-domain algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-18 (a Wednesday) 12:00:00 UTC.
    const WED: i64 = 1_795_003_200 + 12 * 3600 - 1_795_003_200 % DAY;

    #[test]
    fn weekly_window_starts_sunday() {
        // Sunday 2026-11-15 is day 20_772 after the epoch.
        let sunday = 20_772 * DAY;
        assert_eq!(civil_from_days(20_772), (2026, 11, 15));
        assert_eq!(window_start(Interval::Weekly, WED), sunday);
        // The Sunday itself opens the window; the Saturday before belongs to the last.
        assert_eq!(window_start(Interval::Weekly, sunday), sunday);
        assert_eq!(window_start(Interval::Weekly, sunday - 1), sunday - 7 * DAY);
        // A Monday is not a window start.
        assert_eq!(window_start(Interval::Weekly, sunday + DAY), sunday);
        // The epoch (a Thursday) lies in the week of Sunday 1969-12-28.
        assert_eq!(window_start(Interval::Weekly, 0), -4 * DAY);
    }

    #[test]
    fn calendar_windows() {
        assert_eq!(civil_from_days(WED.div_euclid(DAY)), (2026, 11, 18));
        let day = window_start(Interval::Daily, WED);
        assert_eq!(day % DAY, 0);
        assert_eq!(WED - day, 12 * 3600);
        let month = window_start(Interval::Monthly, WED);
        assert_eq!(civil_from_days(month / DAY), (2026, 11, 1));
        let year = window_start(Interval::Yearly, WED);
        assert_eq!(civil_from_days(year / DAY), (2026, 1, 1));
        assert_eq!(window_start(Interval::AllTime, WED), 0);
        // Leap day and the last second of a year.
        let feb29 = days_from_civil(2028, 2, 29) * DAY;
        assert_eq!(civil_from_days(feb29 / DAY), (2028, 2, 29));
        assert_eq!(
            window_start(Interval::Monthly, feb29 + 5),
            days_from_civil(2028, 2, 1) * DAY
        );
        let new_year = days_from_civil(2027, 1, 1) * DAY;
        assert_eq!(window_start(Interval::Yearly, new_year - 1), year);
        assert_eq!(window_start(Interval::Yearly, new_year), new_year);
    }

    #[test]
    fn round_trip_over_centuries() {
        for z in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
