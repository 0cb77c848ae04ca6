//! The fenced register: a toy resource guarded by leases.
//!
//! One counter per lease. A holder increments it by reading the value and
//! writing value + 1, both with its fencing token. With fencing on, the
//! register remembers the highest token it has seen and refuses any read or
//! write carrying a lower one. Reads must be fenced too: a holder that read
//! with an old token and writes after a newer holder read (but before it
//! wrote) would otherwise lose that holder's increment.
//!
//! With fencing off (the negative control) it accepts everything, which is
//! what a resource that ignores tokens does: a client paused past its lease
//! then overwrites its successor's work, and the checker must catch it.
//!
//! The register logs every operation, accepted or not, on the run's clock;
//! that log is what the checker judges (the register cannot lie to it: it
//! only records).

use super::history::{Nanos, RunClock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegOpKind {
    /// Read the counter.
    Read,
    /// Set the counter.
    Write,
}

/// One register operation as the register saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegOp {
    /// When the register handled it (run clock); operations are logged in
    /// the order they were handled.
    pub at: Nanos,
    /// The worker that sent it.
    pub worker: u32,
    /// The lease guarding this counter.
    pub lease: String,
    /// Read or write.
    pub kind: RegOpKind,
    /// The fencing token sent.
    pub token: u64,
    /// Value read, or value written.
    pub value: u64,
    /// The counter's value before the operation.
    pub before: u64,
    /// Whether the register accepted it.
    pub accepted: bool,
}

#[derive(Default)]
struct Cell {
    value: u64,
    max_token: u64,
}

#[derive(Default)]
struct Inner {
    cells: HashMap<String, Cell>,
    log: Vec<RegOp>,
}

/// Why the register refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// The highest token the register has seen for this counter.
    pub seen: u64,
}

/// The register shared by every worker of a run.
pub struct FencedRegister {
    clock: RunClock,
    fencing: bool,
    inner: Mutex<Inner>,
}

impl FencedRegister {
    /// A register; `fencing: false` makes it accept stale tokens.
    pub fn new(clock: RunClock, fencing: bool) -> Self {
        FencedRegister {
            clock,
            fencing,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether stale tokens are refused.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    fn op(
        &self,
        worker: u32,
        lease: &str,
        kind: RegOpKind,
        token: u64,
        value: Option<u64>,
    ) -> Result<u64, Stale> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let at = self.clock.now();
        let cell = inner.cells.entry(lease.to_string()).or_default();
        let before = cell.value;
        let accepted = !self.fencing || token >= cell.max_token;
        let seen = cell.max_token;
        if accepted {
            cell.max_token = cell.max_token.max(token);
            if let Some(v) = value {
                cell.value = v;
            }
        }
        inner.log.push(RegOp {
            at,
            worker,
            lease: lease.to_string(),
            kind,
            token,
            value: value.unwrap_or(before),
            before,
            accepted,
        });
        if accepted {
            Ok(value.unwrap_or(before))
        } else {
            Err(Stale { seen })
        }
    }

    /// Reads the counter guarded by `lease` with `token`.
    pub fn read(&self, worker: u32, lease: &str, token: u64) -> Result<u64, Stale> {
        self.op(worker, lease, RegOpKind::Read, token, None)
    }

    /// Sets the counter guarded by `lease` to `value` with `token`.
    pub fn write(&self, worker: u32, lease: &str, token: u64, value: u64) -> Result<(), Stale> {
        self.op(worker, lease, RegOpKind::Write, token, Some(value))
            .map(|_| ())
    }

    /// Everything the register handled, in order.
    pub fn log(&self) -> Vec<RegOp> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_register_refuses_lower_tokens_on_read_and_write() {
        let r = FencedRegister::new(RunClock::start(), true);
        assert_eq!(r.read(1, "a", 5), Ok(0));
        assert_eq!(r.write(1, "a", 5, 1), Ok(()));
        assert_eq!(r.read(2, "a", 9), Ok(1));
        assert_eq!(r.write(1, "a", 5, 2), Err(Stale { seen: 9 }));
        assert_eq!(r.read(1, "a", 5), Err(Stale { seen: 9 }));
        // Counters are independent.
        assert_eq!(r.write(1, "b", 5, 1), Ok(()));
        let log = r.log();
        assert_eq!(log.len(), 6);
        assert!(!log[3].accepted && log[3].before == 1 && log[3].value == 2);
    }

    #[test]
    fn unfenced_register_accepts_stale_tokens() {
        let r = FencedRegister::new(RunClock::start(), false);
        r.read(2, "a", 9).expect("read");
        assert_eq!(r.write(1, "a", 5, 7), Ok(()));
        assert_eq!(r.read(3, "a", 1), Ok(7));
    }
}
