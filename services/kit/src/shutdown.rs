//! Graceful shutdown: one signal, fanned out to every task of a service.

use std::future::Future;

use tokio::sync::watch;

/// What a service's `serve` stops on: any future that resolves once (the
/// binaries pass [`signal`], tests a channel of their own).
pub trait Signal: Future<Output = ()> + Send + 'static {}

impl<F: Future<Output = ()> + Send + 'static> Signal for F {}

/// Resolves on the first SIGINT or SIGTERM (`docker compose stop` sends SIGTERM).
pub async fn signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received sigint, shutting down"),
        () = terminate => tracing::info!("received sigterm, shutting down"),
    }
}

/// Starts the shutdown of everything watching the paired [`ShutdownWatch`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Tells every watch to stop; later calls change nothing.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

/// A cloneable view of one shutdown, for every task that must stop with it.
/// A trigger that is dropped without firing also counts as shutdown: nothing
/// could fire it any more.
#[derive(Clone, Debug)]
pub struct ShutdownWatch {
    receiver: watch::Receiver<bool>,
}

impl ShutdownWatch {
    /// Resolves once shutdown has begun.
    pub async fn cancelled(&mut self) {
        let _ = self.receiver.wait_for(|stopped| *stopped).await;
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        *self.receiver.borrow() || self.receiver.has_changed().is_err()
    }
}

/// A trigger and its watch.
pub fn channel() -> (ShutdownTrigger, ShutdownWatch) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, ShutdownWatch { receiver })
}

/// A watch that fires when `future` resolves, e.g. `from_future(signal())`.
pub fn from_future(future: impl Future<Output = ()> + Send + 'static) -> ShutdownWatch {
    let (trigger, watch) = channel();
    tokio::spawn(async move {
        future.await;
        trigger.trigger();
    });
    watch
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let (trigger, watch) = channel();
        let mut first = watch.clone();
        let mut second = watch;
        assert!(!first.is_cancelled());
        trigger.trigger();
        first.cancelled().await;
        second.cancelled().await;
        assert!(second.is_cancelled());
    }

    #[tokio::test]
    async fn a_future_drives_the_watch() {
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        let mut watch = from_future(async move {
            let _ = wait.await;
        });
        let pending = tokio::time::timeout(Duration::from_millis(50), watch.cancelled()).await;
        assert!(pending.is_err(), "fired before the future resolved");
        let _ = done.send(());
        tokio::time::timeout(Duration::from_secs(5), watch.cancelled())
            .await
            .expect("fires once the future resolves");
    }

    #[tokio::test]
    async fn a_dropped_trigger_counts_as_shutdown() {
        let (trigger, mut watch) = channel();
        drop(trigger);
        tokio::time::timeout(Duration::from_secs(5), watch.cancelled())
            .await
            .expect("a dropped trigger releases the watch");
        assert!(watch.is_cancelled());
    }
}
