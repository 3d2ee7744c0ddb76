//! Metrics against a real dockerd and a real Prometheus (Debian's, unpacked by
//! tests/prometheus.sh): `enforcer run --metrics-listen` serves what the kernel counted for the
//! containers' blocked attempts and what the drop audit heard; `promtool check metrics` accepts
//! it and `enforcer metrics`' one-shot output; Prometheus scrapes it, and the README's alert
//! rule fires on the first east-west drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use enforcer_harness::docker::{Dockerd, ThreeGate};
use enforcer_harness::host::Containers;
use enforcer_harness::spec::{internet, Family, EGRESSNET};
use enforcer_harness::{enforcer_bin, probe_here, Netns, Proto, TempDir};

const CONVERGE: Duration = Duration::from_secs(15);
/// Where the agent serves its metrics, inside the Docker host's namespace.
const METRICS: &str = "127.0.0.1:9848";
/// Where the test's Prometheus listens, inside the same namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// The unpacked prometheus package (tests/prometheus.sh).
fn prometheus_bin(name: &str) -> PathBuf {
    let dir = std::env::var("ENFORCER_PROMETHEUS_DIR")
        .unwrap_or_else(|_| "/var/cache/enforcer-tests/prometheus".into());
    let path = PathBuf::from(dir).join("usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/prometheus.sh (tests/setup.sh does)",
        path.display()
    );
    path
}

/// `GET path` from `ns` to `address`: the status line's code, the headers and the body.
fn get(ns: &Netns, address: &str, path: &str) -> Option<(u16, String, String)> {
    let address: SocketAddr = address.parse().unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    ns.enter(move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, head.to_string(), body.to_string()))
    })
}

