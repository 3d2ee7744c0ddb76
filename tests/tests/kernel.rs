//! `enforcer apply` against a real kernel, each test in a namespace of its own, with `nft` as
//! the independent reader of what the kernel holds.

use std::time::Duration;

use enforcer_harness::{
    apply_ok, enforcer, enforcer_bin, listed_objects, listed_table, object_handles, repo_file,
    require_root, wait_until, Agent, Monitor, Netns, TempDir, TempFile,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn threegate() -> String {
    repo_file("rules/threegate.toml")
        .to_str()
        .unwrap()
        .to_string()
}

/// A policy with many networks, prefixes of several lengths in both families, and proxies with
/// their own allowances and resolvers.
fn mixed_policy() -> TempFile {
    let mut policy = String::from("[proxy]\nallow = [\"tcp/443\", \"udp/53\"]\n");
    for i in 0..40u32 {
        let len = [24, 20, 28, 16][i as usize % 4];
        let v4 = format!("10.{}.{}.0/{len}", 64 + i, if len > 24 { 16 } else { 0 });
        let v6 = format!("fd00:{i:x}::/{}", [64, 56, 80, 48][i as usize % 4]);
        policy.push_str(&format!(
            "[[networks]]\nname = \"net-{i}.x\"\nsubnets = [\"{v4}\", \"{v6}\"]\n"
        ));
    }
    policy.push_str(
        "[[proxies]]\nname = \"squid\"\naddresses = [\"10.64.0.2\", \"fd00::2\"]\n\
         [[proxies]]\nname = \"dns-only\"\naddresses = [\"10.65.0.3\"]\nallow = [\"udp/53\", \"tcp/53\"]\n\
         dns_servers = [\"192.0.2.53\", \"2001:db8::53\"]\n",
    );
    TempFile::new(".toml", &policy)
}

/// A static policy with every role construct: east-west denied, roles with egress toward a
/// role, a network, a prefix, the internet and the host, ingress from the internet, a role and
/// a prefix, members in both families, and a proxy.
fn roles_policy() -> TempFile {
    TempFile::new(
        ".toml",
        "[[networks]]\nname = \"zone\"\ninterface = \"br-zone\"\n\
         subnets = [\"172.20.0.0/16\", \"fd00:20::/64\"]\neast_west = \"deny\"\n\
         [[networks]]\nname = \"data\"\ninterface = \"br-data\"\nsubnets = [\"10.62.0.0/24\"]\n\
         [[proxies]]\nname = \"proxy\"\naddresses = [\"172.20.0.2\"]\n\
         [roles.agent]\negress = [\n\
         { to = \"role:dns\", allow = [\"udp/53\", \"tcp/53\"] },\n\
         { to = \"network:data\", allow = [\"tcp/6333\", \"icmp\"] },\n\
         { to = \"198.51.100.0/24\", allow = [\"tcp/8000-8100\"] },\n\
         { to = \"host\", allow = [\"tcp/9100\"] },\n]\n\
         ingress = [\n\
         { from = \"internet\", allow = [\"tcp/8443\"] },\n\
         { from = \"role:dns\", allow = [\"any\"] },\n\
         { from = \"192.0.2.0/24\", allow = [\"udp/5000-5100\"] },\n]\n\
         [roles.dns]\negress = [{ to = \"internet\", allow = [\"udp/53\", \"tcp/53\", \"icmp\"] }]\n\
         [[members]]\nname = \"agent\"\nrole = \"agent\"\n\
         addresses = [\"172.20.0.100\", \"fd00:20::64\"]\n\
         [[members]]\nname = \"dns\"\nrole = \"dns\"\naddresses = [\"172.20.0.3\", \"fd00:20::3\"]\n",
    )
}

#[test]
fn dry_run_scripts_load_in_nft() {
    require_root();
    let mixed = mixed_policy();
    let ns = Netns::new("nftc");
    let threegate = threegate();
    for args in [
        vec![],
        vec!["--config", threegate.as_str()],
        vec!["--config", mixed.path()],
    ] {
        let mut all = vec!["apply", "--dry-run"];
        all.extend(args.iter().copied());
        let output = enforcer(&ns, &all);
        assert_eq!(
            output.status.code(),
            Some(1),
            "dry-run on an empty kernel has changes pending"
        );
        assert!(
            text(&output.stderr).contains("+ table inet enforcer"),
            "{}",
            text(&output.stderr)
        );
        let check = ns.exec_with_input("nft", &["-c", "-f", "-"], &output.stdout);
        assert!(
            check.status.success(),
            "nft -c rejected {args:?}: {}",
            text(&check.stderr)
        );
    }
    assert_eq!(
        object_handles(&ns, "enforcer"),
        None,
        "dry-run and nft -c changed nothing"
    );
}

#[test]
fn applied_table_is_what_nft_makes_of_the_dry_run_text() {
    require_root();
    let mixed = mixed_policy();
    let roles = roles_policy();
    // ThreeGate (static, Docker off), a mixed static policy (Docker unreachable, so the
    // unknown-bridge rules are in), roles, IronClaw's quarantine (inet, bridge and arp tables,
    // dynamic sets), and the embedded default (no file).
    let configs = [
        threegate(),
        mixed.path().to_string(),
        roles.path().to_string(),
        repo_file("rules/ironclaw.toml").display().to_string(),
        String::new(),
    ];
    for config in configs {
        let with_config = |args: &[&'static str]| -> Vec<String> {
            let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            if !config.is_empty() {
                all.extend(["--config".to_string(), config.clone()]);
            }
            all
        };
        let run = |ns: &Netns, args: &[&'static str]| {
            let all = with_config(args);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            enforcer(ns, &all)
        };
        let applied = Netns::new("applied");
        let loaded = Netns::new("loaded");
        let config_args = with_config(&[]);
        let config_args: Vec<&str> = config_args.iter().map(String::as_str).collect();
        apply_ok(&applied, &config_args);
        let script = run(&loaded, &["apply", "--dry-run"]);
        let load = loaded.exec_with_input("nft", &["-f", "-"], &script.stdout);
        assert!(load.status.success(), "nft -f: {}", text(&load.stderr));
        for family in ["inet", "bridge", "arp"] {
            let exists = |ns: &Netns| {
                let listing = ns.exec("nft", &["list", "table", family, "enforcer"]);
                listing.status.success().then(|| text(&listing.stdout))
            };
            let (a, b) = (exists(&applied), exists(&loaded));
            assert_eq!(a.is_some(), b.is_some(), "{family} table of {config}");
            if a.is_some() {
                let listed = |ns| listed_table(ns, family, "enforcer");
                assert_eq!(
                    listed(&applied),
                    listed(&loaded),
                    "netlink-applied and nft-loaded {family} tables differ for {config}"
                );
            }
            if config.ends_with("ironclaw.toml") {
                let listing = a.unwrap_or_default();
                assert!(
                    listing.contains("flags dynamic") && listing.contains("jump quarantine_in"),
                    "{family}: {listing}"
                );
            }
        }
        // And the kernel holds every subnet: spot-check the sets nft lists.
        let listing = text(
            &applied
                .exec_ok("nft", &["list", "table", "inet", "enforcer"])
                .stdout,
        );
        for needle in ["10.100.0.0 counter", "fd00:102:: . fd00:102::"] {
            if config.ends_with("threegate.toml") {
                assert!(listing.contains(needle), "missing {needle}:\n{listing}");
            }
        }
        // The dry-run in the applied namespace now finds nothing to do; nor in the one nft
        // loaded the text in: nft wrote the encoder's expressions.
        for ns in [&applied, &loaded] {
            let again = run(ns, &["apply", "--dry-run"]);
            assert_eq!(
                again.status.code(),
                Some(0),
                "{config}: {}",
                text(&again.stderr)
            );
        }
    }
}

#[test]
fn a_second_apply_sends_no_transaction() {
    require_root();
    let ns = Netns::new("noop");
    let monitor = Monitor::start(&ns);
    let config = threegate();
    apply_ok(&ns, &["--config", &config]);
    assert_eq!(
        monitor.enforcer_transactions(&ns),
        1,
        "the first apply is one transaction"
    );
    let listed = listed_table(&ns, "inet", "enforcer");
    let again = apply_ok(&ns, &["--config", &config]);
    assert!(again.contains("nothing sent"), "{again}");
    assert_eq!(
        monitor.enforcer_transactions(&ns),
        1,
        "the second apply sent a transaction"
    );

    // A different policy (llmnet gone) is a real change: dry-run names it, touching nothing,
    // then one transaction makes it.
    let smaller = TempFile::new(
        ".toml",
        &std::fs::read_to_string(&config).unwrap().replace(
            "[[networks]]\nname = \"llmnet\"\ninterface = \"br-llm\"\nsubnets = [\"10.100.0.0/24\", \"fd00:100::/64\"]\n",
            "",
        ),
    );
    let dry = enforcer(&ns, &["apply", "--dry-run", "--config", smaller.path()]);
    assert_eq!(dry.status.code(), Some(1));
    let diff = text(&dry.stderr);
    for line in [
        "- element 10.100.0.0 comment \"llmnet\" in set egress_v4_24",
        "- element 10.100.0.0 . 10.100.0.0 in set intra_v4_24_24",
        "- element fd00:100:: in set managed_v6_64",
    ] {
        assert!(diff.contains(line), "{line} in {diff}");
    }
    assert_eq!(
        monitor.enforcer_transactions(&ns),
        1,
        "dry-run sent a transaction"
    );
    assert_eq!(
        listed_table(&ns, "inet", "enforcer"),
        listed,
        "dry-run changed the table"
    );
    apply_ok(&ns, &["--config", smaller.path()]);
    assert_eq!(monitor.enforcer_transactions(&ns), 2);
    let listing = text(
        &ns.exec_ok("nft", &["list", "table", "inet", "enforcer"])
            .stdout,
    );
    assert!(
        !listing.contains("llmnet") && listing.contains("fetchnet"),
        "{listing}"
    );
}

/// One handle applies a series of different tables: it diffs each against what it committed
/// last (no commit since), or reads back when another program changed the table in between.
/// Either way a fresh handle, which can only read back, then finds nothing to send.
#[test]
fn successive_applies_by_one_handle_leave_exactly_the_desired_table() {
    use enforcer_core::planner::plan;
    use enforcer_core::policy::Policy;
    use enforcer_core::ruleset::Tables;
    use enforcer_nft::{ApplyOutcome, Nftables};

    require_root();
    let ns = Netns::new("series");
    let mixed = mixed_policy();
    let full = std::fs::read_to_string(threegate()).unwrap();
    let smaller = full.replace(
        "[[networks]]\nname = \"llmnet\"\ninterface = \"br-llm\"\nsubnets = [\"10.100.0.0/24\", \"fd00:100::/64\"]\n",
        "",
    );
    assert_ne!(
        smaller, full,
        "the llmnet entry of rules/threegate.toml moved"
    );
    let smaller = TempFile::new(".toml", &smaller);
    let series: Vec<Tables> = [
        threegate(),
        smaller.path().to_string(),
        mixed.path().to_string(),
        threegate(),
    ]
    .iter()
    .map(|path| {
        let policy = Policy::load(std::path::Path::new(path)).unwrap();
        Tables::from(plan(&policy.table, &policy.static_topology))
    })
    .collect();
    ns.enter(move || {
        let fresh_finds_nothing = |tables: &Tables, step: &str| {
            let outcome = Nftables::open().unwrap().apply(tables).unwrap();
            assert_eq!(
                outcome,
                ApplyOutcome::Unchanged,
                "{step}: a fresh handle had to change the table"
            );
        };
        let mut nft = Nftables::open().unwrap();
        for (step, tables) in series.iter().enumerate() {
            let outcome = nft.apply(tables).unwrap();
            assert!(
                matches!(outcome, ApplyOutcome::Applied { .. }),
                "step {step}: {outcome:?}"
            );
            fresh_finds_nothing(tables, &format!("step {step}"));
        }
        // The fresh handles committed nothing, so the generation is this handle's. Another
        // program inserts an accept-all rule the handle never wrote, then a different table is
        // applied: the handle must notice the commit, read back and remove the rule.
        assert!(
            nft.still_verified().unwrap(),
            "no commit since the handle's"
        );
        let tamper = std::process::Command::new("nft")
            .args(["insert", "rule", "inet", "enforcer", "forward", "accept"])
            .status()
            .unwrap();
        assert!(tamper.success());
        assert!(!nft.still_verified().unwrap(), "another program committed");
        let outcome = nft.apply(&series[1]).unwrap();
        assert!(
            matches!(outcome, ApplyOutcome::Applied { .. }),
            "{outcome:?}"
        );
        fresh_finds_nothing(&series[1], "after tampering");
    });
}

/// Interval sets and hash sets of single flows keyed by flows (`ip daddr . meta l4proto . th
/// dport`, and `meta l4proto . th dport` alone), written over netlink, list as `nft -f` makes them of the rendered text, and
/// a second apply of them sends nothing.
#[test]
fn flow_sets_apply_over_netlink_as_nft_loads_their_text() {
    use enforcer_core::flows::{disjoint, FlowPoint, FlowRange};
    use enforcer_core::names::{ChainName, SetName, Spread};
    use enforcer_core::render::tables_script;
    use enforcer_core::ruleset::{
        Action, Chain, Direction, Family, Hook, Match, Rule, Ruleset, Set, SetContent, SetKey,
        TableFamily, Tables, Verdict,
    };
    use enforcer_nft::{ApplyOutcome, Nftables};

    require_root();
    let flow = |a: Option<(&str, &str)>, p: (u8, u8), d: (u16, u16)| FlowRange {
        addresses: a.map(|(x, y)| (x.parse().unwrap(), y.parse().unwrap())),
        protocols: p,
        ports: d,
    };
    // The full tables, or (`full` false) with an element gone, a range narrowed and a service
    // gone.
    let tables_of = |full: bool| {
        let last_port = if full { 8100 } else { 8050 };
        let mut v4 = vec![
            flow(Some(("10.1.0.0", "10.1.0.255")), (6, 6), (443, 443)),
            flow(Some(("10.1.0.5", "10.1.0.5")), (0, 255), (0, 65535)),
            flow(Some(("10.2.0.4", "10.2.0.4")), (6, 6), (8000, last_port)),
        ];
        let mut services = vec![flow(None, (6, 6), (443, 443))];
        if full {
            v4.push(flow(Some(("10.2.0.3", "10.2.0.3")), (17, 17), (53, 53)));
            services.push(flow(None, (17, 17), (53, 53)));
        }
        let v4_sources = disjoint(&[flow(Some(("10.3.0.7", "10.3.0.7")), (6, 6), (22, 22))]);
        let v6 = disjoint(&[flow(Some(("fd00::2", "fd00::2")), (58, 58), (0, 65535))]);
        let point = |address: Option<&str>, protocol, port| FlowPoint {
            address: address.map(|a| a.parse().unwrap()),
            protocol,
            port,
        };
        let mut v4_points = vec![point(Some("10.2.0.9"), 6, 8080)];
        if full {
            v4_points.push(point(Some("10.2.0.10"), 17, 53));
        }
        let points = |flows: Vec<FlowPoint>| SetContent::FlowPoints(flows.into_iter().collect());
        // The test's names for points sets start with `p`: a rule's encoding follows its
        // set's name.
        let name = |name: &str| {
            let spread = match name.starts_with('p') {
                true => Spread::Points,
                false => Spread::Ranges,
            };
            SetName::RoleFlows(Family::V4, spread, name.into())
        };
        let set = |set: &str, family: Option<Family>, content| Set {
            name: name(set),
            key: SetKey::Flows(family),
            content,
        };
        let accept = |address: Option<(Family, Direction)>, set: &str| Rule {
            matches: vec![Match::FlowInSet(address, name(set))],
            counter: false,
            action: Action::Verdict(Verdict::Accept),
            comment: format!("flows in {set}"),
        };
        Tables::from(Ruleset {
            family: TableFamily::Inet,
            table: "enforcer".into(),
            sets: vec![
                set("a_v4", Some(Family::V4), SetContent::Flows(disjoint(&v4))),
                set("a_v6", Some(Family::V6), SetContent::Flows(v6)),
                set("a_out", None, SetContent::Flows(disjoint(&services))),
                set("a_src", Some(Family::V4), SetContent::Flows(v4_sources)),
                set("p_v4", Some(Family::V4), points(v4_points)),
                set("p_out", None, points(vec![point(None, 6, 80)])),
            ],
            chains: vec![Chain {
                name: ChainName::Forward,
                hook: Some((Hook::Forward, -10)),
                rules: vec![
                    accept(Some((Family::V4, Direction::Destination)), "a_v4"),
                    accept(Some((Family::V6, Direction::Destination)), "a_v6"),
                    accept(None, "a_out"),
                    accept(Some((Family::V4, Direction::Source)), "a_src"),
                    accept(Some((Family::V4, Direction::Destination)), "p_v4"),
                    accept(None, "p_out"),
                ],
            }],
        })
    };
    let tables = tables_of(true);
    let applied = Netns::new("flows");
    let loaded = Netns::new("flowsl");
    let script = tables_script(&tables);
    let load = loaded.exec_with_input("nft", &["-f", "-"], script.as_bytes());
    assert!(
        load.status.success(),
        "nft -f: {}\n{script}",
        text(&load.stderr)
    );
    // What nft made of the text is, expression for expression, what the encoder writes.
    let same = tables.clone();
    let from_text = loaded.enter(move || Nftables::open().unwrap().apply(&same).unwrap());
    assert_eq!(
        from_text,
        ApplyOutcome::Unchanged,
        "nft -f wrote other expressions"
    );
    let outcomes = applied.enter(move || {
        let mut nft = Nftables::open().unwrap();
        let first = nft.apply(&tables).unwrap();
        let again = Nftables::open().unwrap().apply(&tables).unwrap();
        (first, again)
    });
    assert!(
        matches!(outcomes.0, ApplyOutcome::Applied { .. }),
        "{:?}",
        outcomes.0
    );
    assert_eq!(
        outcomes.1,
        ApplyOutcome::Unchanged,
        "a fresh read-back differs"
    );
    assert_eq!(
        listed_table(&applied, "inet", "enforcer"),
        listed_table(&loaded, "inet", "enforcer"),
        "netlink and nft -f differ:\n{script}"
    );

    // Then elements go away and change (a range narrowed, a service gone): deleted by their
    // first and last keys, the kernel holds what `nft -f` makes of the new text.
    let smaller = tables_of(false);
    let script = tables_script(&smaller);
    let reloaded = Netns::new("flowsr");
    let load = reloaded.exec_with_input("nft", &["-f", "-"], script.as_bytes());
    assert!(load.status.success(), "nft -f: {}", text(&load.stderr));
    let outcomes = applied.enter(move || {
        let mut nft = Nftables::open().unwrap();
        let changed = nft.apply(&smaller).unwrap();
        let again = Nftables::open().unwrap().apply(&smaller).unwrap();
        (changed, again)
    });
    assert!(
        matches!(outcomes.0, ApplyOutcome::Applied { .. }),
        "{:?}",
        outcomes.0
    );
    assert_eq!(
        outcomes.1,
        ApplyOutcome::Unchanged,
        "a fresh read-back differs"
    );
    assert_eq!(
        listed_table(&applied, "inet", "enforcer"),
        listed_table(&reloaded, "inet", "enforcer"),
        "after the change, netlink and nft -f differ:\n{script}"
    );
}

#[test]
fn a_bad_policy_is_located_and_changes_nothing() {
    require_root();
    let ns = Netns::new("badcfg");
    let monitor = Monitor::start(&ns);
    apply_ok(&ns, &["--config", &threegate()]);
    let before = object_handles(&ns, "enforcer");
    let cases = [
        ("[table]\nname = \"enforcer\"\ncolor = \"red\"\n", ":3:1:", "unknown field"),
        ("[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/33\"]\n", ":3:12:", "not a subnet"),
        ("[[networks]]\nname = \"a\"\nsubnets = [\"0.0.0.0/0\"]\n", ":3:12:", "too large"),
        (
            "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/16\"]\n[[networks]]\nname = \"b\"\nsubnets = [\"10.0.3.0/24\"]\n",
            ":6:12:",
            "overlaps",
        ),
        ("[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\"]\n[[proxies]]\nname = \"p\"\naddresses = [\"10.1.0.2\"]\n", ":6:14:", "outside every managed subnet"),
        ("[proxy]\nallow = [\"tcp/0\"]\n", ":2:10:", "port 0"),
    ];
    for (content, place, message) in cases {
        let file = TempFile::new(".toml", content);
        for args in [
            vec!["apply", "--config", file.path()],
            vec!["check-config", file.path()],
        ] {
            let output = enforcer(&ns, &args);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{}{place}", file.path())),
                "{place} in {stderr}"
            );
            assert!(stderr.contains(message), "{message} in {stderr}");
        }
    }
    assert_eq!(
        object_handles(&ns, "enforcer"),
        before,
        "a rejected policy changed the kernel"
    );
    assert_eq!(
        monitor.enforcer_transactions(&ns),
        1,
        "only the first, valid apply committed"
    );
}

