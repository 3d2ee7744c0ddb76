//! Real flows: a probe that tries one TCP or UDP exchange, and responders that answer it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Netns, Proto};

/// How long a probe waits before calling a flow blocked.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Tries one flow from the current thread's namespace. TCP is open when the three-way
/// handshake completed and `pong` came back for `ping`; UDP when the datagram was answered
/// from `target`.
pub fn probe_here(proto: Proto, target: SocketAddr, timeout: Duration) -> bool {
    match proto {
        Proto::Tcp => TcpStream::connect_timeout(&target, timeout)
            .and_then(|mut s| {
                s.set_read_timeout(Some(timeout))?;
                s.write_all(b"ping")?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf)?;
                Ok(&buf == b"pong")
            })
            .unwrap_or(false),
        Proto::Udp => {
            let bind: SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let Ok(socket) = UdpSocket::bind(bind) else {
                return false;
            };
            let _ = socket.set_read_timeout(Some(timeout));
            if socket.send_to(b"ping", target).is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            matches!(socket.recv_from(&mut buf), Ok((4, from)) if from == target && &buf[..4] == b"pong")
        }
    }
}

/// Servers that answer `ping` with `pong` on TCP and UDP, counting what they receive.
pub struct Responders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    received: Arc<AtomicU64>,
}

impl Responders {
    /// Starts one responder per (proto, address) inside `ns`.
    pub fn start(ns: &Netns, endpoints: &[(Proto, SocketAddr)]) -> Responders {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for &(proto, address) in endpoints {
            let stop = stop.clone();
            let received = received.clone();
            // Bind inside the namespace, serve from the same thread.
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            threads.push(ns.spawn(move || match proto {
                Proto::Tcp => {
                    let listener = TcpListener::bind(address)
                        .unwrap_or_else(|e| panic!("bind tcp {address}: {e}"));
                    listener.set_nonblocking(true).unwrap();
                    ready_tx.send(()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((mut stream, _)) => {
                                received.fetch_add(1, Ordering::Relaxed);
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                                let mut buf = [0u8; 4];
                                if stream.read_exact(&mut buf).is_ok() {
                                    let _ = stream.write_all(b"pong");
                                }
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                }
                Proto::Udp => {
                    let socket = UdpSocket::bind(address)
                        .unwrap_or_else(|e| panic!("bind udp {address}: {e}"));
                    socket
                        .set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                    ready_tx.send(()).unwrap();
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((len, from)) = socket.recv_from(&mut buf) {
                            received.fetch_add(1, Ordering::Relaxed);
                            if &buf[..len] == b"ping" {
                                let _ = socket.send_to(b"pong", from);
                            }
                        }
                    }
                }
            }));
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("responder {proto:?} {address} did not start"));
        }
        Responders {
            stop,
            threads,
            received,
        }
    }

    /// Datagrams and connections received so far, all responders together.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
