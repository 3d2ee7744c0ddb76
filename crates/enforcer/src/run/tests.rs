//! The daemon's logic against the recording [`FakeKernel`]: no root, no dockerd.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use enforcer_core::docker::{DockerContainer, DockerEndpoint, DockerNetwork, DockerState};
use enforcer_core::render;
use enforcer_nft::conntrack::{Connection, Tuple};
use enforcer_nft::monitor::{Commit, MonitorEvent};
use tempfile::TempDir;
use tokio::sync::mpsc;

use super::docker_watch::DockerUpdate;
use super::{summarise, Agent};
use crate::kernel::FakeKernel;
use crate::state_file::StateFile;

const NET_ID: &str = "731774d4dc98aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER_ID: &str = "5c0ffee5c0ffbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Log lines written while the closure runs on this thread, without colours or timestamps.
/// One global subscriber writes every thread's events into that thread's capture (tests run
/// in parallel; a subscriber per test would race tracing's cached interest of each call site).
fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
    thread_local! {
        static CAPTURE: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
    }
    struct ThisThread;
    impl Write for ThisThread {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            CAPTURE.with(|c| {
                if let Some(buffer) = c.borrow_mut().as_mut() {
                    buffer.extend_from_slice(bytes);
                }
            });
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThisThread)
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let result = run();
    let bytes = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (result, String::from_utf8(bytes).unwrap())
}

/// A policy file that takes every default (an empty one is refused as a truncated write).
const DEFAULTS: &str = "[docker]\nenabled = true\n";

/// An agent over a fake kernel, its policy file and state file in `dir`, started as the daemon
/// starts (the first table applied before Docker is read).
fn started(dir: &TempDir, policy: &str) -> Agent<FakeKernel> {
    let config = dir.path().join("policy.toml");
    std::fs::write(&config, policy).unwrap();
    let policy = crate::read_policy(Some(&config)).unwrap();
    let state_path = dir.path().join("state.json");
    let previous = super::last_known_state(&state_path);
    let mut agent = Agent::new(
        Some(config),
        policy,
        FakeKernel::default(),
        state_path,
        previous,
    );
    agent.enforce("start, before reading Docker").unwrap();
    agent
}

fn managed_network(id: &str, name: &str, subnet: &str) -> DockerNetwork {
    DockerNetwork {
        id: id.into(),
        name: name.into(),
        driver: "bridge".into(),
        internal: true,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        subnets: vec![subnet.into()],
    }
}

fn proxy(network_id: &str, ipv4: &str) -> DockerContainer {
    DockerContainer {
        id: "feedfacefeedface".into(),
        name: "proxy".into(),
        labels: BTreeMap::from([("enforcer.role".into(), "egress-proxy".into())]),
        endpoints: vec![DockerEndpoint {
            network_id: network_id.into(),
            ipv4: ipv4.into(),
            ipv6: String::new(),
            mac: String::new(),
        }],
    }
}

/// Docker with the given networks and containers.
fn docker(networks: &[&DockerNetwork], containers: &[DockerContainer]) -> DockerState {
    DockerState::of(networks.iter().map(|&n| n.clone()), containers.to_vec())
}

fn changed(state: DockerState, reason: &str) -> DockerUpdate {
    DockerUpdate::Changed {
        state,
        reasons: vec![reason.to_string()],
    }
}

/// Queues `updates` as the Docker task would, and has the agent take them as the main loop
/// does: the first one received, the rest folded in.
fn absorb_queued(agent: &mut Agent<FakeKernel>, updates: Vec<DockerUpdate>) -> anyhow::Result<()> {
    let (sender, mut queued) = mpsc::unbounded_channel();
    for update in updates {
        sender.send(update).unwrap();
    }
    let first = queued.try_recv().unwrap();
    agent.absorb(first, &mut queued)
}

fn held_script(agent: &Agent<FakeKernel>) -> String {
    render::tables_script(
        agent
            .kernel
            .held
            .as_ref()
            .expect("the fake kernel holds a table"),
    )
}

