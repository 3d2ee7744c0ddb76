//! The policy parser's unit tests.

use super::*;

fn error_of(text: &str) -> (usize, usize, String) {
    match Policy::parse(text, "p.toml").unwrap_err() {
        PolicyError::Invalid {
            line,
            column,
            message,
            ..
        } => (line, column, message),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn embedded_default_is_the_all_defaults_policy() {
    let embedded = Policy::embedded();
    let minimal = Policy::parse("[table]\n", "minimal").unwrap();
    // The same policy, whatever the lines its entries are written on.
    let unplaced = |policy: &Policy| Policy {
        entries: Default::default(),
        ..policy.clone()
    };
    assert_eq!(unplaced(&embedded), unplaced(&minimal));
    assert_eq!(embedded.table.name, "enforcer");
    assert!(embedded.docker.manage_internal);
    assert_eq!(embedded.docker.managed_label, "enforcer.managed");
    assert_eq!(embedded.docker.role_label, "enforcer.role");
    assert_eq!(embedded.docker.proxy_role, "egress-proxy");
    assert!(embedded.docker.enabled);
    assert_eq!(embedded.docker.unknown_networks, UnknownNetworks::Deny);
    let patterns = ["br-*", "docker0", "docker_gwbridge"];
    assert_eq!(embedded.docker.bridge_patterns, patterns);
    assert_eq!(embedded.table.unknown_interface_patterns, patterns);
    let services: Vec<String> = embedded
        .proxy_defaults
        .services
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(services, ["tcp/53", "tcp/443", "udp/53"]);
}

#[test]
fn unknown_key_is_located() {
    let (line, column, message) = error_of("[table]\nname = \"x\"\ncolour = 1\n");
    assert_eq!((line, column), (3, 1));
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn bad_cidr_is_located() {
    let text = "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\", \"10.1.0.0/33\"]\n";
    let (line, column, message) = error_of(text);
    assert_eq!((line, column), (3, 27));
    assert!(message.contains("not a subnet"), "{message}");
}

#[test]
fn topology_errors_point_at_the_value() {
    let text = "[[networks]]\nname = \"a\"\nsubnets = [\"0.0.0.0/0\"]\n";
    let (line, _, message) = error_of(text);
    assert_eq!(line, 3);
    assert!(message.contains("too large"), "{message}");

    let text = "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\"]\n\
                [[networks]]\nname = \"b\"\nsubnets = [\"10.0.0.128/25\"]\n";
    let (line, _, message) = error_of(text);
    assert_eq!(line, 6);
    assert!(message.contains("overlaps"), "{message}");

    let text = "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\"]\n\
                [[proxies]]\nname = \"p\"\naddresses = [\"10.9.0.2\"]\n";
    let (line, column, message) = error_of(text);
    assert_eq!((line, column), (6, 14));
    assert!(
        message.contains("outside every managed subnet"),
        "{message}"
    );
}

#[test]
fn port_zero_and_bad_names_are_rejected() {
    let (line, _, message) = error_of("[proxy]\nallow = [\"tcp/0\"]\n");
    assert_eq!(line, 2);
    assert!(message.contains("port 0"), "{message}");
    let (_, _, message) = error_of("[table]\nname = \"9bad\"\n");
    assert!(message.contains("table name"), "{message}");
}

#[test]
fn docker_keys_are_checked() {
    let (line, _, message) = error_of("[docker]\nunknown_networks = \"maybe\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("\"deny\" or \"allow\""), "{message}");
    for pattern in ["*", "a/b", "much-too-long-interface*"] {
        let text = format!("[docker]\nbridge_patterns = [\"br-*\", \"{pattern}\"]\n");
        let (line, column, message) = error_of(&text);
        assert_eq!((line, column), (2, 28), "{pattern}");
        assert!(message.contains("interface pattern"), "{message}");
    }
    let allow = Policy::parse("[docker]\nunknown_networks = \"allow\"\n", "p").unwrap();
    assert!(allow.table.unknown_interface_patterns.is_empty());
    let off = Policy::parse("[docker]\nenabled = false\n", "p").unwrap();
    assert!(off.table.unknown_interface_patterns.is_empty());
    let text = "[[networks]]\nname = \"a\"\ninterface = \"bad name\"\n";
    let (line, _, message) = error_of(text);
    assert_eq!(line, 3);
    assert!(message.contains("not an interface name"), "{message}");
}

#[test]
fn proxies_inherit_then_override_defaults() {
    let text = "[proxy]\nallow = [\"tcp/443\"]\ndns_servers = [\"203.0.113.53\"]\n\
                [[networks]]\nname = \"e\"\nsubnets = [\"10.2.0.0/24\"]\n\
                [[proxies]]\nname = \"a\"\naddresses = [\"10.2.0.2\"]\n\
                [[proxies]]\nname = \"b\"\naddresses = [\"10.2.0.3\"]\nallow = [\"udp/53\"]\n";
    let policy = Policy::parse(text, "p.toml").unwrap();
    let [a, b] = policy.static_topology.proxies() else {
        panic!()
    };
    assert_eq!(
        a.services.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["tcp/443"]
    );
    assert_eq!(
        b.services.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["udp/53"]
    );
    assert_eq!(
        b.dns_servers,
        vec!["203.0.113.53".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn an_empty_policy_is_refused_as_a_truncated_write() {
    for text in [
        "",
        "\n\n",
        "  # only a comment\n\n# and another\n",
        "\u{feff}\n",
    ] {
        let (line, column, message) = error_of(text);
        assert_eq!((line, column), (1, 1), "{text:?}");
        assert!(message.contains("truncated write"), "{message}");
    }
}

#[test]
fn a_policy_that_is_not_utf8_is_located() {
    let dir = std::env::temp_dir().join(format!("enforcer-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(&path, b"[table]\nname = \"ok\"\n# caf\xe9\n").unwrap();
    let error = Policy::load(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        error.ends_with(":3:6: this byte is not UTF-8: a policy file is UTF-8 text"),
        "{error}"
    );
}

#[test]
fn an_os_error_is_said_once() {
    let error = Policy::load(std::path::Path::new("/nonexistent/p.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "cannot read policy file /nonexistent/p.toml: No such file or directory (os error 2)"
    );
    assert!(
        std::error::Error::source(&Policy::load(std::path::Path::new("/")).unwrap_err()).is_none()
    );
}

#[test]
fn table_names_nft_cannot_read_back_are_refused() {
    for keyword in ["add", "table", "inet", "counter"] {
        let (_, column, message) = error_of(&format!("[table]\nname = \"{keyword}\"\n"));
        assert_eq!(column, 8, "{keyword}");
        assert!(message.contains("is an nft keyword"), "{message}");
    }
    let huge = "a".repeat(1_000_000);
    let (_, _, message) = error_of(&format!("[table]\nname = \"{huge}\"\n"));
    assert!(message.len() < 300, "{} bytes", message.len());
    assert!(message.contains("(1000000 bytes)"), "{message}");
}

#[test]
fn every_comment_fits_what_nft_reads_back() {
    let name = "p".repeat(crate::topology::MAX_NAME_LEN);
    let text = format!(
        "[[networks]]\nname = \"{name}\"\nsubnets = [\"10.1.0.0/24\"]\n\
         [[proxies]]\nname = \"{name}\"\naddresses = [\"10.1.0.2\"]\ndns_servers = [\"192.0.2.53\"]\n"
    );
    let policy = Policy::parse(&text, "p").unwrap();
    let ruleset = crate::planner::plan(&policy.table, &policy.static_topology);
    let script = crate::render::script(&ruleset);
    let comments: Vec<&str> = script
        .split("comment \"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(comments.len() > 5, "{script}");
    for comment in comments {
        assert!(
            comment.len() <= crate::nft_syntax::MAX_COMMENT_BYTES,
            "{comment}"
        );
    }
}

#[test]
fn an_empty_allow_list_is_refused() {
    let (line, column, message) = error_of("[proxy]\nallow = []\n");
    assert_eq!((line, column), (2, 9));
    assert!(message.contains("empty allow list"), "{message}");
    let (line, _, _) = error_of(
        "[[networks]]\nname = \"n\"\nsubnets = [\"10.1.0.0/24\"]\n\
         [[proxies]]\nname = \"p\"\naddresses = [\"10.1.0.2\"]\nallow = []\n",
    );
    assert_eq!(line, 7);
}

#[test]
fn a_reload_names_what_it_takes_away() {
    let old = Policy::parse(
        "[[networks]]\nname = \"a\"\nsubnets = [\"10.1.0.0/24\"]\n\
         [[networks]]\nname = \"b\"\nsubnets = [\"10.2.0.0/24\"]\n\
         [[proxies]]\nname = \"p\"\naddresses = [\"10.1.0.2\"]\nallow = [\"tcp/443\", \"udp/53\"]\n\
         macs = [\"02:42:0a:01:00:02\"]\n",
        "old",
    )
    .unwrap();
    let new = Policy::parse(
        "[docker]\nunknown_networks = \"allow\"\n\
         [[networks]]\nname = \"a\"\nsubnets = [\"10.1.0.0/24\"]\n\
         [[proxies]]\nname = \"p\"\naddresses = [\"10.1.0.2\"]\nallow = [\"tcp/443\"]\n",
        "new",
    )
    .unwrap();
    assert_eq!(
        old.removals(&new),
        [
            "static network b",
            "udp/53 of proxy p",
            "MAC 02:42:0a:01:00:02 of proxy p (its port's binding)",
            "the deny of Docker bridges not classified yet"
        ]
    );
    assert!(new.removals(&old).is_empty());
    assert!(old.removals(&old).is_empty());

    let roles = |text: &str| Policy::parse(text, "roles").unwrap();
    let before = roles(
        "[roles.a]\negress = [{ to = \"internet\", allow = [\"tcp/443\"] }]\n\
         [roles.b]\n[[networks]]\nname = \"n\"\nsubnets = [\"10.1.0.0/24\"]\n\
         [[members]]\nname = \"m\"\nrole = \"b\"\naddresses = [\"10.1.0.9\"]\n",
    );
    let after = roles("[roles.a]\n[roles.c]\n");
    assert_eq!(
        before.removals(&after),
        [
            "static network n",
            "role a's egress to internet (tcp/443)",
            "role b",
            "static member m (role b)"
        ]
    );
}

#[test]
fn special_ranges_are_refused_as_managed_subnets() {
    for subnet in [
        "127.0.0.0/8",
        "127.1.0.0/16",
        "::1/128",
        "224.0.0.0/24",
        "239.1.0.0/16",
        "ff05::/16",
        "169.254.0.0/16",
        "169.0.0.0/8",
        "fe80::/64",
        "0.0.0.0/8",
        "255.255.255.255/32",
        "::ffff:10.1.0.0/120",
    ] {
        let text =
            format!("[[networks]]\nname = \"a\"\nsubnets = [\"10.1.0.0/24\", \"{subnet}\"]\n");
        let (line, column, message) = error_of(&text);
        assert_eq!((line, column), (3, 27), "{subnet}");
        assert!(
            message.contains("which no managed network may use"),
            "{subnet}: {message}"
        );
    }
    let (_, _, message) = error_of("[[networks]]\nname = \"a\"\nsubnets = [\"::ffff:0:0/96\"]\n");
    assert!(message.contains("IPv4-mapped"), "{message}");
    // Neighbours of the special ranges stay usable.
    let text = "[[networks]]\nname = \"a\"\nsubnets = [\"128.0.0.0/8\", \"fd00::/64\"]\n";
    assert!(Policy::parse(text, "p").is_ok());
}

#[test]
fn a_default_dns_server_inside_a_managed_subnet_is_located() {
    // No proxy is declared: before, this passed, and every Docker proxy was later refused.
    let text = "[proxy]\ndns_servers = [\"192.0.2.53\", \"10.1.0.53\"]\n\
                [[networks]]\nname = \"a\"\nsubnets = [\"10.1.0.0/24\"]\n";
    let (line, column, message) = error_of(text);
    assert_eq!((line, column), (2, 30));
    assert!(
        message.contains("default DNS server 10.1.0.53 lies inside managed subnet 10.1.0.0/24"),
        "{message}"
    );
}

#[test]
fn two_networks_may_not_share_an_interface() {
    let text = "[[networks]]\nname = \"a\"\ninterface = \"br-x\"\n\
                [[networks]]\nname = \"b\"\ninterface = \"br-x\"\n";
    let (line, column, message) = error_of(text);
    assert_eq!((line, column), (6, 13));
    assert!(
        message.contains("`br-x` is already the interface of network `a`"),
        "{message}"
    );
}

#[test]
fn only_canonical_decimal_ports_are_services() {
    for service in ["tcp/+443", "tcp/0443", "udp/053", "tcp/ 443", "tcp/"] {
        let (line, column, message) = error_of(&format!("[proxy]\nallow = [\"{service}\"]\n"));
        assert_eq!((line, column), (2, 10), "{service}");
        assert!(
            message.contains("is not a port number"),
            "{service}: {message}"
        );
    }
}

#[test]
fn interface_names_and_patterns_nft_would_read_otherwise_are_refused() {
    // `br\*` used to load as `br*` from the dry-run text but as a prefix match on `br\` over
    // netlink.
    for pattern in [r"br\\*", r"br\\", "br'*", "br:0", ".", ".."] {
        let text = format!("[docker]\nbridge_patterns = [\"{pattern}\"]\n");
        let (_, _, message) = error_of(&text);
        assert!(
            message.contains("interface pattern"),
            "{pattern}: {message}"
        );
    }
    for name in [r"br\\x", "br'x", "br\\\"x", "br:0", ".."] {
        let text = format!("[[networks]]\nname = \"a\"\ninterface = \"{name}\"\n");
        let (line, _, message) = error_of(&text);
        assert_eq!(line, 3, "{name}");
        assert!(
            message.contains("not an interface name"),
            "{name}: {message}"
        );
    }
}

#[test]
fn proxy_macs_are_unicast_and_declared_once() {
    let proxy = |name: &str, macs: &str| {
        format!(
            "[[networks]]\nname = \"n\"\ninterface = \"br-n\"\nsubnets = [\"10.1.0.0/24\"]\n\
             [[proxies]]\nname = \"{name}\"\naddresses = [\"10.1.0.2\"]\nmacs = [{macs}]\n"
        )
    };
    let policy = Policy::parse(&proxy("p", "\"02:42:0A:01:00:02\""), "p.toml").unwrap();
    let macs: Vec<String> = policy.static_topology.proxies()[0]
        .macs
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(macs, ["02:42:0a:01:00:02"]);

    for (bad, what) in [
        ("\"01:00:5e:00:00:01\"", "multicast"),
        ("\"00:00:00:00:00:00\"", "all zeros"),
        ("\"02:42:0a:01:00\"", "five octets"),
    ] {
        let (line, column, message) = error_of(&proxy("p", bad));
        assert_eq!((line, column), (8, 9), "{what}: {message}");
        assert!(
            message.contains("not a unicast MAC address"),
            "{what}: {message}"
        );
    }

    let twice = format!(
        "{}[[proxies]]\nname = \"q\"\naddresses = [\"10.1.0.3\"]\nmacs = [\"02:42:0a:01:00:02\"]\n",
        proxy("p", "\"02:42:0a:01:00:02\"")
    );
    let (line, column, message) = error_of(&twice);
    assert_eq!((line, column), (12, 9), "{message}");
    assert!(
        message.contains("declared twice (first by proxy p)"),
        "{message}"
    );
}

#[test]
fn role_mistakes_are_located() {
    let cases = [
        (
            "[roles.a]\negress = [{ to = \"role:b\", allow = [\"tcp/80\"] }]\n",
            (2, 18),
            "role `a` names role `b`, which the policy does not define",
        ),
        (
            "[roles.a]\negress = [{ to = \"internet\", allow = [\"tcp/90-80\"] }]\n",
            (2, 39),
            "backwards range",
        ),
        (
            "[roles.a]\negress = [{ to = \"internet\", allow = [] }]\n",
            (2, 38),
            "empty allow list",
        ),
        (
            "[roles.a]\negress = [{ to = \"elsewhere\", allow = [\"any\"] }]\n",
            (2, 18),
            "not a destination",
        ),
        (
            "[roles.a]\negress = [{ to = \"internet\", allow = [\"any\"], colour = 1 }]\n",
            (2, 47),
            "unknown field `colour`",
        ),
        ("[roles.a]\nreach = []\n", (2, 1), "unknown field `reach`"),
        (
            "[roles.a]\ningress = [{ from = \"host\", allow = [\"any\"] }]\n",
            (2, 21),
            "what the host itself sends is not filtered",
        ),
        ("[roles.egress-proxy]\n", (1, 1), "is the proxy role"),
        (
            "[roles.a]\n[[members]]\nname = \"m\"\nrole = \"b\"\naddresses = [\"10.0.0.1\"]\n",
            (4, 8),
            "holds role `b`, which the policy does not define",
        ),
        (
            "[roles.a]\n[[networks]]\nname = \"n\"\nsubnets = [\"10.1.0.0/24\"]\n\
             [[members]]\nname = \"m\"\nrole = \"a\"\naddresses = [\"10.9.0.1\"]\n",
            (8, 14),
            "lies outside every managed subnet",
        ),
        (
            "[[networks]]\nname = \"n\"\nsubnets = [\"10.1.0.0/24\"]\neast_west = \"sometimes\"\n",
            (4, 13),
            "use \"allow\" or \"deny\"",
        ),
    ];
    for (text, at, needle) in cases {
        let (line, column, message) = error_of(text);
        assert_eq!((line, column), at, "{needle}: {message}");
        assert!(message.contains(needle), "{needle}: {message}");
    }
}

#[test]
fn roles_members_and_east_west_are_read() {
    let policy = Policy::parse(
        "[[networks]]\nname = \"n\"\nsubnets = [\"10.1.0.0/24\"]\neast_west = \"deny\"\n\
         [roles.agent]\negress = [{ to = \"role:dns\", allow = [\"udp/53\", \"tcp/53\"] },\n\
         { to = \"10.9.0.0/16\", allow = [\"tcp/8000-8100\", \"icmp\"] }]\n\
         [roles.dns]\negress = [{ to = \"internet\", allow = [\"any\"] }]\n\
         [[members]]\nname = \"a\"\nrole = \"agent\"\naddresses = [\"10.1.0.5\"]\n",
        "p.toml",
    )
    .unwrap();
    let topology = &policy.static_topology;
    assert_eq!(
        topology.networks()[0].east_west,
        crate::topology::EastWest::Deny
    );
    let agent = &topology.roles()["agent"];
    let rules: Vec<String> = agent
        .egress
        .iter()
        .map(|r| {
            let allow: Vec<String> = r.allow.iter().map(|a| a.to_string()).collect();
            format!("{} {}", r.to, allow.join(","))
        })
        .collect();
    assert_eq!(
        rules,
        ["role:dns udp/53,tcp/53", "10.9.0.0/16 tcp/8000-8100,icmp"]
    );
    assert_eq!(topology.members()[0].role, "agent");
    assert_eq!(policy.docker.east_west_label, "enforcer.east-west");
}
