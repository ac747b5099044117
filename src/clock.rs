//! Time, from one place: the real clock in production, a manual one that tests move forward
//! instead of sleeping. Every expiry Lectern decides (idle and absolute lifetimes, token `exp`,
//! revocation entries, rate-limit windows, grace windows) reads this clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

/// Seconds since the Unix epoch, from the real clock or a manual one.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that starts at the real time and moves only when told to.
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(system_now()))),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match &self.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => system_now(),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved and ignores this.
    pub fn advance(&self, by: Duration) {
        match &self.manual {
            Some(at) => {
                at.fetch_add(
                    i64::try_from(by.as_secs()).unwrap_or(i64::MAX),
                    Ordering::SeqCst,
                );
            }
            None => tracing::warn!("the system clock cannot be moved"),
        }
    }
}

fn system_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A timestamp for people: `2026-11-23 21:40 UTC`.
pub fn format_time(unix: i64) -> String {
    Moment(unix).to_string()
}

/// A timestamp for machines: RFC 3339.
pub fn rfc3339(unix: i64) -> String {
    Moment(unix).datetime().to_string()
}

/// A moment as a page shows it: `<time datetime="{{ m.datetime() }}">{{ m }}</time>`, UTC to
/// the minute in the page, turned into the learner's own time zone by the page's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment(pub i64);

impl Moment {
    /// RFC 3339, for the `datetime` attribute.
    pub fn datetime(&self) -> Rfc3339 {
        Rfc3339(*self)
    }

    /// Written with the date's own fields into one buffer, rather than through a format
    /// description that the time crate would interpret again for each moment of a page; the raw
    /// number when the year has no four digits, as RFC 3339 allows none other.
    fn write(self, f: &mut std::fmt::Formatter<'_>, machine: bool) -> std::fmt::Result {
        let at = time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|at| u16::try_from(at.year()).ok().map(|year| (at, year)))
            .filter(|(_, year)| *year <= 9999);
        let Some((at, year)) = at else {
            return write!(f, "{}", self.0);
        };
        let (hour, minute, second) = at.to_hms();
        // `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DD HH:MM UTC`: twenty bytes either way.
        let mut out = *if machine {
            b"0000-00-00T00:00:00Z"
        } else {
            b"0000-00-00 00:00 UTC"
        };
        let digits = |out: &mut [u8; 20], from: usize, value: u16, width: usize| {
            let mut value = value;
            for i in (from..from + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        digits(&mut out, 0, year, 4);
        digits(&mut out, 5, u16::from(u8::from(at.month())), 2);
        digits(&mut out, 8, u16::from(at.day()), 2);
        digits(&mut out, 11, u16::from(hour), 2);
        digits(&mut out, 14, u16::from(minute), 2);
        if machine {
            digits(&mut out, 17, u16::from(second), 2);
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Display for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write(f, false)
    }
}

/// A [`Moment`] in RFC 3339, as [`Moment::datetime`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(Moment);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.write(f, true)
    }
}

/// Whole seconds of a duration, as the signed integers timestamps are kept in.
pub fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + 90);
        let copy = clock.clone();
        copy.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), start + 100, "clones share one clock");
    }

    #[test]
    fn the_system_clock_follows_real_time() {
        let clock = Clock::system();
        let before = system_now();
        clock.advance(Duration::from_secs(3600));
        assert!((before..=before + 2).contains(&clock.now()));
    }

    #[test]
    fn times_read_for_people_and_machines() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_470_005), "2026-11-23 21:40 UTC");
        assert_eq!(rfc3339(1_795_470_005), "2026-11-23T21:40:05Z");
        // Beyond four-digit years RFC 3339 has no form: the number itself.
        assert_eq!(rfc3339(-62_167_219_201), "-62167219201");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