#[test]
fn a_burst_of_queued_docker_updates_folds_into_one_transaction() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    assert_eq!(agent.kernel.committed.len(), 1, "the start applies once");
    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    let other = managed_network(OTHER_ID, "other", "10.111.0.0/24");
    let burst = vec![
        DockerUpdate::Snapshot {
            state: DockerState::default(),
            api: "1.43".into(),
        },
        changed(docker(&[&net], &[]), "network create newnet"),
        changed(docker(&[&net, &other], &[]), "network create other"),
        changed(
            docker(&[&net, &other], &[proxy(NET_ID, "10.110.0.2")]),
            "container start proxy",
        ),
        changed(
            docker(&[&net], &[proxy(NET_ID, "10.110.0.2")]),
            "network destroy other",
        ),
    ];
    let (result, log) = logged(|| absorb_queued(&mut agent, burst));
    result.unwrap();

    assert_eq!(agent.kernel.asked.len(), 2, "one apply for the whole burst");
    assert_eq!(
        agent.kernel.committed.len(),
        2,
        "one transaction for the burst"
    );
    let script = held_script(&agent);
    assert!(script.contains("10.110.0.0 comment \"newnet\""), "{script}");
    assert!(script.contains("10.110.0.2"), "{script}");
    assert!(!script.contains("10.111.0.0"), "{script}");
    assert_eq!(log.matches("applied:").count(), 1, "{log}");
    assert!(
        log.contains(
            "applied: +network newnet 10.110.0.0/24 on br-731774d4dc98; +proxy proxy 10.110.0.2 \
             reason=\"Docker snapshot, network create newnet, network create other, container \
             start proxy, network destroy other\""
        ),
        "{log}"
    );
    assert!(
        log.contains("Docker connected; full resynchronisation"),
        "{log}"
    );
    let saved = StateFile::load(&agent.state_path).unwrap().unwrap();
    assert!(saved.docker_connection.connected);
    assert_eq!(
        saved.docker,
        docker(&[&net], &[proxy(NET_ID, "10.110.0.2")])
    );
}

#[test]
fn change_summaries_name_five_events_and_count_the_rest() {
    let reasons: Vec<String> = (1..=7).map(|i| format!("network create n{i}")).collect();
    assert_eq!(
        summarise(&reasons, ", ", "events"),
        "network create n1, network create n2, network create n3, network create n4, network \
         create n5 and 2 more events"
    );
    assert_eq!(
        summarise(&reasons[..5], ", ", "events"),
        reasons[..5].join(", ")
    );
    assert_eq!(
        summarise(&reasons[..1], ", ", "events"),
        "network create n1"
    );
}

#[test]
fn a_removed_network_is_summarised_with_a_minus() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    absorb_queued(
        &mut agent,
        vec![changed(docker(&[&net], &[]), "network create newnet")],
    )
    .unwrap();
    let (result, log) = logged(|| {
        absorb_queued(
            &mut agent,
            vec![changed(DockerState::default(), "network destroy newnet")],
        )
    });
    result.unwrap();
    assert!(
        log.contains(
            "applied: -network newnet 10.110.0.0/24 on br-731774d4dc98 reason=\"network destroy \
             newnet\""
        ),
        "{log}"
    );
}

#[test]
fn an_update_that_leaves_the_table_as_it_is_sends_nothing() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let unmanaged = DockerNetwork {
        internal: false,
        ..managed_network(NET_ID, "plain", "172.30.0.0/16")
    };
    let before = agent.kernel.held.clone();
    let (result, log) = logged(|| {
        absorb_queued(
            &mut agent,
            vec![changed(docker(&[&unmanaged], &[]), "network create plain")],
        )
    });
    result.unwrap();
    // An unmanaged bridge becomes known (no longer denied as unknown): the table changes.
    assert_eq!(agent.kernel.committed.len(), 2, "{log}");
    assert_ne!(agent.kernel.held, before);
    // The same state again: asked, nothing committed, nothing logged as applied.
    let again = agent.docker.clone();
    let (result, log) =
        logged(|| absorb_queued(&mut agent, vec![changed(again, "container die x")]));
    result.unwrap();
    assert_eq!(agent.kernel.asked.len(), 3);
    assert_eq!(agent.kernel.committed.len(), 2);
    assert!(!log.contains("applied:"), "{log}");
}