#[test]
fn without_cap_net_admin_apply_explains_and_dry_run_still_works() {
    require_root();
    let ns = Netns::new("nocap");
    let bin = enforcer_harness::enforcer_bin();
    let bin = bin.to_str().unwrap();
    let config = threegate();
    let output = ns.exec(
        "setpriv",
        &[
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            bin,
            "apply",
            "--config",
            &config,
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs CAP_NET_ADMIN") && stderr.contains("--dry-run"),
        "{stderr}"
    );
    assert_eq!(object_handles(&ns, "enforcer"), None);

    let output = ns.exec(
        "setpriv",
        &[
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            bin,
            "apply",
            "--dry-run",
            "--config",
            &config,
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not read the kernel's table"),
        "{stderr}"
    );
    assert!(
        text(&output.stdout).starts_with("table inet enforcer\n"),
        "the script is printed"
    );
}

/// What an operator (or a Docker restart, or `flush ruleset`) does to the table is seen by
/// dry-run and undone by the next apply; other tables are never touched.
#[test]
fn tampering_is_reported_and_repaired() {
    require_root();
    let ns = Netns::new("tamper");
    let config = threegate();
    ns.exec_ok("nft", &["add", "table", "inet", "neighbour"]);
    ns.exec_ok("nft", &["add", "chain", "inet", "neighbour", "c"]);
    apply_ok(&ns, &["--config", &config]);
    let pristine = listed_table(&ns, "inet", "enforcer");

    let tamperings: [(&[&str], &str); 5] = [
        (
            &[
                "delete",
                "element",
                "inet",
                "enforcer",
                "egress_v4_24",
                "{ 10.100.0.0 }",
            ],
            "+ element 10.100.0.0 comment \"llmnet\" in set egress_v4_24",
        ),
        (
            &["add", "rule", "inet", "enforcer", "forward", "accept"],
            "~ chain forward: rules change",
        ),
        (
            &["flush", "chain", "inet", "enforcer", "proxy_proxy"],
            "~ chain proxy_proxy: rules change",
        ),
        // Every chain stays, none on its hook.
        (
            &["add", "table", "inet", "enforcer", "{ flags dormant; }"],
            "~ table inet enforcer: flags dormant (want none): its chains were on no hook",
        ),
        (
            &["flush", "ruleset"],
            "+ table inet enforcer (absent from the kernel)",
        ),
    ];
    for (command, reported) in tamperings {
        ns.exec_ok("nft", command);
        let dry = enforcer(&ns, &["apply", "--dry-run", "--config", &config]);
        assert_eq!(dry.status.code(), Some(1), "{command:?} went unnoticed");
        assert!(
            text(&dry.stderr).contains(reported),
            "{command:?}: {}",
            text(&dry.stderr)
        );
        apply_ok(&ns, &["--config", &config]);
        assert_eq!(
            listed_table(&ns, "inet", "enforcer"),
            pristine,
            "{command:?} was not repaired"
        );
    }
    // The neighbour's table was left alone until `flush ruleset` removed it.
    assert!(!ns
        .exec("nft", &["list", "table", "inet", "neighbour"])
        .status
        .success());
}

/// `enforcer run` on ThreeGate's policy in a namespace of its own (named after `role`), once it
/// enforces; the directory holds its log and state file.
fn running_agent(role: &str) -> (Netns, TempDir, Agent) {
    require_root();
    let ns = Netns::new(role);
    let dir = TempDir::new(role);
    let config = threegate();
    let agent = Agent::start(
        &ns,
        dir.path(),
        &enforcer_bin(),
        &["--config", &config],
        &[],
    );
    agent.expect_log("enforcing;", Duration::from_secs(10));
    (ns, dir, agent)
}

/// The running agent undoes another program's change as soon as nftables' monitor reports it,
/// and says what was changed: every kind of tampering, each restored to the table `nft` listed
/// before, by the monitor's path (the periodic check never had anything to restore).
#[test]
fn the_running_agent_undoes_each_tampering_at_once_and_names_it() {
    let (ns, _dir, agent) = running_agent("heal");
    // A chain re-created comes last in `nft`'s listing: objects are compared in any order.
    let listed = || listed_objects(&ns, "inet", "enforcer");
    let pristine = listed();
    let tamperings: [(&str, &str); 7] = [
        (
            "delete element inet enforcer egress_v4_24 { 10.100.0.0 }",
            "delete element inet enforcer egress_v4_24",
        ),
        (
            "add rule inet enforcer forward accept",
            "add rule inet enforcer forward",
        ),
        (
            "flush chain inet enforcer proxy_proxy",
            "delete rule inet enforcer proxy_proxy",
        ),
        (
            "add table inet enforcer { flags dormant; }",
            "add table inet enforcer",
        ),
        // The forward hook moved behind everyone else's (priority 100 instead of -10).
        (
            "flush chain inet enforcer forward\ndelete chain inet enforcer forward\n\
             add chain inet enforcer forward { type filter hook forward priority 100; policy \
             accept; }",
            "delete chain inet enforcer forward",
        ),
        ("delete table inet enforcer", "delete table inet enforcer"),
        ("flush ruleset", "delete table inet enforcer"),
    ];
    for (round, (script, named)) in tamperings.into_iter().enumerate() {
        let output = ns.exec_with_input("nft", &["-f", "-"], script.as_bytes());
        assert!(
            output.status.success(),
            "{script}: {}",
            text(&output.stderr)
        );
        let restored = || {
            agent
                .log()
                .matches("another program changed table enforcer")
                .count()
                > round
                && listed() == pristine
        };
        assert!(
            wait_until(Duration::from_secs(10), restored),
            "{script} was not undone:\n{}",
            agent.log()
        );
        let log = agent.log();
        let warning = log
            .lines()
            .filter(|l| l.contains("another program changed table enforcer"))
            .nth(round)
            .unwrap_or_default()
            .to_string();
        assert!(
            warning.contains("nft (pid ") && warning.contains(named),
            "{script}: the warning names nft and `{named}`: {warning}"
        );
    }
    assert_eq!(
        agent
            .log()
            .matches("reason=\"restoring what another program changed\"")
            .count(),
        7,
        "{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("reason=\"periodic check"),
        "the periodic check had to restore something: {}",
        agent.log()
    );
}

/// `enforcer status` checks that each base chain is on its hook with the planned priority and
/// policy: a dormant table (present, every chain kept, none hooked) or a chain moved to another
/// priority is an error (exit 1), named; once the agent has restored the table, status agrees
/// again.
#[test]
fn status_checks_every_base_chain_is_on_its_hook() {
    let (ns, _dir, agent) = running_agent("hooks");
    let config = threegate();
    let state = agent.state_file().to_str().unwrap().to_string();
    let status = || {
        let output = enforcer(
            &ns,
            &[
                "status",
                "--json",
                "--config",
                &config,
                "--state-file",
                &state,
            ],
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)));
        (output.status.code(), report)
    };
    let (code, report) = status();
    assert_eq!(code, Some(0), "{report:#}");
    let hooks = report["hooks"].as_array().unwrap();
    let forward = hooks
        .iter()
        .find(|h| h["table"] == "table inet enforcer" && h["chain"] == "forward")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(
        (&forward["hook"], &forward["priority"], &forward["policy"]),
        (&"forward".into(), &(-10).into(), &"accept".into())
    );
    assert!(hooks.iter().all(|h| h["registered"] == true), "{report:#}");

    // The agent stopped, so that it does not restore what status must see.
    agent.signal(libc::SIGSTOP);
    let tamperings: [(&str, &str); 2] = [
        (
            "add table inet enforcer { flags dormant; }",
            "table inet enforcer is dormant: it holds its chains but none is on its hook",
        ),
        (
            "flush chain inet enforcer forward\ndelete chain inet enforcer forward\n\
             add chain inet enforcer forward { type filter hook forward priority 100; policy \
             accept; }",
            "chain forward of table inet enforcer is on hook forward priority 100 policy accept \
             (type filter), not on hook forward priority -10 policy accept (type filter)",
        ),
    ];
    for (script, note) in tamperings {
        let output = ns.exec_with_input("nft", &["-f", "-"], script.as_bytes());
        assert!(
            output.status.success(),
            "{script}: {}",
            text(&output.stderr)
        );
        let (code, report) = status();
        assert_eq!(code, Some(1), "{script}: {report:#}");
        let notes = report["notes"].to_string();
        assert!(notes.contains(note), "{script}: {notes}");
        assert!(
            report["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["chain"] == "forward" && h["registered"] == false),
            "{report:#}"
        );
        // Undone by hand (the agent is stopped): re-hooked, at the planned priority.
        apply_ok(&ns, &["--config", &config]);
    }
    agent.signal(libc::SIGCONT);
    let (code, report) = status();
    assert_eq!(code, Some(0), "{report:#}");
}

