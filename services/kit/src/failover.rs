//! Calling a service that any of several nodes can answer (the log nodes):
//! stick to the node that answered last, move on when it cannot be reached.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::settings::PeerSettings;
use crate::KitError;

/// Whether a call failed before it reached the callee, so that it is safe to
/// send elsewhere even when it is not idempotent.
pub fn never_sent(status: &Status) -> bool {
    crate::grpc::status_never_sent(status)
}

/// Whether a failed idempotent call may be tried on another node.
pub fn unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
}

/// A channel to `address` (`host:port` or a URI) that connects on first use,
/// with the settings every internal client wants (internal TLS included). `setting` names the
/// configuration key the address came from, for the error.
pub fn lazy_channel(address: &str, setting: &str) -> Result<Channel, KitError> {
    let endpoint = if address.contains("://") {
        Endpoint::from_shared(address.to_owned()).map_err(|error| format!("{address}: {error}"))
    } else {
        crate::tls::peer_endpoint(address, None).map_err(|error| error.to_string())
    }
    .map_err(|error| KitError::Settings(format!("setting `{setting}`: {error}")))?;
    Ok(endpoint
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

/// Clients of every node of one service.
pub struct Failover<C> {
    nodes: Vec<(String, C)>,
    preferred: AtomicUsize,
    timeout: Duration,
}

impl<C: Clone> Failover<C> {
    /// `nodes` pairs each node's address (for messages) with its client; every
    /// call, retries included, ends within `timeout`.
    pub fn new(nodes: Vec<(String, C)>, timeout: Duration) -> Self {
        Self {
            nodes,
            preferred: AtomicUsize::new(0),
            timeout,
        }
    }

    /// A client of every node `peers` names, made by `client` from a lazy
    /// channel; `section` names the settings in an error.
    pub fn connect(
        peers: &PeerSettings,
        section: &str,
        client: impl Fn(Channel) -> C,
    ) -> Result<Self, KitError> {
        let setting = format!("{section}.endpoints");
        let nodes = peers
            .endpoints
            .iter()
            .map(|address| Ok((address.clone(), client(lazy_channel(address, &setting)?))))
            .collect::<Result<Vec<_>, KitError>>()?;
        Ok(Self::new(nodes, peers.request_timeout()))
    }

    /// How long a call may take, retries on other nodes included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every node's client, in order.
    pub fn clients(&self) -> impl Iterator<Item = &C> {
        self.nodes.iter().map(|(_, client)| client)
    }

    /// The node tried first now, by its place among the nodes.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.nodes.len().max(1)
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is configured.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The address of the node at `index`, for messages.
    pub fn address(&self, index: usize) -> &str {
        self.nodes
            .get(index)
            .map_or("", |(address, _)| address.as_str())
    }

    /// Moves on from the node at `index` (it could not be reached), unless
    /// another call already did.
    pub fn pass_over(&self, index: usize) {
        let next = (index + 1) % self.nodes.len().max(1);
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Makes the node at `address` the one tried first, if it is one of
    /// these nodes (e.g. the one a callee said it forwarded to). Returns
    /// whether that changed the preferred node.
    pub fn prefer(&self, address: &str) -> bool {
        match self.nodes.iter().position(|(known, _)| known == address) {
            Some(index) => self.preferred.swap(index, Ordering::Relaxed) != index,
            None => false,
        }
    }

    /// Calls `call` on the preferred node, moving on to the next while `retry`
    /// says the failure allows it. A refusal `retry` does not allow comes back
    /// as the callee sent it (clients match etcd's messages exactly); running
    /// out of nodes names the call and the last node tried. A connection
    /// that broke under a call counts as UNAVAILABLE, for `retry` and for
    /// the caller alike: tonic's UNKNOWN "transport error" says nothing a
    /// caller can act on.
    pub async fn call<T, F, Fut>(
        &self,
        what: &str,
        retry: fn(&Status) -> bool,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        if self.nodes.is_empty() {
            return Err(Status::unavailable(format!(
                "{what}: no node is configured"
            )));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last_error = Status::unavailable(format!("{what}: no node answered"));
        for attempt in 0.. {
            let index = (self.preferred.load(Ordering::Relaxed) + attempt) % self.nodes.len();
            let (address, client) = &self.nodes[index];
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let named = |status: &Status| {
                Status::new(
                    status.code(),
                    format!("{what} via {address}: {}", status.message()),
                )
            };
            let answered = tokio::time::timeout(remaining, call(client.clone()))
                .await
                .map(|answer| {
                    answer.map_err(|status| crate::grpc::unavailable_if_broken(status, ""))
                });
            match answered {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if retry(&status) => {
                    last_error = named(&status);
                    if attempt + 1 >= self.nodes.len() {
                        // Every node failed once: give the cluster a moment.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    last_error = Status::unavailable(format!("{what} via {address}: timed out"));
                    break;
                }
            }
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_preferred_node_is_tried_first() {
        let failover = Failover::new(
            vec![("a".to_owned(), 0_u8), ("b".to_owned(), 1_u8)],
            Duration::from_secs(1),
        );
        assert!(!failover.prefer("c"));
        assert!(!failover.prefer("a"));
        assert!(failover.prefer("b"));
        let answered = failover
            .call("test", unavailable, |node| async move {
                Ok::<_, Status>(tonic::Response::new(node))
            })
            .await;
        assert_eq!(answered.ok(), Some(1));
    }

    #[tokio::test]
    async fn a_refused_call_moves_to_the_next_node_and_a_final_one_keeps_its_code() {
        let failover = Failover::new(
            vec![("a".to_owned(), 0_u8), ("b".to_owned(), 1_u8)],
            Duration::from_secs(1),
        );
        let answered = failover
            .call("test", unavailable, |node| async move {
                if node == 0 {
                    Err(Status::unavailable("down"))
                } else {
                    Ok(tonic::Response::new(node))
                }
            })
            .await;
        assert_eq!(answered.ok(), Some(1));
        let refused = failover
            .call("test", unavailable, |_| async move {
                Err::<tonic::Response<u8>, _>(Status::failed_precondition("no"))
            })
            .await
            .err();
        assert_eq!(
            refused.as_ref().map(Status::code),
            Some(Code::FailedPrecondition)
        );
        assert_eq!(refused.as_ref().map(Status::message), Some("no"));
    }

    #[tokio::test]
    async fn a_connection_broken_under_a_call_is_unavailable_and_moves_on() {
        let failover = Failover::new(
            vec![("a".to_owned(), 0_u8), ("b".to_owned(), 1_u8)],
            Duration::from_secs(1),
        );
        let answered = failover
            .call("test", unavailable, |node| async move {
                if node == 0 {
                    Err(Status::unknown("transport error"))
                } else {
                    Ok(tonic::Response::new(node))
                }
            })
            .await;
        assert_eq!(answered.ok(), Some(1));

        let broken = failover
            .call("test", never_sent, |_| async move {
                Err::<tonic::Response<u8>, _>(Status::unknown("transport error"))
            })
            .await
            .err();
        assert_eq!(broken.as_ref().map(Status::code), Some(Code::Unavailable));

        let genuine = failover
            .call("test", unavailable, |_| async move {
                Err::<tonic::Response<u8>, _>(Status::unknown("election: not leader"))
            })
            .await
            .err();
        assert_eq!(genuine.as_ref().map(Status::code), Some(Code::Unknown));
        assert_eq!(
            genuine.as_ref().map(Status::message),
            Some("election: not leader")
        );
    }
}