#[test]
fn sighup_applies_a_valid_policy_and_keeps_the_previous_one_when_invalid() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, "[proxy]\nallow = [\"tcp/443\", \"udp/53\"]\n");
    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    let state = docker(&[&net], &[proxy(NET_ID, "10.110.0.2")]);
    absorb_queued(&mut agent, vec![changed(state, "container start proxy")]).unwrap();
    assert!(held_script(&agent).contains("udp dport 53 accept"));
    let commits = agent.kernel.committed.len();
    let held = agent.kernel.held.clone();
    let config = agent.config.clone().unwrap();

    std::fs::write(&config, "[proxy]\nallow = [\"tcp/0\"]\n").unwrap();
    let (result, log) = logged(|| agent.reload(|_| panic!("Docker settings did not change")));
    result.unwrap();
    assert!(
        log.contains("policy reload failed, the previous policy stays in force"),
        "{log}"
    );
    assert!(log.contains(":2:"), "the error names the line: {log}");
    assert_eq!(agent.kernel.committed.len(), commits, "nothing sent");
    assert_eq!(agent.kernel.held, held, "the previous table stays");
    assert!(held_script(&agent).contains("udp dport 53 accept"));

    std::fs::write(&config, "[proxy]\nallow = [\"tcp/443\"]\n").unwrap();
    let (result, log) = logged(|| agent.reload(|_| panic!("Docker settings did not change")));
    result.unwrap();
    assert!(log.contains("policy reloaded"), "{log}");
    assert!(log.contains("reason=\"policy reloaded (SIGHUP)\""), "{log}");
    assert_eq!(agent.kernel.committed.len(), commits + 1);
    let script = held_script(&agent);
    assert!(!script.contains("udp dport 53 accept"), "{script}");
    assert!(script.contains("tcp dport 443 accept"), "{script}");
}

#[test]
fn sighup_with_new_docker_settings_restarts_the_watcher_with_them() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let config = agent.config.clone().unwrap();
    std::fs::write(&config, "[docker]\nenabled = false\n").unwrap();
    let commits = agent.kernel.committed.len();
    let mut restarted_with = None;
    agent
        .reload(|settings| restarted_with = Some(settings.clone()))
        .unwrap();
    assert_eq!(restarted_with.as_ref(), Some(&agent.policy.docker));
    assert!(!agent.policy.docker.enabled);
    assert_eq!(agent.kernel.committed.len(), commits + 1);
}

/// With nothing replanned and no commit since, the periodic check only asks whether anyone
/// committed: it applies after a replan, or when the table was tampered with.
#[test]
fn the_periodic_check_applies_only_after_a_replan_or_a_tamper() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let asked = agent.kernel.asked.len();
    agent.check().unwrap();
    assert_eq!(
        agent.kernel.asked.len(),
        asked,
        "nothing replanned or committed"
    );
    agent.replan();
    agent.check().unwrap();
    assert_eq!(agent.kernel.asked.len(), asked + 1, "a replan is applied");
    agent.check().unwrap();
    assert_eq!(agent.kernel.asked.len(), asked + 1);
    agent.kernel.tamper();
    agent.check().unwrap();
    assert_eq!(
        agent.kernel.asked.len(),
        asked + 2,
        "a tampered table is restored"
    );
    assert_eq!(agent.kernel.committed.len(), 2);
}

#[test]
fn the_periodic_check_restores_a_tampered_table_and_is_silent_otherwise() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let (result, log) = logged(|| agent.check());
    result.unwrap();
    assert_eq!(agent.kernel.committed.len(), 1, "nothing to restore");
    assert!(!log.contains("applied:"), "{log}");

    let held = agent.kernel.held.clone();
    agent.kernel.tamper();
    let (result, log) = logged(|| agent.check());
    result.unwrap();
    assert_eq!(agent.kernel.committed.len(), 2);
    assert_eq!(agent.kernel.held, held, "the same table again");
    // Same topology: the summary is the kernel's own.
    assert!(
        log.contains(
            "applied: + table inet enforcer (absent from the kernel) reason=\"periodic check of \
             the kernel's table\""
        ),
        "{log}"
    );
    let saved = StateFile::load(&agent.state_path).unwrap().unwrap();
    assert_eq!(saved.reason, "periodic check of the kernel's table");
}

