//! Whether something listens on a port, for tests that wait on a peer they started.
//! Use it with `#[path = "listening.rs"] mod listening;` (from a file in tests/common) or
//! `#[path = "common/listening.rs"] mod listening;` (from a test file).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Whether a listener accepts on `addr`. A connection whose local and peer addresses are equal is
/// not one: with nothing listening on a port of the ephemeral range, the kernel may pick that very
/// port as the source and join the socket to itself (a TCP simultaneous open).
pub fn accepts(addr: &SocketAddr) -> bool {
    TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok_and(|s| !joined_to_itself(&s))
}

/// Whether a connected socket is joined to itself (see [`accepts`]).
pub fn joined_to_itself(stream: &TcpStream) -> bool {
    stream.local_addr().ok() == stream.peer_addr().ok()
}
