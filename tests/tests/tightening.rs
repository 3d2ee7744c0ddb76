//! A tightening cuts what it takes away: established connections the new table refuses are
//! deleted from conntrack, so they stop; allowed ones survive. On ThreeGate's Docker-like host.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use enforcer_harness::host::{threegate_policy_without, DockerLikeHost};
use enforcer_harness::{apply_ok, enforcer_bin, repo_file, Agent, TempDir, TempFile};

/// The echo server's address: a second address of the internet host, so that its port 443
/// is free of the spec's responders.
const ECHO: &str = "203.0.113.11:443";
/// How long a line may take to come back before the connection counts as stopped.
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves up to `connections` connections, each echoing lines, for at most 60 s.
fn echo_server(host: &DockerLikeHost, connections: usize) {
    host.internet
        .ip(&["addr", "add", "203.0.113.11/24", "dev", "eth0"]);
    let listener = host
        .internet
        .enter(|| TcpListener::bind(ECHO).expect("bind the echo server"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections).flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if writeln!(writer, "{line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A long-lived connection from a container to the echo server.
struct Session {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Session {
    fn open(host: &DockerLikeHost, container: &str) -> Session {
        let ns = host.containers[container].borrowed();
        let target: SocketAddr = ECHO.parse().unwrap();
        let stream = ns
            .enter(move || TcpStream::connect_timeout(&target, ECHO_TIMEOUT))
            .unwrap_or_else(|e| panic!("{container} cannot reach the echo server: {e}"));
        stream.set_read_timeout(Some(ECHO_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Session { stream, reader }
    }

    /// Whether a line sent comes back within [`ECHO_TIMEOUT`].
    fn echoes(&mut self, text: &str) -> bool {
        if writeln!(self.stream, "{text}").is_err() {
            return false;
        }
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(n) if n > 0) && line.trim_end() == text
    }
}

#[test]
fn a_network_that_becomes_managed_loses_its_open_connections_and_the_proxy_keeps_its_own() {
    let host = DockerLikeHost::threegate();
    echo_server(&host, 2);
    let policy = TempFile::new(".toml", &threegate_policy_without("llmnet"));
    let dir = TempDir::new("tightening");
    let agent = Agent::start(
        &host.host,
        dir.path(),
        &enforcer_bin(),
        &["--config", policy.path()],
        &[],
    );
    agent.expect_log("enforcing;", Duration::from_secs(10));

    // core (llmnet, unmanaged here) and the proxy each hold a connection to the internet.
    let mut core = Session::open(&host, "core");
    let mut proxy = Session::open(&host, "proxy");
    assert!(core.echoes("core 1") && proxy.echoes("proxy 1"));
    // And core sends to the internet's resolver from 300 ports: more deletes than one
    // datagram carries.
    let resolver: SocketAddr = "203.0.113.10:53".parse().unwrap();
    host.containers["core"].borrowed().enter(move || {
        for port in 20_000..20_300u16 {
            let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            socket.send_to(b"flow", resolver).unwrap();
        }
    });

    // The control: ThreeGate's full table alone (the agent stopped, the CLI applying it)
    // refuses core's new connections but lets its established one go on.
    let threegate = repo_file("rules/threegate.toml");
    let threegate = threegate.to_str().unwrap();
    agent.signal(libc::SIGSTOP);
    apply_ok(&host.host, &["--config", threegate]);
    assert!(core.echoes("core 2"), "the table alone already cut core");
    agent.signal(libc::SIGCONT);
    agent.expect_log(
        "reason=\"restoring what another program changed\"",
        Duration::from_secs(10),
    );

    // The agent's policy becomes ThreeGate's: llmnet is managed, core's connection is cut.
    let cuts_before = agent.lines_with("cut connections").len();
    let reloaded = Instant::now();
    let tight = std::fs::read_to_string(threegate).unwrap();
    assert!(
        agent.reload_with(
            std::path::Path::new(policy.path()),
            &tight,
            Duration::from_secs(10)
        ),
        "{}",
        agent.log()
    );
    let cut = agent
        .next_line_with("cut connections", cuts_before, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no cut after the reload: {}", agent.log()));
    assert!(!core.echoes("core 3"), "{}", agent.log());
    assert!(
        proxy.echoes("proxy 2"),
        "the proxy's allowed connection was cut"
    );
    eprintln!(
        "stopped within {:?} of the reload (the echo waits {ECHO_TIMEOUT:?}): {cut}",
        reloaded.elapsed()
    );
    let deleted: usize = cut
        .split_whitespace()
        .find_map(|w| w.strip_prefix("deleted="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(deleted > 300, "core's TCP and 300 UDP flows: {cut}");
    let log = agent.log();
    assert!(
        cut.contains("10.100.0.10:")
            && !log.contains("10.101.0.2:")
            && !log.contains("10.102.0.2:"),
        "the proxy's connection was judged refused: {log}"
    );
}