/// A commit as the nftables monitor reports it: from port `port`, changing `tables`.
fn commit(port: u32, tables: &[&str], change: &str) -> MonitorEvent {
    let mut commit = Commit::default();
    commit.port = port;
    commit.generation = 7;
    commit.process = Some((5063, "nft".into()));
    commit.tables = tables.iter().map(|t| t.to_string()).collect();
    commit.changes = vec![(change.to_string(), 1)];
    commit.change_count = 1;
    MonitorEvent::Committed(commit)
}

#[test]
fn another_programs_change_to_our_table_is_undone_at_once_and_our_own_commits_are_not() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let held = agent.kernel.held.clone();
    let asked = agent.kernel.asked.len();
    // Our own commit, and another program's to another table: nothing to do, not even a check.
    let quiet = vec![
        commit(
            FakeKernel::PORT_ID,
            &["enforcer"],
            "add table inet enforcer",
        ),
        commit(99, &["filter"], "add table ip filter"),
    ];
    agent.take_commits(quiet, Instant::now()).unwrap();
    assert_eq!(agent.kernel.asked.len(), asked);

    agent.kernel.tamper();
    let tamper = commit(99, &["enforcer"], "delete table inet enforcer");
    let (result, log) = logged(|| agent.take_commits(vec![tamper], Instant::now()));
    result.unwrap();
    assert_eq!(agent.kernel.held, held, "restored");
    assert_eq!(agent.kernel.committed.len(), 2);
    assert!(
        log.contains(
            "WARN enforcer::run: another program changed table enforcer: nft (pid 5063): delete \
             table inet enforcer; restoring it"
        ),
        "{log}"
    );
    assert!(
        log.contains("reason=\"restoring what another program changed\""),
        "{log}"
    );
}

/// A tracked TCP connection from `source` to `destination` (no NAT).
fn tcp_connection(source: &str, destination: &str) -> Connection {
    let original = Tuple {
        protocol: 6,
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    };
    let reply = Tuple {
        protocol: 6,
        source: original.destination,
        destination: original.source,
    };
    Connection {
        original,
        reply,
        zone: 0,
    }
}

#[test]
fn connections_the_new_table_refuses_are_cut_and_allowed_ones_stay() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, "[proxy]\nallow = [\"tcp/443\"]\n");
    let container = tcp_connection("10.110.0.5:40000", "203.0.113.10:443");
    let from_proxy = tcp_connection("10.110.0.2:40001", "203.0.113.10:443");
    let elsewhere = tcp_connection("192.0.2.5:1000", "198.51.100.7:80");
    agent.kernel.tracked = vec![container, from_proxy, elsewhere];

    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    let state = docker(&[&net], &[proxy(NET_ID, "10.110.0.2")]);
    let (result, log) =
        logged(|| absorb_queued(&mut agent, vec![changed(state, "network create")]));
    result.unwrap();
    assert_eq!(agent.kernel.tracked, vec![from_proxy, elsewhere]);
    assert!(
        log.contains(
            "cut connections the table now refuses: tcp 10.110.0.5:40000 -> 203.0.113.10:443 \
             (\"any other egress from a managed /24: denied, counted per subnet\")"
        ),
        "{log}"
    );
    // Nothing changed: nothing is judged again.
    agent.kernel.tracked.push(container);
    agent.check().unwrap();
    assert_eq!(agent.kernel.tracked.len(), 3);
}

#[test]
fn at_start_connections_the_table_refuses_are_cut() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("policy.toml");
    let policy = "[docker]\nenabled = false\n[[networks]]\nname = \"agents\"\n\
                  subnets = [\"10.50.0.0/24\"]\ninterface = \"br-agents\"\n";
    std::fs::write(&config, policy).unwrap();
    let policy = crate::read_policy(Some(&config)).unwrap();
    let refused = tcp_connection("10.50.0.5:40000", "203.0.113.10:443");
    let inside = tcp_connection("10.50.0.5:40001", "10.50.0.6:80");
    let kernel = FakeKernel {
        tracked: vec![refused, inside],
        ..FakeKernel::default()
    };
    let state_path = dir.path().join("state.json");
    let mut agent = Agent::new(Some(config), policy, kernel, state_path, None);
    agent.enforce("start, before reading Docker").unwrap();
    assert_eq!(agent.kernel.tracked, vec![inside]);
}

