//! `enforcer run` against a hostile Docker Engine API (the harness's fake on a unix socket):
//! whatever Docker sends, the agent keeps enforcing, stays bounded in memory and CPU, answers
//! its signals, and says what is wrong. The agent runs in a namespace of its own; its table is
//! read there with `nft`.

use std::time::{Duration, Instant};

use enforcer_harness::fake_docker::{FakeDocker, Hostile};
use enforcer_harness::{enforcer_bin, require_root, wait_until, Agent, Netns};

/// A policy with one static managed network, so that a table with content is in force.
const POLICY: &str = "[[networks]]\nname = \"static\"\nsubnets = [\"10.50.0.0/24\"]\n";

struct Setup {
    ns: Netns,
    fake: FakeDocker,
    agent: Agent,
}

fn start(hostile: Hostile) -> Setup {
    require_root();
    let ns = Netns::new("hostile");
    let fake = FakeDocker::start(hostile);
    let policy = fake.dir().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let host = fake.docker_host();
    let agent = Agent::start(
        &ns,
        fake.dir(),
        &enforcer_bin(),
        &["--config", policy.to_str().unwrap()],
        &[("DOCKER_HOST", host.as_str())],
    );
    agent.expect_log(
        "enforcing; Docker bridges stay denied",
        Duration::from_secs(10),
    );
    Setup { ns, fake, agent }
}

/// The agent's resident memory in KiB, and its CPU time (user + system) so far.
fn usage(agent: &Agent) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid())).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let cpu: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, Duration::from_millis(cpu * 1000 / ticks))
}

fn table_holds_static(ns: &Netns) {
    let listed = run_in(ns, &["list", "table", "inet", "enforcer"]);
    assert!(listed.contains("10.50.0.0"), "{listed}");
}

fn run_in(ns: &Netns, args: &[&str]) -> String {
    let output = ns.command("nft").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_docker_that_trickles_its_answer_is_reported_stalled_and_the_agent_stays_responsive() {
    let mut setup = start(Hostile::SlowBody);
    setup.agent.expect_log(
        "stalled: no complete answer within 10s",
        Duration::from_secs(20),
    );
    // The state file says it too (written as the line is logged; read until it is there).
    let read = || std::fs::read_to_string(setup.agent.state_file()).unwrap_or_default();
    wait_until(Duration::from_secs(5), || read().contains("stalled"));
    let state = read();
    assert!(state.contains("\"connected\": false"), "{state}");
    assert!(state.contains("stalled"), "{state}");
    table_holds_static(&setup.ns);
    let asked = Instant::now();
    assert_eq!(setup.agent.signal_and_wait(libc::SIGTERM), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn an_endless_event_line_costs_bounded_memory_and_cpu_and_is_a_reconnect() {
    let setup = start(Hostile::EndlessEventLine);
    setup
        .agent
        .expect_log("an event line longer than", Duration::from_secs(10));
    let (_, before) = usage(&setup.agent);
    std::thread::sleep(Duration::from_secs(5));
    let (rss, after) = usage(&setup.agent);
    eprintln!(
        "endless line: RSS {rss} KiB, {:?} of CPU in 5 s",
        after - before
    );
    assert!(rss < 40 * 1024, "RSS {rss} KiB");
    // Reconnects back off to one every 5 s: a few milliseconds of CPU each.
    assert!(
        after - before < Duration::from_secs(1),
        "{:?} of CPU in 5 s",
        after - before
    );
    table_holds_static(&setup.ns);
}

#[test]
fn a_forbidden_event_stream_is_retried_with_backoff_not_in_a_loop() {
    let setup = start(Hostile::EventsForbidden);
    setup.agent.expect_log("HTTP 403", Duration::from_secs(10));
    let first = setup.fake.count("/networks");
    std::thread::sleep(Duration::from_secs(10));
    let snapshots = setup.fake.count("/networks") - first;
    eprintln!("forbidden events: {snapshots} snapshots in 10 s");
    // Backing off 0.1, 0.2, ... 5 s: at most 7 in 10 s (the old loop made about 100).
    assert!(snapshots <= 7, "{snapshots} snapshots in 10 s");
    let state = std::fs::read_to_string(setup.agent.state_file()).unwrap();
    assert!(state.contains("HTTP 403"), "{state}");
    table_holds_static(&setup.ns);
}

#[test]
fn a_flood_of_events_for_one_container_folds_into_few_rereads() {
    let events = 200_000;
    let mut setup = start(Hostile::EventFlood(events));
    setup
        .agent
        .expect_log("Docker connected", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(usage(&setup.agent).0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let inspects = setup.fake.count("/containers/feedface");
    eprintln!("flood: {events} events, {inspects} re-reads, peak RSS {peak} KiB");
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
    assert!(
        inspects < events / 100,
        "{inspects} re-reads for {events} events"
    );
    // Still answering its signals.
    setup.agent.signal(libc::SIGHUP);
    setup
        .agent
        .expect_log("policy reloaded", Duration::from_secs(5));
    assert_eq!(setup.agent.signal_and_wait(libc::SIGTERM), Some(0));
}

#[test]
fn an_object_id_that_is_a_path_never_reaches_a_request() {
    let setup = start(Hostile::PathAsId);
    setup
        .agent
        .expect_log("whose ID is not a Docker ID", Duration::from_secs(10));
    let requests = setup.fake.requests();
    assert!(requests.iter().all(|r| !r.contains("..")), "{requests:?}");
}

#[test]
fn twenty_thousand_networks_make_one_transaction_and_a_bounded_log_line() {
    let setup = start(Hostile::Networks(20_000));
    setup
        .agent
        .expect_log("Docker connected", Duration::from_secs(30));
    setup
        .agent
        .expect_log("and 19950 more changes", Duration::from_secs(60));
    let longest = setup.agent.log().lines().map(str::len).max().unwrap();
    assert!(longest < 16 * 1024, "a log line of {longest} bytes");
    let count = run_in(
        &setup.ns,
        &["list", "set", "inet", "enforcer", "managed_v4_24"],
    )
    .matches("10.")
    .count();
    assert!(count >= 20_000, "{count} elements");
}
