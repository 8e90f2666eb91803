//! Abuse limits: a token bucket per principal (agent, bot or customer) and
//! a count of unauthenticated connections per address. Limited clients get
//! `too_many_requests` (with `data.retry_after` in seconds) or are refused a
//! connection; nobody else notices.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by principal. DashMap: checked on every request from
/// many tasks; each entry is touched briefly and never across `.await`.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    /// Takes one token for `key`; on refusal returns how long until one is
    /// available.
    pub fn check(&self, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut b = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: rate.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_second).min(rate.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate.per_second))
        }
    }

    /// Forgets the buckets that have refilled by `now`: a full bucket is
    /// what a new one is, so nothing changes for anyone, and the map holds
    /// only principals seen lately (not every customer ever). Returns how
    /// many were forgotten.
    pub fn sweep(&self, rate: Rate, now: Instant) -> usize {
        let before = self.buckets.len();
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate.per_second < rate.burst
        });
        before.saturating_sub(self.buckets.len())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Unauthenticated connections per address.
#[derive(Debug, Default)]
pub(crate) struct UnauthenticatedCount {
    by_addr: DashMap<IpAddr, AtomicUsize>,
}

impl UnauthenticatedCount {
    /// Counts one more; `false` (and no count) when `cap` is reached.
    pub fn try_add(&self, addr: IpAddr, cap: usize) -> bool {
        let entry = self
            .by_addr
            .entry(addr)
            .or_insert_with(|| AtomicUsize::new(0));
        let mut current = entry.load(Ordering::Relaxed);
        loop {
            if current >= cap {
                return false;
            }
            match entry.compare_exchange(current, current + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// One fewer (login succeeded or the connection ended).
    pub fn remove(&self, addr: IpAddr) {
        if let Some(e) = self.by_addr.get(&addr) {
            let _ = e.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_A_SECOND_BURST_3: Rate = Rate {
        per_second: 10.0,
        burst: 3.0,
    };

    #[test]
    fn bucket_allows_burst_then_rate() {
        let l = RateLimiter::default();
        let rate = TEN_A_SECOND_BURST_3;
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", rate, t0).is_ok());
        }
        let wait = l.check("a", rate, t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(l.check("b", rate, t0).is_ok(), "buckets are per key");
        assert!(
            l.check("a", rate, t0 + Duration::from_millis(100)).is_ok(),
            "refilled"
        );
        assert!(l.check("a", rate, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn refilled_buckets_are_forgotten_and_others_kept() {
        let l = RateLimiter::default();
        let rate = TEN_A_SECOND_BURST_3;
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check("drained", rate, t0).unwrap();
        }
        l.check("touched", rate, t0).unwrap();
        assert_eq!(l.sweep(rate, t0), 0, "nothing has refilled yet");
        assert_eq!(l.len(), 2);
        // 0.15 s later `touched` is full again (2 + 1.5 >= 3), `drained` is
        // not (0 + 1.5 < 3): it must keep its debt.
        assert_eq!(l.sweep(rate, t0 + Duration::from_millis(150)), 1);
        assert_eq!(l.len(), 1);
        assert!(
            l.check("drained", rate, t0 + Duration::from_millis(150))
                .is_ok()
        );
        assert_eq!(l.sweep(rate, t0 + Duration::from_secs(1)), 1);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn unauthenticated_cap() {
        let c = UnauthenticatedCount::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(c.try_add(a, 2) && c.try_add(a, 2));
        assert!(!c.try_add(a, 2));
        assert!(c.try_add(b, 2), "per address");
        c.remove(a);
        assert!(c.try_add(a, 2));
    }
}
