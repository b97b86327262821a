//! Free loopback ports for the listeners a test starts (the gateway's, or a peer's).
//!
//! A port is free when the kernel hands it to `bind(127.0.0.1:0)`, but it stays free only until
//! someone binds it: two tests of one binary that run at once may each be handed the same port
//! before either has started its listener (CI saw a gateway's HTTP door refused because the other
//! quick start's API had taken the port). So every port this binary has handed out is remembered,
//! and never handed out again.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that nothing listens on and no other caller in this test binary was given.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Ports handed out before are held bound while looking, so the kernel moves on past them.
    let mut held = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("a bound listener has an address").port();
        if handed_out.insert(port) {
            return port;
        }
        held.push(listener);
    }
}

/// `N` distinct free ports (see [`free_port`]).
pub fn free_ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| free_port())
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound but
/// not listening. A port that is merely free can be taken meanwhile by a listener on port 0 that
/// another test of the binary starts, and then a "nobody listens" test finds somebody.
pub fn refusing_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.bind("127.0.0.1:0".parse().expect("an address")).expect("bind a loopback port");
    let port = socket.local_addr().expect("a bound socket has an address").port();
    (port, socket)
}
