//! The corpus check: what the fuzz loop cannot afford per input. Each distinct rendered script
//! is checked by nft 1.0.6 itself, in the private network namespace the check runs in:
//!
//! 1. `nft -c -f -` accepts the script (the `apply --dry-run` output);
//! 2. loaded with `nft -f`, the table is what the encoder would send (a fresh agent's apply
//!    finds nothing to change), so the text and the netlink batch mean the same;
//! 3. written over netlink, the table as `nft list table` shows it loads back with `nft -c`
//!    (every table enforcer writes round-trips through nft).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use enforcer_nft::{ApplyOutcome, Nftables};

use crate::Case;

static SEEN: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

/// Runs the three nft checks on `script` (rendered from `case`), once per distinct script.
/// Refuses to run outside a private network namespace: it loads and flushes tables.
pub fn nft_check(case: &Case, script: &str) -> Result<(), String> {
    let first_time = SEEN
        .lock()
        .expect("no panic while holding the set")
        .get_or_insert_with(HashSet::new)
        .insert(hash(script.as_bytes()));
    if !first_time {
        return Ok(());
    }
    assert!(
        private_namespace(),
        "the corpus check loads and flushes tables: run it in a fresh network namespace \
         (`unshare -n`), never where any interface but `lo` exists"
    );
    let table = &case.tables.inet.table;
    let outcome = (|| {
        nft(&["-c", "-f", "-"], script)
            .map_err(|e| format!("`nft -c -f -` rejects the script: {e}"))?;
        nft(&["-f", "-"], script)
            .map_err(|e| format!("`nft -f -` fails to load the script: {e}"))?;
        match Nftables::open().and_then(|mut n| n.apply(&case.tables)) {
            Ok(ApplyOutcome::Unchanged) => {}
            Ok(ApplyOutcome::Applied { changes, .. }) => {
                return Err(format!(
                    "the script loaded by nft differs from what the encoder sends: {}",
                    changes.join("; ")
                ))
            }
            Err(e) => return Err(format!("netlink apply over the script's table failed: {e}")),
        }
        nft(&["flush", "ruleset"], "").map_err(|e| format!("nft flush ruleset: {e}"))?;
        Nftables::open()
            .and_then(|mut n| n.apply(&case.tables))
            .map_err(|e| format!("netlink apply into an empty ruleset failed: {e}"))?;
        for ruleset in case.tables.iter() {
            let family = ruleset.family.name();
            let listed = nft(&["list", "table", family, table], "").map_err(|e| {
                format!("`nft list table {family} {table}` fails on the table enforcer wrote: {e}")
            })?;
            nft(&["-c", "-f", "-"], &listed).map_err(|e| {
                format!(
                    "`nft list table {family} {table}` output does not load back with `nft -c`: \
                     {e}"
                )
            })?;
        }
        Ok(())
    })();
    let _ = nft(&["flush", "ruleset"], "");
    outcome
}

/// Runs `nft ARGS` with `input` on stdin; its stdout, or its stderr (first lines) on failure.
fn nft(args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    written.map_err(|e| format!("writing to nft: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().take(6).collect();
    Err(format!("{} ({})", lines.join(" | "), output.status))
}

/// Whether this process is in a network namespace of its own: one with no interface but `lo`
/// (a host, or any namespace with traffic to protect, has more).
fn private_namespace() -> bool {
    let Ok(devices) = std::fs::read_to_string("/proc/self/net/dev") else {
        return false;
    };
    let names: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .collect();
    names == ["lo"]
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Saves the failing `input` in `dir` (named by its hash) and appends a line to
/// `dir/failures.txt`: the file, then what failed.
pub fn record(dir: &OsStr, input: &[u8], finding: &str) {
    let dir = Path::new(dir);
    let name = format!("input-{:016x}", hash(input));
    let saved = std::fs::write(dir.join(&name), input);
    let line = format!("{name}: {}\n", finding.replace('\n', " | "));
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("failures.txt"))
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = saved.and(appended) {
        panic!(
            "cannot record a corpus check failure in {}: {e}",
            dir.display()
        );
    }
    eprint!("corpus check: {line}");
}
