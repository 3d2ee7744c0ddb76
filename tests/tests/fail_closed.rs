//! Bad input never leaves the host less enforced than the operator asked (issue 10's
//! findings, tried as a careless operator and a hostile Docker would): an unusable policy at
//! start, an empty or FIFO policy on reload, names nft could not read back, and a managed
//! Docker network that cannot be enforced on a bridge no pattern names.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use enforcer_harness::docker::{Dockerd, ThreeGate, IMAGE};
use enforcer_harness::spec::{internet, Family};
use enforcer_harness::{
    apply_ok, enforcer_bin, probe_here, require_root, wait_until, Agent, Netns, Proto, TempDir,
    NO_DOCKER, PROBE_TIMEOUT,
};

const GOOD: &str = "[[networks]]\nname = \"static\"\nsubnets = [\"10.50.0.0/24\"]\n";

fn table(ns: &Netns) -> Option<String> {
    let output = ns
        .command("nft")
        .args(["list", "table", "inet", "enforcer"])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn agent(ns: &Netns, dir: &TempDir, policy: &std::path::Path, state: &std::path::Path) -> Agent {
    Agent::start(
        ns,
        dir.path(),
        &enforcer_bin(),
        &[
            "--config",
            policy.to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
        ],
        &[("DOCKER_HOST", NO_DOCKER)],
    )
}

/// Waits (at most 10 s) for the agent to exit on its own; its exit code.
fn exit_code(agent: &mut Agent) -> Option<i32> {
    agent.signal_and_wait(0)
}

#[test]
fn an_unusable_policy_at_start_leaves_a_table_that_denies() {
    require_root();
    let ns = Netns::new("badstart");
    let dir = TempDir::new("badstart");
    let policy = dir.path().join("policy.toml");
    let state = dir.path().join("state.json");

    // No state file: the embedded default with every Docker bridge denied.
    std::fs::write(&policy, "[table]\nname = \"add\"\n").unwrap();
    let mut first = agent(&ns, &dir, &policy, &state);
    assert_eq!(exit_code(&mut first), Some(2), "{}", first.log());
    assert!(
        first.log().contains("every Docker bridge denied"),
        "{}",
        first.log()
    );
    let held = table(&ns).expect("a table is in the kernel");
    assert!(held.contains("iifname \"br-*\" iifname != @known_interfaces jump from_unknown_bridge"));

    // A good start writes the policy into the state file ...
    std::fs::write(&policy, GOOD).unwrap();
    let mut good = agent(&ns, &dir, &policy, &state);
    good.expect_log(
        "enforcing; Docker bridges stay denied",
        Duration::from_secs(10),
    );
    assert_eq!(good.signal_and_wait(libc::SIGTERM), Some(0));
    // ... so that after the table is gone and the file turned bad, that policy comes back.
    ns.exec_ok("nft", &["delete", "table", "inet", "enforcer"]);
    std::fs::write(&policy, "").unwrap();
    let mut again = agent(&ns, &dir, &policy, &state);
    assert_eq!(exit_code(&mut again), Some(2), "{}", again.log());
    assert!(
        again.log().contains("the last good policy"),
        "{}",
        again.log()
    );
    assert!(table(&ns).unwrap().contains("10.50.0.0"));
}

#[test]
fn an_empty_or_fifo_policy_on_reload_keeps_the_previous_one_and_the_agent_answers() {
    require_root();
    let ns = Netns::new("reload");
    let dir = TempDir::new("reload");
    let policy = dir.path().join("policy.toml");
    let state = dir.path().join("state.json");
    std::fs::write(&policy, GOOD).unwrap();
    let mut running = agent(&ns, &dir, &policy, &state);
    running.expect_log(
        "enforcing; Docker bridges stay denied",
        Duration::from_secs(10),
    );

    std::fs::write(&policy, "").unwrap(); // a truncated write
    running.signal(libc::SIGHUP);
    running.expect_log("truncated write", Duration::from_secs(5));
    assert!(table(&ns).unwrap().contains("10.50.0.0"));

    std::fs::remove_file(&policy).unwrap();
    let c_path = std::ffi::CString::new(policy.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    running.signal(libc::SIGHUP);
    running.expect_log("not a regular file", Duration::from_secs(5));
    assert!(table(&ns).unwrap().contains("10.50.0.0"));
    let asked = Instant::now();
    assert_eq!(running.signal_and_wait(libc::SIGTERM), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(2));
}

#[test]
fn every_table_enforcer_writes_lists_and_loads_again_in_nft() {
    require_root();
    let ns = Netns::new("roundtrip");
    let dir = TempDir::new("roundtrip");
    let name = "p".repeat(128);
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[docker]\nenabled = false\n[[networks]]\nname = \"{name}\"\nsubnets = \
             [\"10.1.0.0/24\", \"fd00:1::/64\"]\ninterface = \"br-x\"\n[[proxies]]\nname = \
             \"{name}\"\naddresses = [\"10.1.0.2\"]\ndns_servers = [\"192.0.2.53\"]\n"
        ),
    )
    .unwrap();
    apply_ok(&ns, &["--config", policy.to_str().unwrap()]);
    let check = ns
        .command("sh")
        .args(["-c", "nft list ruleset | nft -c -f -"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_keyword_list_is_nft_1_0_6s_own() {
    let strings = std::process::Command::new("strings")
        .arg("/usr/lib/x86_64-linux-gnu/libnftables.so.1")
        .output()
        .expect("strings (binutils) and libnftables (nftables)");
    let mut installed: Vec<String> = String::from_utf8_lossy(&strings.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix('"')?.strip_suffix('"').map(str::to_string))
        .filter(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        .collect();
    installed.sort();
    installed.dedup();
    let ours: Vec<String> = enforcer_core::nft_syntax::keywords()
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(ours, installed);
}

/// One dockerd at a time.
static DOCKERD: Mutex<()> = Mutex::new(());

#[test]
fn a_skipped_managed_network_on_a_custom_bridge_stays_denied() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start();
    let _gate = ThreeGate::create(&docker);
    // Docker accepts a 129-character name, which enforcer skips; the bridge matches no pattern.
    let name = "a".repeat(129);
    docker.docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.120.0.0/24",
        "-o",
        "com.docker.network.bridge.name=agents0",
        &name,
    ]);
    docker.docker(&[
        "run",
        "-d",
        "--name",
        "odd",
        "--network",
        &name,
        IMAGE,
        "sleep",
        "100000",
    ]);
    // Docker's own isolation of internal networks, flushed (after the container started, which
    // writes it again): only enforcer stands in the way.
    ThreeGate::flush_docker_isolation(&docker);
    let odd = docker.container_netns("odd");
    odd.exec_ok("ip", &["route", "replace", "default", "via", "10.120.0.1"]);
    let target = SocketAddr::new(internet(Family::V4), 80);
    let open = || odd.enter(move || probe_here(Proto::Tcp, target, PROBE_TIMEOUT));
    let opened = wait_until(Duration::from_secs(15), open);
    assert!(
        opened,
        "the flow must be open without enforcer:\n{}\n{}\n{}",
        String::from_utf8_lossy(&odd.exec("ip", &["route"]).stdout),
        String::from_utf8_lossy(&docker.host.exec("ip", &["addr"]).stdout),
        String::from_utf8_lossy(&docker.host.exec("iptables-save", &[]).stdout)
    );

    let agent = docker.start_agent(&[]);
    agent.expect_log("skipped: ", Duration::from_secs(15));
    agent.expect_log("+denied bridge agents0", Duration::from_secs(15));
    assert!(!open(), "a skipped managed network's bridge passed traffic");
}
