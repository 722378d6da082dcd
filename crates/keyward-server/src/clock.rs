//! The time keyward decides by: expiries, lifetimes, polling intervals, back-offs. One
//! [`Clock`] in the application state, so that tests move time instead of sleeping
//! through it: [`SystemClock`] in production, [`ShiftedClock`] (the system's time plus
//! an offset a test moves forward) in tests. Times are seconds since the Unix epoch.

use std::sync::atomic::{AtomicI64, Ordering};

/// Where the time comes from.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch, now.
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        crate::domain::now()
    }
}

/// The system's clock shifted by an offset that only grows once the clock exists: for
/// tests, which move time forward (past an expiry, a polling interval, a back-off)
/// instead of sleeping. A frozen clock stands still except when moved, for tests that
/// must not depend on two requests landing in the same wall-clock second; a clock made
/// [`ShiftedClock::starting_at`] a past time serves tokens a fixture keeps as at the
/// time they were issued.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset: AtomicI64,
    /// The system time at which the clock was frozen; 0 while it runs.
    frozen_at: AtomicI64,
}

impl ShiftedClock {
    /// A running clock that reads `start` now and goes on from there.
    pub fn starting_at(start: i64) -> Self {
        Self {
            offset: AtomicI64::new(start - crate::domain::now()),
            frozen_at: AtomicI64::new(0),
        }
    }

    /// Moves this clock `seconds` forward.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds.max(0), Ordering::SeqCst);
    }

    /// Stops this clock where it is; from now on only [`ShiftedClock::advance`] moves it.
    pub fn freeze(&self) {
        let _ = self.frozen_at.compare_exchange(
            0,
            crate::domain::now(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> i64 {
        let base = match self.frozen_at.load(Ordering::SeqCst) {
            0 => crate::domain::now(),
            frozen => frozen,
        };
        base + self.offset.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_moves_forward_only() {
        let clock = ShiftedClock::default();
        let before = clock.now();
        clock.advance(3600);
        assert!(clock.now() >= before + 3600);
        clock.advance(-100);
        assert!(clock.now() >= before + 3600);
    }

    #[test]
    fn a_clock_may_start_in_the_past() {
        let start = crate::domain::now() - 86_400 * 400;
        let clock = ShiftedClock::starting_at(start);
        assert!((start..start + 5).contains(&clock.now()));
        clock.advance(60);
        assert!(clock.now() >= start + 60);
    }

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let clock = ShiftedClock::default();
        clock.advance(10);
        clock.freeze();
        let frozen = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(clock.now(), frozen);
        clock.advance(5);
        assert_eq!(clock.now(), frozen + 5);
    }
}