/// The value of the sample `series` (name and labels, as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `promtool check metrics` on `text`, inside `ns`: its exit status and output.
fn promtool(ns: &Netns, text: &str) -> (bool, String) {
    let promtool = prometheus_bin("promtool");
    let output = ns.exec_with_input(
        promtool.to_str().unwrap(),
        &["check", "metrics"],
        text.as_bytes(),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// The alert rules the README shows (its YAML block that starts with `groups:`).
fn readme_rules() -> String {
    let readme = std::fs::read_to_string(enforcer_harness::repo_file("README.md")).unwrap();
    let start = readme
        .find("```yaml\ngroups:")
        .expect("the README's alert rules")
        + 8;
    let length = readme[start..].find("```").expect("the end of the rules");
    readme[start..start + length].to_string()
}

/// Queries the test's Prometheus from `ns` until `done` holds for the answer, for at most 30 s.
fn query_until(ns: &Netns, query: &str, done: impl Fn(&str) -> bool) -> Option<String> {
    let path = format!("/api/v1/query?query={}", encode(query));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some((200, _, answer)) = get(ns, PROMETHEUS, &path) {
            if done(&answer) {
                return Some(answer);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// `text` for a URL's query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A Prometheus server in `ns`, killed on drop.
struct Prometheus {
    child: Child,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts it scraping the agent every second, with the README's alert rules.
    fn start(ns: &Netns) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let rules = dir.path().join("rules.yml");
        std::fs::write(&rules, readme_rules()).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - \
                 {}\nscrape_configs:\n  - job_name: enforcer\n    static_configs:\n      - \
                 targets: ['{METRICS}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = ns
            .command(prometheus_bin("prometheus").to_str().unwrap())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_what_the_kernel_and_the_audit_counted() {
    let docker = Dockerd::start();
    let gate = ThreeGate::create(&docker);
    let agent = docker.start_agent(&["--log-format", "json", "--metrics-listen", METRICS]);
    agent.expect_log("+proxy proxy", CONVERGE);
    agent.expect_log("metrics at http://", CONVERGE);
    let host = docker.host.borrowed();

    // A real Prometheus scrapes the agent from before the first drop.
    let prometheus = Prometheus::start(&host);
    let up = query_until(&host, "up{job=\"enforcer\"}", |a| a.contains(",\"1\"]"));
    assert!(
        up.is_some(),
        "Prometheus never scraped the agent:\n{}",
        prometheus.log()
    );

    // Blocked attempts: core toward the internet, and toward the proxy on another network.
    let core = gate.namespace("core").borrowed();
    let targets = [
        SocketAddr::new(internet(Family::V4), 443),
        SocketAddr::new(EGRESSNET.host(2, Family::V4), 3128),
    ];
    for target in targets {
        core.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(300)));
    }
    agent.expect_log("east_west", CONVERGE);
    let expected = [
        ("enforcer_network_dropped_packets_total{network=\"llmnet\"}", 2.0),
        ("enforcer_dropped_packets_total{reason=\"egress\"}", 2.0),
        (
            "enforcer_container_dropped_packets_total{container=\"core\",reason=\"egress\",role=\"\"}",
            2.0,
        ),
        (
            "enforcer_audit_source_drops_total{network=\"llmnet\",reason=\"east_west\",role=\"\"}",
            1.0,
        ),
        (
            "enforcer_audit_source_drops_total{network=\"llmnet\",reason=\"egress\",role=\"\"}",
            1.0,
        ),
        ("enforcer_audit_drops_total{reason=\"east_west\"}", 1.0),
        ("enforcer_audit_drops_total{reason=\"spoofing\"}", 0.0),
        ("enforcer_applies_total", 1.0),
        ("enforcer_apply_duration_seconds_count", 1.0),
        ("enforcer_docker_connected", 1.0),
        ("enforcer_table_present", 1.0),
        ("enforcer_bound_ports", 1.0),
    ];
    // A scrape within a second of another gets its text again: ask until the drops show.
    let holds = |text: &str| {
        expected
            .iter()
            .all(|(series, at_least)| sample(text, series).is_some_and(|v| v >= *at_least))
    };
    let started = Instant::now();
    let (code, head, text) = loop {
        let answer = get(&host, METRICS, "/metrics").expect("the agent answers");
        if holds(&answer.2) || started.elapsed() > Duration::from_secs(5) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 200, "{head}\n{text}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    println!("{text}");
    for (series, at_least) in expected {
        let value = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(
            value >= at_least,
            "{series} = {value}, expected >= {at_least}"
        );
    }
    let (valid, said) = promtool(&host, &text);
    assert!(valid, "promtool refused the agent's metrics: {said}");
    assert_eq!(get(&host, METRICS, "/other").map(|a| a.0), Some(404));

    // The one-shot command reads the same counters from the kernel and the state file.
    let once = docker
        .host
        .command(enforcer_bin().to_str().unwrap())
        .args(["metrics", "--state-file"])
        .arg(agent.state_file())
        .output()
        .unwrap();
    let once_text = String::from_utf8_lossy(&once.stdout).to_string();
    assert!(
        once.status.success(),
        "{once_text}{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let dropped = sample(
        &once_text,
        "enforcer_network_dropped_packets_total{network=\"llmnet\"}",
    );
    assert!(dropped >= Some(2.0), "{once_text}");
    assert!(!once_text.contains("enforcer_applies_total"), "{once_text}");
    let (valid, said) = promtool(&host, &once_text);
    assert!(valid, "promtool refused `enforcer metrics`: {said}");

    // Prometheus holds the kernel's counts, and the README's alert fires on the first
    // east-west drop.
    let dropped = query_until(
        &host,
        "enforcer_network_dropped_packets_total{network=\"llmnet\"} >= 2",
        |a| a.contains("llmnet"),
    );
    assert!(dropped.is_some(), "{}", prometheus.log());
    let alert = query_until(
        &host,
        "ALERTS{alertname=\"EnforcerEastWestDrop\",alertstate=\"firing\"}",
        |a| a.contains("EnforcerEastWestDrop"),
    );
    let alert = alert.unwrap_or_else(|| panic!("the alert never fired:\n{}", prometheus.log()));
    println!("{alert}");
}
