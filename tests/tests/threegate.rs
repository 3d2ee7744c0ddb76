//! ThreeGate's topology on a sealed Docker-like host: real flows against the enforced table.

use enforcer_harness::host::DockerLikeHost;
use enforcer_harness::matrix::{measure, mismatches, report, threegate_matrix};
use enforcer_harness::spec::{EGRESSNET, LLMNET};
use enforcer_harness::{apply_ok, repo_file};

#[test]
fn enforced_host_matches_the_threegate_matrix() {
    let host = DockerLikeHost::threegate();
    let config = repo_file("rules/threegate.toml");
    apply_ok(&host.host, &["--config", config.to_str().unwrap()]);
    let results = measure(&host, &threegate_matrix());
    let table = host
        .host
        .exec_ok("nft", &["list", "table", "inet", "enforcer"]);
    let text = report(&results);
    println!("{text}\n{}", String::from_utf8_lossy(&table.stdout));
    let wrong = mismatches(&results);
    assert!(
        wrong.is_empty(),
        "{} flows differ from the policy:\n{text}",
        wrong.len()
    );
    // The drops were counted per subnet, each element naming its network: core's (llmnet) and
    // bystander's (egressnet) attempts show up.
    let set = host
        .host
        .exec_ok("nft", &["list", "set", "inet", "enforcer", "egress_v4_24"]);
    let listing = String::from_utf8_lossy(&set.stdout).replace('\n', " ");
    for network in [LLMNET.name, EGRESSNET.name] {
        let element = listing
            .split(',')
            .find(|e| e.contains(&format!("comment \"{network}\"")))
            .unwrap_or_else(|| panic!("no element for {network} in {listing}"));
        assert!(
            !element.contains("packets 0 "),
            "no drop counted for {network}: {element}"
        );
    }
}

/// The matrix can see leaks: with no table in the kernel, every flow the policy forbids gets
/// through (so each "blocked" above is the enforcer's doing, not the test's).
#[test]
fn without_the_table_every_forbidden_flow_leaks() {
    let host = DockerLikeHost::threegate();
    let results = measure(&host, &threegate_matrix());
    let text = report(&results);
    println!("{text}");
    let closed: Vec<_> = results.iter().filter(|(_, open)| !open).collect();
    assert!(
        closed.is_empty(),
        "{} flows were closed without enforcer:\n{text}",
        closed.len()
    );
    assert!(
        results.iter().any(|(flow, _)| !flow.allowed),
        "the matrix has forbidden flows"
    );
}
