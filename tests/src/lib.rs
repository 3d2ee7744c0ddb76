//! Test harness: network namespaces that play a Docker host, its containers and "the internet",
//! real TCP and UDP flows between them, and the enforcer binary run inside the host namespace.
//!
//! Rules every test here keeps:
//! - packets go only to addresses of namespaces the test made (203.0.113.0/24 and
//!   2001:db8:113::/64 for the internet, the test's own bridges and containers, loopback);
//! - every namespace is deleted when its [`Netns`] is dropped, also when a test panics;
//! - every wait is bounded (connect and receive timeouts, capped loops).

pub mod docker;
pub mod host;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Fails the test unless it runs as root (namespaces, bridges and nftables need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the namespace tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run the README's test \
         command as root"
    );
}

/// Runs a command; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `ip <args>`.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// A network namespace: a named one this harness made (deleted on drop), or a process's (a
/// Docker container's, left alone on drop).
pub struct Netns {
    name: String,
    path: String,
    owned: bool,
}

impl Netns {
    /// Creates a namespace whose name starts with `role`, with loopback up.
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "enf{}-{}-{role}",
            std::process::id(),
            NEXT_NETNS.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns {
            path: format!("/var/run/netns/{name}"),
            name,
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: addresses (link-local ones too) are usable at once.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns
    }

    /// The namespace of process `pid` (a container's), called `label` in messages.
    pub fn of_process(pid: u32, label: &str) -> Netns {
        Netns {
            name: label.to_string(),
            path: format!("/proc/{pid}/ns/net"),
            owned: false,
        }
    }

    /// Another handle on this namespace that does not delete it on drop.
    pub fn borrowed(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            path: self.path.clone(),
            owned: false,
        }
    }

    /// The namespace's name (for `ip netns exec`; a label for a process's namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (for `nsenter --net=`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        if self.owned {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        } else {
            self.exec_ok("ip", args);
        }
    }

    /// The command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command;
        if self.owned {
            command = Command::new("ip");
            command.args(["netns", "exec", &self.name, program]);
        } else {
            command = Command::new("nsenter");
            command.arg(format!("--net={}", self.path)).arg(program);
        }
        command
    }

    /// Creates a veth pair: `name` here, `peer_name` inside `peer`.
    pub fn veth(&self, name: &str, peer: &Netns, peer_name: &str) {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            peer.name(),
        ]);
    }

    /// Runs a program inside the namespace and returns its output (whatever its status).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// Runs a program inside the namespace with `input` on its standard input.
    pub fn exec_with_input(&self, program: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait for child")
    }

    /// Runs a program inside the namespace; panics when it fails.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Output {
        let output = self.exec(program, args);
        assert!(
            output.status.success(),
            "{program} {} in {} failed: {}{}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates live there.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Like [`Netns::enter`], without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path.clone();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Kill whatever still runs inside (a daemon a failed test left), then delete.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn enter_netns(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Transport of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP: open means the three-way handshake completed and a byte came back.
    Tcp,
    /// UDP: open means the datagram was echoed.
    Udp,
}

/// How long a probe waits before calling a flow blocked.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Tries one flow from inside `from` (which must be the current thread's namespace).
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

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);
static NEXT_CANARY: AtomicUsize = AtomicUsize::new(0);

/// A file in the temporary directory, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Writes `content` to a new file whose name ends in `suffix`.
    pub fn new(suffix: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "enforcer-test-{}-{}{suffix}",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, content).expect("write temporary file");
        TempFile { path }
    }

    /// The file's path, as a string.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A directory in the temporary directory, removed with its content on drop (also when the
/// test fails).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new empty directory whose name starts with `role`.
    pub fn new(role: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "enforcer-{role}-{}-{}",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The root of this workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate sits in the workspace")
        .to_path_buf()
}

/// Runs `cargo build --quiet` (with `--release` when `release`) and `args` in this workspace;
/// returns the profile's output directory (under `CARGO_TARGET_DIR` when set). Panics when the
/// build fails.
pub fn cargo_build(release: bool, args: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .args(args)
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build {} failed", args.join(" "));
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
        .join(if release { "release" } else { "debug" })
}

/// The enforcer binary, built once per test process (debug profile, this workspace).
pub fn enforcer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(false, &["--package", "enforcer", "--bin", "enforcer"]).join("enforcer")
    })
    .clone()
}

/// A file of this repository (for example `rules/threegate.toml`).
pub fn repo_file(path: &str) -> PathBuf {
    workspace_root().join(path)
}

/// Where tests point enforcer when it must not find Docker: never the machine's own dockerd.
pub const NO_DOCKER: &str = "unix:///nonexistent/enforcer-test/docker.sock";

/// Runs `enforcer <args>` inside `ns`, with Docker unreachable ([`NO_DOCKER`]).
pub fn enforcer(ns: &Netns, args: &[&str]) -> Output {
    let bin = enforcer_bin();
    ns.command(bin.to_str().expect("utf-8 path"))
        .args(args)
        .env("DOCKER_HOST", NO_DOCKER)
        .stdin(Stdio::null())
        .output()
        .expect("run enforcer")
}

/// The handles of every object of `table inet <name>` in `ns` (table, chains, sets, rules),
/// as `nft` reports them; `None` when the table does not exist. The kernel gives each new
/// object a fresh handle, so any transaction that rewrites part of the table changes this
/// list, and an unchanged list proves that nothing was rewritten.
pub fn object_handles(ns: &Netns, table: &str) -> Option<Vec<u64>> {
    let output = ns.exec("nft", &["-j", "list", "table", "inet", table]);
    if !output.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("nft -j output");
    let handles = json["nftables"]
        .as_array()?
        .iter()
        .filter_map(|item| item.as_object()?.values().next()?.get("handle")?.as_u64())
        .collect();
    Some(handles)
}

/// `nft monitor` running in a namespace: an independent witness of every transaction the
/// kernel commits there.
pub struct Monitor {
    child: std::process::Child,
    output: Arc<std::sync::Mutex<String>>,
    ns_name: String,
}

impl Monitor {
    /// Starts the monitor and waits (at most 10 s) until it demonstrably sees transactions.
    pub fn start(ns: &Netns) -> Monitor {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "stdbuf",
                "-oL",
                "nft",
                "monitor",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nft monitor");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let monitor = Monitor {
            child,
            output,
            ns_name: ns.name().to_string(),
        };
        monitor.canary(ns);
        monitor
    }

    /// Makes a throw-away transaction (a new, empty table) and waits until the monitor reports
    /// it; retries with another table while the monitor may still be subscribing.
    fn canary(&self, ns: &Netns) {
        assert_eq!(
            ns.name(),
            self.ns_name,
            "monitor used with another namespace"
        );
        for _ in 0..20 {
            let name = format!("canary{}", NEXT_CANARY.fetch_add(1, Ordering::SeqCst));
            ns.exec_ok("nft", &["add", "table", "inet", &name]);
            let needle = format!("table inet {name}");
            if wait_until(Duration::from_millis(500), || {
                self.output.lock().unwrap().contains(&needle)
            }) {
                return;
            }
        }
        panic!("nft monitor did not report a canary transaction within 10 s");
    }

    /// Transactions committed by enforcer so far (everything up to now has been read: a final
    /// canary transaction is reported after them).
    pub fn enforcer_transactions(&self, ns: &Netns) -> usize {
        self.canary(ns);
        self.output
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("# new generation") && l.ends_with("(enforcer)"))
            .count()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `condition` holds, at most `limit`; returns whether it did.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}