#[test]
fn a_kernel_that_refuses_the_audits_log_rules_gets_the_tables_without_them() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("policy.toml");
    std::fs::write(&config, "[docker]\nenabled = false\n").unwrap();
    let policy = crate::read_policy(Some(&config)).unwrap();
    let kernel = FakeKernel {
        refuses_log: true,
        ..FakeKernel::default()
    };
    let state_path = dir.path().join("state.json");
    let mut agent = Agent::new(Some(config), policy, kernel, state_path, None);
    let (started, log) = logged(|| agent.enforce_at_start("start"));
    started.unwrap();
    assert!(log.contains("without the drop audit's log rules"), "{log}");
    let held = agent.kernel.held.as_ref().expect("a table in the kernel");
    let script = enforcer_core::render::script(&held.inet);
    assert!(script.contains("goto audit_host"), "{script}");
    assert!(!script.contains("log prefix"), "{script}");
}

#[test]
fn a_program_that_keeps_changing_the_table_gets_ten_restores_at_once_then_one_every_100_ms() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let start = Instant::now();
    let tamper = |agent: &mut Agent<FakeKernel>, at| {
        agent.kernel.tamper();
        let commit = commit(99, &["enforcer"], "delete table inet enforcer");
        agent.take_commits(vec![commit], at).unwrap();
    };
    for _ in 0..12 {
        tamper(&mut agent, start);
    }
    assert_eq!(agent.kernel.committed.len(), 1 + 10, "a burst of ten");
    let due = agent.deferred_restore_due().expect("the rest is held back");
    assert_eq!(due - start, Duration::from_millis(100));
    // Early, it waits; when due, one transaction undoes both held changes.
    agent
        .restore_deferred(start + Duration::from_millis(50))
        .unwrap();
    assert_eq!(agent.kernel.committed.len(), 1 + 10);
    let (result, log) = logged(|| agent.restore_deferred(due));
    result.unwrap();
    assert_eq!(agent.kernel.committed.len(), 1 + 11);
    assert_eq!(agent.deferred_restore_due(), None);
    assert!(
        log.contains("changed table enforcer 2 times while restores were held back"),
        "{log}"
    );
    // Sustained, one restore every 100 ms.
    tamper(&mut agent, due + Duration::from_millis(100));
    assert_eq!(agent.kernel.committed.len(), 1 + 12);
}

#[test]
fn a_held_back_restore_that_another_apply_did_is_not_done_again() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let start = Instant::now();
    for _ in 0..11 {
        agent.kernel.tamper();
        let commit = commit(99, &["enforcer"], "delete table inet enforcer");
        agent.take_commits(vec![commit], start).unwrap();
    }
    let due = agent
        .deferred_restore_due()
        .expect("the eleventh is held back");
    let (result, log) = logged(|| agent.check());
    result.unwrap();
    assert_eq!(
        agent.kernel.committed.len(),
        1 + 11,
        "the periodic check restored"
    );
    assert!(
        log.contains("changed table enforcer 1 times while restores were held back"),
        "{log}"
    );
    assert_eq!(agent.deferred_restore_due(), None);
    agent.restore_deferred(due).unwrap();
    assert_eq!(
        agent.kernel.committed.len(),
        1 + 11,
        "nothing left to restore"
    );
}

#[test]
fn lost_notifications_check_the_table() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let asked = agent.kernel.asked.len();
    agent
        .take_commits(vec![MonitorEvent::Overflowed], Instant::now())
        .unwrap();
    assert_eq!(
        agent.kernel.asked.len(),
        asked,
        "nobody committed: one GETGEN"
    );
    agent.kernel.tamper();
    agent
        .take_commits(vec![MonitorEvent::Overflowed], Instant::now())
        .unwrap();
    assert_eq!(
        agent.kernel.committed.len(),
        2,
        "the unseen change is undone"
    );
}

#[test]
fn a_refused_transaction_is_reported_and_the_next_check_applies_it() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let before = agent.kernel.held.clone();
    agent.kernel.failing = true;
    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    let error = absorb_queued(
        &mut agent,
        vec![changed(docker(&[&net], &[]), "network create newnet")],
    )
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "applying tables enforcer (network create newnet); the rules in force before stay in \
         force: the kernel rejected the transaction for table inet enforcer: Cannot allocate \
         memory (os error 12)"
    );
    assert_eq!(agent.kernel.held, before, "the kernel keeps the old table");
    let saved = StateFile::load(&agent.state_path).unwrap().unwrap();
    assert_eq!(
        saved.reason, "start, before reading Docker",
        "not saved as applied"
    );

    // The daemon logs the error and goes on (`report`); the agent keeps the desired table, so
    // the next periodic check sends it.
    agent.kernel.failing = false;
    let (result, log) = logged(|| agent.check());
    result.unwrap();
    assert!(held_script(&agent).contains("10.110.0.0 comment \"newnet\""));
    assert!(
        log.contains("applied: +network newnet 10.110.0.0/24 on br-731774d4dc98"),
        "{log}"
    );
}