/// A tampering hidden in one transaction with 100,000 other changes, committed while the agent
/// is stopped: more notifications than its socket queues, so the tampering's are lost with
/// the overflow. Resumed, the agent sees the loss and the tampering is undone (by the check
/// the loss calls for, or by the periodic check should its tick come first).
#[test]
fn a_tampering_drowned_in_a_flood_of_notifications_is_still_undone() {
    let (ns, _dir, agent) = running_agent("flood");
    let pristine = listed_table(&ns, "inet", "enforcer");
    let elements: Vec<String> = (0..100_000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
        .collect();
    let script = format!(
        "delete element inet enforcer egress_v4_24 {{ 10.100.0.0 }}\n\
         add table ip flood\nadd set ip flood s {{ type ipv4_addr; }}\n\
         add element ip flood s {{ {} }}\n",
        elements.join(", ")
    );
    agent.signal(libc::SIGSTOP);
    let output = ns.exec_with_input("nft", &["-f", "-"], script.as_bytes());
    agent.signal(libc::SIGCONT);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        wait_until(Duration::from_secs(20), || listed_table(
            &ns, "inet", "enforcer"
        ) == pristine),
        "not undone:\n{}",
        agent.log()
    );
    assert!(
        agent.wait_for_log(
            "nftables notifications were lost (the monitor's queue overflowed)",
            Duration::from_secs(10)
        ),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert_eq!(log.matches("applied:").count(), 2, "one restore: {log}");
}

/// Under the systemd unit, root's capabilities are cut to CAP_NET_ADMIN by the bounding set,
/// and the unit's syscall filter forbids `capset`. The agent must then run without calling it.
#[test]
fn with_net_admin_alone_the_agent_never_calls_capset() {
    require_root();
    let ns = Netns::new("capset");
    let trace = TempFile::new(".strace", "");
    let log = TempFile::new(".log", "");
    let state = TempFile::new(".json", "");
    std::fs::remove_file(state.path()).unwrap();
    let bin = enforcer_bin();
    let mut child = ns
        .command("setpriv")
        .args([
            "--bounding-set",
            "-all,+net_admin",
            "--inh-caps",
            "-all",
            "--",
        ])
        .args([
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=capset",
            "-o",
            trace.path(),
        ])
        .arg(&bin)
        .args(["run", "--state-file", state.path()])
        .env("DOCKER_HOST", enforcer_harness::NO_DOCKER)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log.path()).unwrap())
        .spawn()
        .unwrap();
    let enforced = wait_until(Duration::from_secs(20), || {
        object_handles(&ns, "enforcer").is_some()
    });
    // strace killed alone would leave the agent running: end the agent first.
    let _ = std::process::Command::new("pkill")
        .args(["-9", "-f", state.path()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(enforced, "the agent did not apply: {logged}");
    let calls = std::fs::read_to_string(trace.path()).unwrap();
    assert!(!calls.contains("capset("), "capset was called:\n{calls}");
}
