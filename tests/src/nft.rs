//! `nft` as the independent reader of what the kernel holds.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{wait_until, Netns};

static NEXT_CANARY: AtomicUsize = AtomicUsize::new(0);

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

/// `nft -j list table FAMILY NAME` in `ns`, with what differs between two loads of the same
/// table removed (handles, metainfo, counter values, empty objects), so that two tables
/// compare equal when `nft` lists them alike.
pub fn listed_table(ns: &Netns, family: &str, name: &str) -> serde_json::Value {
    use serde_json::Value;
    fn scrub(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("handle");
                map.remove("metainfo");
                if let Some(Value::Object(counter)) = map.get_mut("counter") {
                    counter.insert("packets".into(), Value::from(0));
                    counter.insert("bytes".into(), Value::from(0));
                }
                map.values_mut().for_each(scrub);
            }
            Value::Array(items) => {
                items.iter_mut().for_each(scrub);
                items.retain(|v| !v.as_object().is_some_and(|o| o.is_empty()));
            }
            _ => {}
        }
    }
    let output = ns.exec_ok("nft", &["-j", "list", "table", family, name]);
    let mut json: Value = serde_json::from_slice(&output.stdout).expect("nft -j output");
    scrub(&mut json);
    json
}

/// The objects of [`listed_table`], each as its JSON text, sorted: two tables compare equal
/// when they hold the same objects in any order (a chain re-created is listed last).
pub fn listed_objects(ns: &Netns, family: &str, name: &str) -> Vec<String> {
    let json = listed_table(ns, family, name);
    let mut objects: Vec<String> = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|object| object.to_string())
        .collect();
    objects.sort();
    objects
}

/// `nft monitor` running in a namespace: an independent witness of every transaction the
/// kernel commits there.
pub struct Monitor {
    child: std::process::Child,
    output: Arc<Mutex<String>>,
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
        let output = Arc::new(Mutex::new(String::new()));
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

/// Elements of `set` (or map) in `table inet enforcer` of `ns`, rendered as text by `nft -j`
/// (a map element as its JSON `[key, verdict]`).
pub fn set_elements(ns: &Netns, set: &str) -> Vec<String> {
    let mut output = ns.exec("nft", &["-j", "list", "set", "inet", "enforcer", set]);
    if !output.status.success() {
        output = ns.exec("nft", &["-j", "list", "map", "inet", "enforcer", set]);
    }
    if !output.status.success() {
        return Vec::new();
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("nft -j");
    let Some(items) = json["nftables"].as_array() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let object = item.get("set").or_else(|| item.get("map"));
        if let Some(elements) = object.and_then(|o| o["elem"].as_array()) {
            for element in elements {
                let value = element.get("elem").map(|e| &e["val"]).unwrap_or(element);
                out.push(match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
        }
    }
    out
}