#[test]
fn without_docker_every_bridge_is_denied_and_losing_docker_keeps_the_rules_in_force() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let lost = || DockerUpdate::Lost {
        error: "Docker at unix:///run/docker.sock: connection refused".into(),
        retry_in: Duration::from_millis(100),
    };
    let (result, log) = logged(|| absorb_queued(&mut agent, vec![lost()]));
    result.unwrap();
    assert!(
        log.contains("connection refused; the rules in force stay, retrying"),
        "{log}"
    );
    assert_eq!(agent.kernel.committed.len(), 1, "a loss sends nothing");
    // The static table: every Docker bridge is unknown, so denied.
    let script = held_script(&agent);
    assert!(
        script.contains("\tset known_interfaces {\n\t\ttype ifname\n\t}\n"),
        "{script}"
    );
    assert!(
        script.contains("iifname \"br-*\" iifname != @known_interfaces jump from_unknown_bridge"),
        "{script}"
    );
    assert!(
        script.contains("chain from_unknown_bridge {\n\t\tct state established,related accept"),
        "{script}"
    );
    let saved = StateFile::load(&agent.state_path).unwrap().unwrap();
    assert!(!saved.docker_connection.connected);
    assert!(saved
        .docker_connection
        .error
        .unwrap()
        .contains("connection refused"));

    // Connected, then lost again: the last state stays in force.
    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    let snapshot = DockerUpdate::Snapshot {
        state: docker(&[&net], &[]),
        api: "1.43".into(),
    };
    absorb_queued(&mut agent, vec![snapshot]).unwrap();
    let held = agent.kernel.held.clone();
    absorb_queued(&mut agent, vec![lost()]).unwrap();
    assert_eq!(agent.kernel.held, held);
    assert!(held_script(&agent).contains("10.110.0.0 comment \"newnet\""));
    let saved = StateFile::load(&agent.state_path).unwrap().unwrap();
    assert!(!saved.docker_connection.connected);
    assert_eq!(saved.docker.networks.len(), 1, "the state enforced is kept");
}

#[test]
fn a_restart_re_enforces_the_saved_docker_state_before_docker_answers() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let net = managed_network(NET_ID, "newnet", "10.110.0.0/24");
    absorb_queued(
        &mut agent,
        vec![changed(docker(&[&net], &[]), "network create newnet")],
    )
    .unwrap();
    let held = agent.kernel.held.clone();
    let agent_docker = agent.docker.clone();
    drop(agent);

    let again = started(&dir, DEFAULTS);
    assert_eq!(again.kernel.held, held);
    assert_eq!(again.docker, agent_docker);
}

#[test]
fn an_unusable_policy_at_start_enforces_the_last_good_one_or_denies_every_bridge() {
    // No state file: the embedded default, nothing classified, every Docker bridge denied.
    let mut kernel = FakeKernel::default();
    let error = super::enforce_fallback(&mut kernel, None, anyhow::anyhow!("p.toml:1:1: bad"));
    let text = format!("{error:#}");
    assert!(
        text.contains("enforcing the embedded default policy with every Docker bridge denied"),
        "{text}"
    );
    assert!(text.ends_with("p.toml:1:1: bad"), "{text}");
    let script = render::tables_script(kernel.held.as_ref().expect("a table is in the kernel"));
    assert!(
        script.contains("iifname \"br-*\" iifname != @known_interfaces jump from_unknown_bridge")
    );
    assert!(!script.contains("10.110.0.0"), "{script}");

    // A state file written by an agent with a good policy file: that policy and the Docker
    // state it enforced.
    let dir = TempDir::new().unwrap();
    let mut agent = started(
        &dir,
        "[[networks]]\nname = \"static\"\nsubnets = [\"10.50.0.0/24\"]\n",
    );
    absorb_queued(
        &mut agent,
        vec![changed(
            docker(&[&managed_network(NET_ID, "newnet", "10.110.0.0/24")], &[]),
            "network create newnet",
        )],
    )
    .unwrap();
    let previous = StateFile::load(&agent.state_path).unwrap();
    assert!(previous.as_ref().unwrap().policy.is_some());
    let mut kernel = FakeKernel::default();
    let error = super::enforce_fallback(&mut kernel, previous, anyhow::anyhow!("bad"));
    assert!(
        format!("{error:#}").contains("enforcing the last good policy"),
        "{error:#}"
    );
    let script = render::tables_script(kernel.held.as_ref().unwrap());
    assert!(script.contains("10.50.0.0 comment \"static\""), "{script}");
    assert!(script.contains("10.110.0.0 comment \"newnet\""), "{script}");
}

