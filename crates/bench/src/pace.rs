//! When each client sends its next operation.
//!
//! Closed loop: as soon as the previous one finished; the intended send time
//! is the actual one. Open loop: on a fixed schedule (`start + offset + k ×
//! interval`), whatever the server does. The schedule is what makes open-loop
//! latency honest: a client that falls behind sends at once, and its latency
//! is counted from when the operation *should* have been sent, so a stall
//! shows up in every operation that waited for it, not just in the one that
//! hit it (the "coordinated omission" that closed-loop tools suffer from).

use std::time::{Duration, Instant};

/// One client's schedule.
#[derive(Debug)]
pub struct Pacer {
    /// Open loop: the next intended send time and the gap between sends.
    schedule: Option<(Instant, Duration)>,
    /// No operation is started at or after this instant.
    end: Instant,
}

impl Pacer {
    /// Closed loop until `end`.
    pub fn closed(end: Instant) -> Self {
        Pacer {
            schedule: None,
            end,
        }
    }

    /// Open loop at `rate` operations per second from `start`, shifted by
    /// `phase` (a fraction of one interval, in `[0, 1)`) so that clients
    /// sharing a rate do not all send at the same instant.
    pub fn open(start: Instant, rate: f64, phase: f64, end: Instant) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        let first = start + interval.mul_f64(phase.clamp(0.0, 1.0));
        Pacer {
            schedule: Some((first, interval)),
            end,
        }
    }

    /// The pacer for client `index` of `clients`: open loop at the client's
    /// share of `rate`, or closed loop.
    pub fn for_client(
        rate: Option<f64>,
        index: usize,
        clients: usize,
        start: Instant,
        end: Instant,
    ) -> Self {
        match rate {
            Some(total) => {
                let clients = clients.max(1);
                Pacer::open(
                    start,
                    total / clients as f64,
                    index as f64 / clients as f64,
                    end,
                )
            }
            None => Pacer::closed(end),
        }
    }

    /// Waits for the next send time and returns the intended send time, or
    /// `None` once the run is over.
    pub async fn next(&mut self) -> Option<Instant> {
        match &mut self.schedule {
            None => {
                let now = Instant::now();
                (now < self.end).then_some(now)
            }
            Some((next, interval)) => {
                let intended = *next;
                if intended >= self.end {
                    return None;
                }
                *next += *interval;
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended.into()).await;
                }
                Some(intended)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_loop_keeps_its_schedule_when_late() {
        let start = Instant::now() - Duration::from_millis(100);
        let mut p = Pacer::open(start, 100.0, 0.0, start + Duration::from_millis(150));
        // 10 ms apart, and already 100 ms late: the first ten come at once,
        // each with its own intended time.
        let a = p.next().await.unwrap();
        let b = p.next().await.unwrap();
        assert_eq!(a, start);
        assert_eq!(b - a, Duration::from_millis(10));
        let mut n = 2;
        while p.next().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 15, "150 ms at 100/s");
    }

    #[tokio::test]
    async fn closed_loop_stops_at_the_end() {
        let mut p = Pacer::closed(Instant::now());
        assert!(p.next().await.is_none());
    }
}
