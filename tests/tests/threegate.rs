//! ThreeGate's topology on a sealed Docker-like host: real flows against the enforced table.

use enforcer_harness::host::DockerLikeHost;
use enforcer_harness::matrix::{measure, mismatches, report, threegate_matrix, Flow};
use enforcer_harness::spec::{EGRESSNET, LLMNET};
use enforcer_harness::{apply_ok, enforcer, repo_file};

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

/// `enforcer explain` answers, for every flow of the matrix, what the kernel did to its real
/// packets, and names the policy entry (with its line) behind each drop.
#[test]
fn explain_answers_what_the_kernel_does_for_every_flow_of_the_matrix() {
    let host = DockerLikeHost::threegate();
    let config = repo_file("rules/threegate.toml");
    let config = config.to_str().unwrap();
    apply_ok(&host.host, &["--config", config]);
    let results = measure(&host, &threegate_matrix());
    let explain = |src: &str, flow: &Flow| {
        let service = format!("{}/{}", flow.proto.name(), flow.target.port());
        let dst = flow.target.ip().to_string();
        let args = [
            "explain",
            "--config",
            config,
            "--state-file",
            "/nonexistent",
            "--json",
            src,
            &dst,
            &service,
        ];
        enforcer(&host.host, &args)
    };
    let mut wrong = Vec::new();
    for (flow, open) in &results {
        let output = explain(&flow.source.to_string(), flow);
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: {}",
                    flow.what,
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        let allowed = answer["verdict"] == "allowed";
        assert_eq!(
            output.status.code(),
            Some(if allowed { 0 } else { 1 }),
            "{}: exit code against {answer}",
            flow.what
        );
        if allowed != *open {
            wrong.push(format!(
                "{}: kernel {}, explain {answer}",
                flow.what,
                if *open { "open" } else { "closed" }
            ));
        }
        if allowed && answer["rule"].is_string() {
            assert_ne!(
                answer["entry"], "the table's own structure (see the rule)",
                "{}: an allowance without its entry",
                flow.what
            );
        }
        if !allowed {
            let at = answer["location"].as_str().unwrap_or_default();
            assert!(
                at.starts_with(&format!("{config}:")),
                "{}: a drop without its policy line: {answer}",
                flow.what
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} flows differ:\n{}",
        wrong.len(),
        results.len(),
        wrong.join("\n")
    );
    // The proxy by its name, in both families: what its flows to the internet got.
    for (flow, open) in results
        .iter()
        .filter(|(f, _)| f.from == "proxy" && f.what.contains("internet"))
    {
        let output = explain("proxy", flow);
        assert_eq!(
            output.status.code(),
            Some(if *open { 0 } else { 1 }),
            "{}",
            flow.what
        );
    }
}
