//! The drop audit against a real dockerd: blocked attempts of named containers (egress,
//! east-west, a forged source) reach the agent's log through NFLOG within a second, with the
//! names; east-west and forged ones at WARN; a flood is one line and then one summary a second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use enforcer_harness::docker::{Dockerd, ThreeGate};
use enforcer_harness::host::Containers;
use enforcer_harness::spec::{internet, Family, EGRESSNET, LLMNET};
use enforcer_harness::{probe_here, Agent, Netns, Proto};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(15);
/// The bound: a blocked attempt is in the log within a second.
const LOGGED_WITHIN: Duration = Duration::from_secs(1);

/// The drop lines the agent wrote, parsed.
fn drops(agent: &Agent) -> Vec<Value> {
    agent
        .lines_with("\"event\":\"drop\"")
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Starts `attempt` in a thread and waits (bounded) for a drop line, beyond the `seen` first,
/// that `matches`: the line and how long after the attempt's start it appeared.
fn logged_after(
    agent: &Agent,
    attempt: impl FnOnce() + Send + 'static,
    matches: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let seen = drops(agent).len();
    let started = Instant::now();
    let attempt = std::thread::spawn(attempt);
    let found = loop {
        if let Some(line) = drops(agent).into_iter().skip(seen).find(&matches) {
            break Some((line, started.elapsed()));
        }
        if started.elapsed() > CONVERGE {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    attempt.join().expect("attempt");
    found.unwrap_or_else(|| panic!("no such drop line in:\n{}", agent.log()))
}

/// A TCP connection attempt from `ns` to `target` (refused or not).
fn connect(ns: Netns, target: SocketAddr) -> impl FnOnce() + Send + 'static {
    move || {
        ns.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(500)));
    }
}

fn field<'a>(line: &'a Value, name: &str) -> &'a str {
    line[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn blocked_attempts_of_named_containers_are_logged_within_a_second() {
    let docker = Dockerd::start();
    let gate = ThreeGate::create(&docker);
    let agent = docker.start_agent(&["--log-format", "json"]);
    agent.expect_log("+proxy proxy", CONVERGE);
    let proxy_out = EGRESSNET.host(2, Family::V4);
    assert!(
        gate.wait_open(
            "proxy",
            SocketAddr::new(internet(Family::V4), 443),
            CONVERGE
        ),
        "the proxy's egress is open: the table is enforced"
    );
    let core = gate.namespace("core").borrowed();

    // Egress: core toward the internet.
    let outside = SocketAddr::new(internet(Family::V4), 443);
    let (line, after) = logged_after(&agent, connect(core.borrowed(), outside), |l| {
        l["dst"] == outside.ip().to_string() && l["dport"] == 443
    });
    println!("egress drop logged after {after:?}: {line}");
    assert!(after <= LOGGED_WITHIN, "{after:?}: {line}");
    assert_eq!(field(&line, "reason"), "egress", "{line}");
    assert_eq!(field(&line, "src_container"), "core", "{line}");
    assert_eq!(field(&line, "src_network"), LLMNET.name, "{line}");
    assert_eq!(field(&line, "src"), LLMNET.host(10, Family::V4).to_string());
    assert_eq!(field(&line, "proto"), "tcp", "{line}");
    assert_eq!(line["count"], 1, "{line}");
    assert_eq!(field(&line, "level"), "INFO", "{line}");

    // The same over IPv6.
    let outside_v6 = SocketAddr::new(internet(Family::V6), 443);
    let (line, after) = logged_after(&agent, connect(core.borrowed(), outside_v6), |l| {
        l["dst"] == outside_v6.ip().to_string()
    });
    println!("IPv6 egress drop logged after {after:?}: {line}");
    assert!(after <= LOGGED_WITHIN, "{after:?}: {line}");
    assert_eq!(field(&line, "reason"), "egress", "{line}");
    assert_eq!(field(&line, "src_container"), "core", "{line}");
    assert_eq!(field(&line, "src"), LLMNET.host(10, Family::V6).to_string());
    assert_eq!(line["dport"], 443, "{line}");

    // East-west: core toward the proxy's address on another managed network.
    let toward_proxy = SocketAddr::new(proxy_out, 3128);
    let (line, after) = logged_after(&agent, connect(core.borrowed(), toward_proxy), |l| {
        l["dst"] == proxy_out.to_string()
    });
    println!("east-west drop logged after {after:?}: {line}");
    assert!(after <= LOGGED_WITHIN, "{after:?}: {line}");
    assert_eq!(field(&line, "reason"), "east_west", "{line}");
    assert_eq!(field(&line, "dst_container"), "proxy", "{line}");
    assert_eq!(field(&line, "level"), "WARN", "{line}");

    // A forged source: core sends as a free address of its network (its root may); the bridge
    // table drops it at core's port, and the line names core, not the address.
    let forged = LLMNET.host(200, Family::V4);
    core.exec_ok(
        "ip",
        &["addr", "add", &format!("{forged}/32"), "dev", "eth0"],
    );
    let ns = core.borrowed();
    let (line, after) = logged_after(
        &agent,
        move || {
            ns.enter(move || {
                let socket = std::net::UdpSocket::bind(SocketAddr::new(forged, 0)).unwrap();
                let _ = socket.send_to(b"ping", outside);
            })
        },
        |l| l["src"] == forged.to_string(),
    );
    core.exec_ok(
        "ip",
        &["addr", "del", &format!("{forged}/32"), "dev", "eth0"],
    );
    println!("forged source logged after {after:?}: {line}");
    assert!(after <= LOGGED_WITHIN, "{after:?}: {line}");
    assert_eq!(field(&line, "reason"), "spoofing", "{line}");
    assert_eq!(field(&line, "src_container"), "core", "{line}");
    assert_eq!(field(&line, "proto"), "udp", "{line}");
    assert_eq!(field(&line, "level"), "WARN", "{line}");

    // A flood from core to one destination: its first packet in a line, the rest counted and
    // summarised, at most one summary line a second.
    let flood_target = SocketAddr::new(internet(Family::V4), 9);
    let seen = drops(&agent).len();
    let sent = 5_000;
    let started = Instant::now();
    core.enter(move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..sent {
            let _ = socket.send_to(b"flood", flood_target);
        }
    });
    let flooded = started.elapsed();
    std::thread::sleep(Duration::from_millis(2500));
    let lines: Vec<Value> = drops(&agent)
        .into_iter()
        .skip(seen)
        .filter(|l| l["dst"] == flood_target.ip().to_string() && l["dport"] == 9)
        .collect();
    let counted: u64 = lines.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    println!(
        "{sent} packets in {flooded:?}: {} lines, {counted} counted: {lines:?}",
        lines.len()
    );
    assert!(!lines.is_empty() && lines[0]["count"] == 1, "{lines:?}");
    // The kernel logs at most [audit] per_second (100) a second after a burst of as many.
    let seconds = (flooded + Duration::from_millis(2500)).as_secs_f64();
    assert!(
        counted as f64 <= 100.0 * (seconds + 1.0) && counted <= sent,
        "{counted} in {seconds} s"
    );
    assert!(
        (lines.len() as f64) <= 1.0 + seconds.ceil(),
        "{} lines in {seconds} s",
        lines.len()
    );
}
