//! A TCP relay in front of one address, which a test can cut or slow: the
//! raft links between log nodes go through one relay per node, so a nemesis
//! can partition a node or delay what reaches it without touching the
//! processes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the relay does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Carries everything at once.
    Open,
    /// Drops every connection and refuses new ones: the peer is unreachable.
    Cut,
    /// Holds each chunk this long before passing it on.
    Delayed(Duration),
}

/// A listening relay; dropping it stops it and closes its connections.
pub struct Relay {
    /// Where peers connect instead of the target.
    pub addr: String,
    state: watch::Sender<LinkState>,
    accept: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        // Connections end when they see the sender go.
    }
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `target`.
    pub async fn start(target: &str) -> Result<Self> {
        let target: SocketAddr = target
            .parse()
            .with_context(|| format!("relay target {target}"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a relay")?;
        let addr = listener.local_addr()?.to_string();
        let (state, watching) = watch::channel(LinkState::Open);
        let accept = tokio::spawn(accept_loop(listener, target, watching));
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// Changes what the relay does from now on; cutting also drops the
    /// connections it carries.
    pub fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    /// What the relay does now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Receiver<LinkState>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if *state.borrow() == LinkState::Cut {
            drop(inbound);
            continue;
        }
        tokio::spawn(carry(inbound, target, state.clone()));
    }
}

/// One connection: both directions until either side closes or the link is cut.
async fn carry(inbound: TcpStream, target: SocketAddr, state: watch::Receiver<LinkState>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let mut cut = state.clone();
    tokio::select! {
        () = pump(in_read, out_write, state.clone()) => {}
        () = pump(out_read, in_write, state) => {}
        () = wait_for_cut(&mut cut) => {}
    }
}

async fn wait_for_cut(state: &mut watch::Receiver<LinkState>) {
    // An error means the relay is gone: that is a cut too.
    let _ = state.wait_for(|state| *state == LinkState::Cut).await;
}

/// Copies one direction, holding each chunk while the link is delayed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<LinkState>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let now = *state.borrow();
        match now {
            LinkState::Cut => return,
            LinkState::Delayed(delay) => tokio::time::sleep(delay).await,
            LinkState::Open => {}
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(addr)
    }

    async fn round_trip(stream: &mut TcpStream) -> Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer.to_vec())
    }

    #[tokio::test]
    async fn an_open_relay_carries_bytes_both_ways() -> Result<()> {
        let relay = Relay::start(&echo_server().await?).await?;
        let mut stream = TcpStream::connect(&relay.addr).await?;
        assert_eq!(round_trip(&mut stream).await?, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn a_cut_relay_drops_its_connections_and_refuses_new_ones() -> Result<()> {
        let relay = Relay::start(&echo_server().await?).await?;
        let mut carried = TcpStream::connect(&relay.addr).await?;
        round_trip(&mut carried).await?;
        relay.set(LinkState::Cut);
        let broken = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut carried)).await?;
        assert!(broken.is_err(), "a cut link still carried bytes");
        let mut fresh = TcpStream::connect(&relay.addr).await?;
        let refused = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut fresh)).await?;
        assert!(refused.is_err(), "a cut relay took a new connection");
        relay.set(LinkState::Open);
        let mut healed = TcpStream::connect(&relay.addr).await?;
        assert_eq!(round_trip(&mut healed).await?, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn a_delayed_relay_holds_each_chunk() -> Result<()> {
        let relay = Relay::start(&echo_server().await?).await?;
        relay.set(LinkState::Delayed(Duration::from_millis(150)));
        let mut stream = TcpStream::connect(&relay.addr).await?;
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut stream).await?, b"ping");
        // Held once each way.
        assert!(started.elapsed() >= Duration::from_millis(300));
        Ok(())
    }
}
