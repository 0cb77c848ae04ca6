//! The server's stop signal, as the long-lived gRPC streams see it.
//!
//! hyper's graceful shutdown waits for every stream in flight. A `Watch`
//! or a `RenewStream` never ends by itself, so without this a client that
//! keeps one open would hold a SIGTERMed node up until its orchestrator's
//! SIGKILL (the chaos suite's `graceful-restart` fault showed it: a leader
//! with open watches took 5.5 s to exit, one without 0.2 s). The server
//! raises the signal once the hand-over is done and before it stops
//! accepting; each stream then ends with `UNAVAILABLE`, which every client
//! takes as "go to another node" (a watch resumes from its last revision).

use tokio::sync::watch;

/// A clonable view of the server's stop signal. [`Stopping::never`] is for
/// services built without a server around them (unit tests).
#[derive(Debug, Clone, Default)]
pub struct Stopping(Option<watch::Receiver<bool>>);

impl Stopping {
    /// Follows `rx`: stopped once it holds `true`.
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Stopping(Some(rx))
    }

    /// A signal that is never raised.
    pub fn never() -> Self {
        Stopping(None)
    }

    /// Resolves once the server is stopping. A dropped sender (the server
    /// gone without raising it) never resolves: nothing is stopping then,
    /// and the stream ends with its connection instead.
    pub async fn wait(&mut self) {
        if let Some(rx) = self.0.as_mut() {
            if rx.wait_for(|stopping| *stopping).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn resolves_when_raised_and_never_otherwise() {
        let (tx, rx) = watch::channel(false);
        let mut s = Stopping::new(rx);
        let early = tokio::time::timeout(Duration::from_millis(50), s.wait()).await;
        assert!(early.is_err(), "not raised yet");
        tx.send(true).expect("send");
        tokio::time::timeout(Duration::from_secs(1), s.wait())
            .await
            .expect("raised");
        // A clone taken after the raise sees it too.
        let mut later = s.clone();
        tokio::time::timeout(Duration::from_secs(1), later.wait())
            .await
            .expect("still raised");
        let (tx, rx) = watch::channel(false);
        drop(tx);
        let mut orphan = Stopping::new(rx);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), orphan.wait())
                .await
                .is_err(),
            "a dropped sender is not a stop"
        );
        let mut never = Stopping::never();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), never.wait())
                .await
                .is_err()
        );
    }
}