#[test]
fn a_huge_change_is_summarised_in_a_bounded_line() {
    let networks: Vec<DockerNetwork> = (0..200)
        .map(|i| {
            managed_network(
                &format!("{i:012}{}", "a".repeat(52)),
                &format!("n{i}"),
                &format!("10.{}.{}.0/24", 100 + i / 200, i % 200),
            )
        })
        .collect();
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let refs: Vec<&DockerNetwork> = networks.iter().collect();
    let (result, log) = logged(|| {
        absorb_queued(
            &mut agent,
            vec![changed(docker(&refs, &[]), "Docker snapshot")],
        )
    });
    result.unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("applied:"))
        .expect("an applied line");
    assert!(line.contains("; and 150 more changes"), "{line}");
    assert!(line.len() < 4000, "{} bytes", line.len());
}

#[test]
fn an_enforced_network_keeps_its_subnet_against_a_newcomer_also_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    let enforced = managed_network(NET_ID, "zzz-agents", "10.110.0.0/24");
    let newcomer = managed_network(OTHER_ID, "aaa", "10.110.0.0/24");
    absorb_queued(
        &mut agent,
        vec![changed(
            docker(&[&enforced], &[]),
            "network create zzz-agents",
        )],
    )
    .unwrap();
    let (result, log) = logged(|| {
        absorb_queued(
            &mut agent,
            vec![changed(
                docker(&[&enforced, &newcomer], &[]),
                "network create aaa",
            )],
        )
    });
    result.unwrap();
    assert!(held_script(&agent).contains("10.110.0.0 comment \"zzz-agents\""));
    assert!(log.contains("skipped: "), "{log}");

    // A new agent started from the state file keeps the same winner.
    drop(agent);
    let again = started(&dir, DEFAULTS);
    assert!(held_script(&again).contains("10.110.0.0 comment \"zzz-agents\""));
}

#[test]
fn an_unusable_policy_at_start_leaves_a_table_already_in_the_kernel_alone() {
    let dir = TempDir::new().unwrap();
    let agent = started(
        &dir,
        "[[networks]]\nname = \"static\"\nsubnets = [\"10.50.0.0/24\"]\n",
    );
    let mut kernel = agent.kernel;
    let before = kernel.held.clone();
    let error = super::enforce_fallback(&mut kernel, None, anyhow::anyhow!("bad"));
    assert!(
        format!("{error:#}").contains("stays in the kernel as it is"),
        "{error:#}"
    );
    assert_eq!(kernel.held, before);
    assert_eq!(
        kernel.committed.len(),
        1,
        "nothing sent after the first apply"
    );
}

#[test]
fn a_reload_that_turns_docker_off_forgets_what_docker_said() {
    let dir = TempDir::new().unwrap();
    let mut agent = started(&dir, DEFAULTS);
    absorb_queued(
        &mut agent,
        vec![changed(
            docker(&[&managed_network(NET_ID, "newnet", "10.110.0.0/24")], &[]),
            "network create newnet",
        )],
    )
    .unwrap();
    assert!(held_script(&agent).contains("10.110.0.0"));
    std::fs::write(
        agent.config.as_ref().unwrap(),
        "[docker]\nenabled = false\n",
    )
    .unwrap();
    agent.reload(|_| {}).unwrap();
    assert!(
        !held_script(&agent).contains("10.110.0.0"),
        "{}",
        held_script(&agent)
    );
    assert!(!agent.connection.connected);
}
