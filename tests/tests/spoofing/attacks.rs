//! The attacks, one function each: it performs the attack, undoes what it changed, and
//! returns what it observed.

use std::time::Duration;

use enforcer_harness::spec::{internet, Family, EGRESSNET};
use enforcer_harness::{probe_here, wait_until, Netns, Proto};

use crate::forge::{self, Listener};
use crate::inspect::{host_port, link_local_of, neighbour_mac, sysctl, text};
use crate::lab::{internet_at, Lab, Outcome, Undo};

/// Tries of an attack that races the proxy for the host's neighbour entry.
const TRIES: usize = 5;
/// The VLAN ID of the tagged variants: 0, a priority tag, which a Linux receiver without a
/// VLAN device delivers as untagged.
const PRIORITY_TAG: &str = "0";

/// a. The attacker takes the proxy's IPv4 address (the address, and gratuitous ARP that moves
/// the host's neighbour entry to its MAC) and opens a two-way tcp/443 connection out.
pub(crate) fn ipv4_takeover(lab: &Lab) -> Outcome {
    let (iface, proxy) = (lab.attacker.iface.as_str(), lab.proxy.v4.as_str());
    let claim = [
        "arp",
        "--iface",
        iface,
        "--op",
        "request",
        "--sender-ip",
        proxy,
        "--count",
        "2",
        "--interval-ms",
        "50",
    ];
    let attack = "a. IPv4 takeover (address + gratuitous ARP), tcp/443 out";
    takeover(lab, Family::V4, attack, &claim)
}

/// The takeovers' common part: the root of the attacker's namespace (for brevity) takes the
/// proxy's address of `family` and a route out that uses it; then, up to [`TRIES`] times, it
/// sends `claim` (forge's arguments: what moves the host's neighbour entry) and tries a
/// two-way tcp/443 connection out. Everything is undone, last to first.
fn takeover(lab: &Lab, family: Family, attack: &'static str, claim: &[&str]) -> Outcome {
    let ns = lab.attacker_ns();
    let iface = lab.attacker.iface.as_str();
    let (proxy, flag, length) = match family {
        Family::V4 => (lab.proxy.v4.as_str(), "-4", 32),
        Family::V6 => (lab.proxy.v6.as_str(), "-6", 128),
    };
    let target = internet_at(443, family);
    let gateway = EGRESSNET.gateway(family).to_string();
    let host_route = format!("{}/{length}", internet(family));
    let address = format!("{proxy}/{length}");
    let mut undo = Undo::new(lab);
    undo.ip(
        lab.host(),
        &[flag, "neigh", "del", proxy, "dev", &lab.bridge],
    );
    // `nodad`: the proxy holds the address, so duplicate address detection would refuse it.
    let mut add = vec![flag, "addr", "add", &address, "dev", iface];
    if family == Family::V6 {
        add.push("nodad");
    }
    ns.ip(&add);
    undo.ip(ns, &[flag, "addr", "del", &address, "dev", iface]);
    ns.ip(&[
        flag,
        "route",
        "replace",
        &host_route,
        "via",
        &gateway,
        "src",
        proxy,
    ]);
    undo.ip(ns, &[flag, "route", "del", &host_route]);
    let mut tries = 0;
    let mut connected = false;
    while tries < TRIES && !connected {
        tries += 1;
        forge::send(ns, claim);
        connected = ns.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(800)));
    }
    let entry = neighbour_mac(lab.host(), proxy, &lab.bridge);
    Outcome {
        attack,
        succeeded: connected,
        measured: format!(
            "two-way tcp/443 to {target} from {proxy}: {connected} after {tries} tries; host's \
             entry for {proxy}: {entry:?} (attacker {}, proxy {})",
            lab.attacker.mac, lab.proxy.mac
        ),
    }
}

/// b. Forged-source UDP: datagrams from the proxy's address to udp/53 of the internet,
/// counted where they arrive. The same datagrams from the attacker's own address are the
/// control: the table drops those.
pub(crate) fn forged_source_udp(lab: &Lab) -> Outcome {
    const SENT: u64 = 10;
    let ns = lab.attacker_ns();
    let dst = internet(Family::V4).to_string();
    let send = |src: &str| {
        let before = lab.internet_received();
        forge::send(
            ns,
            &[
                "udp4",
                "--iface",
                &lab.attacker.iface,
                "--eth-dst",
                &lab.gateway_mac,
                "--src",
                src,
                "--dst",
                &dst,
                "--sport",
                "40053",
                "--dport",
                "53",
                "--payload",
                "forge-b",
                "--count",
                &SENT.to_string(),
                "--interval-ms",
                "20",
            ],
        );
        wait_until(Duration::from_secs(2), || {
            lab.internet_received() - before >= SENT
        });
        lab.internet_received() - before
    };
    let own = send(&lab.attacker.v4);
    let forged = send(&lab.proxy.v4);
    Outcome {
        attack: "b. forged-source UDP to udp/53 of the internet",
        succeeded: forged > 0,
        measured: format!(
            "{forged} of {SENT} datagrams from {} arrived ({own} of {SENT} from the attacker's \
             own {})",
            lab.proxy.v4, lab.attacker.v4
        ),
    }
}

/// c. Frames with the proxy's source MAC, broadcast from the attacker's port: counted where
/// they arrive, at the proxy; and where the bridge then puts the proxy's MAC.
pub(crate) fn forged_source_mac(lab: &Lab) -> Outcome {
    const SENT: u64 = 5;
    let listener = Listener::start(
        lab.proxy_ns(),
        &lab.proxy.iface,
        2000,
        &["--eth-src", &lab.proxy.mac, "--contains", "forge-c"],
    );
    let broadcast = format!("{}", EGRESSNET.v4.broadcast());
    forge::send(
        lab.attacker_ns(),
        &[
            "udp4",
            "--iface",
            &lab.attacker.iface,
            "--eth-src",
            &lab.proxy.mac,
            "--eth-dst",
            "ff:ff:ff:ff:ff:ff",
            "--src",
            &lab.proxy.v4,
            "--dst",
            &broadcast,
            "--dport",
            "9",
            "--payload",
            "forge-c",
            "--count",
            &SENT.to_string(),
            "--interval-ms",
            "20",
        ],
    );
    let fdb = text(
        &lab.host()
            .exec_ok("bridge", &["fdb", "show", "br", &lab.bridge])
            .stdout,
    );
    let learned: Vec<&str> = fdb
        .lines()
        .filter(|l| l.starts_with(&lab.proxy.mac))
        .collect();
    let attacker_port = host_port(lab.host(), lab.attacker_ns(), &lab.attacker.iface);
    let arrived = listener.count();
    // The proxy's next frames teach the bridge its port again.
    lab.expect_proxy_out();
    Outcome {
        attack: "c. frames with the proxy's source MAC reach a neighbour",
        succeeded: arrived > 0,
        measured: format!(
            "{arrived} of {SENT} frames from {} arrived at the proxy; the bridge then had {:?} \
             (the attacker's port is {attacker_port})",
            lab.proxy.mac, learned
        ),
    }
}

/// d. IPv6: a neighbour advertisement (override) moves the host's entry for the proxy's
/// address on egressnet to the attacker, which then opens a two-way tcp/443 connection out
/// from that address.
pub(crate) fn ipv6_takeover(lab: &Lab) -> Outcome {
    let (iface, proxy) = (lab.attacker.iface.as_str(), lab.proxy.v6.as_str());
    let claim = [
        "na6",
        "--iface",
        iface,
        "--src",
        proxy,
        "--target",
        proxy,
        "--override",
        "--count",
        "2",
        "--interval-ms",
        "50",
    ];
    let attack = "d. IPv6 takeover (neighbour advertisement), tcp/443 out";
    takeover(lab, Family::V6, attack, &claim)
}

/// d, tagged. A neighbour advertisement (override) for the proxy's address with an 802.1Q
/// priority tag (VID 0), from the attacker's own link-local address: does the host's entry for
/// the proxy move to the attacker's MAC? Its packet's source is the attacker's own, so only a
/// rule that reads the advertisement inside the tag can tell it from an allowed one. (The
/// connection of d would need the attacker's packets from the proxy's address too, which a
/// bridge table that keys on IPv6 sources drops whether tagged or not.)
pub(crate) fn tagged_neighbour_advertisement(lab: &Lab) -> Outcome {
    let ns = lab.attacker_ns();
    let proxy = lab.proxy.v6.as_str();
    let source = link_local_of(ns, &lab.attacker.iface).expect("the attacker has a link-local");
    let entry = || neighbour_mac(lab.host(), proxy, &lab.bridge);
    let mut undo = Undo::new(lab);
    undo.ip(
        lab.host(),
        &["-6", "neigh", "del", proxy, "dev", &lab.bridge],
    );
    let before = entry();
    forge::send(
        ns,
        &[
            "na6",
            "--iface",
            &lab.attacker.iface,
            "--src",
            &source,
            "--target",
            proxy,
            "--override",
            "--vlan",
            PRIORITY_TAG,
            "--count",
            "2",
            "--interval-ms",
            "50",
        ],
    );
    let moved = wait_until(Duration::from_secs(1), || {
        entry().as_deref() == Some(lab.attacker.mac.as_str())
    });
    Outcome {
        attack: "d, tagged. neighbour advertisement for the proxy (VID 0)",
        succeeded: moved,
        measured: format!(
            "the host's entry for {proxy}: {before:?} before, {:?} after an advertisement from \
             {source} tagged VID {PRIORITY_TAG} (attacker {}, proxy {})",
            entry(),
            lab.attacker.mac,
            lab.proxy.mac
        ),
    }
}

/// e. A router advertisement from the attacker's link-local address, with an on-link,
/// autonomous prefix and a default-router lifetime: does the proxy take a route or an
/// address from it? `tagged`: the same advertisement with an 802.1Q priority tag (VID 0).
pub(crate) fn rogue_router_advertisement(lab: &Lab, tagged: bool) -> Outcome {
    let ns = lab.attacker_ns();
    let neighbour = lab.proxy_ns();
    let iface = lab.proxy.iface.as_str();
    let source = link_local_of(ns, &lab.attacker.iface).expect("the attacker has a link-local");
    let accept_ra = sysctl(neighbour, &format!("net.ipv6.conf.{iface}.accept_ra"));
    let forwarding = sysctl(neighbour, &format!("net.ipv6.conf.{iface}.forwarding"));
    let mut undo = Undo::new(lab);
    undo.ip(neighbour, &["-6", "route", "flush", "proto", "ra"]);
    undo.ip(
        neighbour,
        &[
            "-6",
            "route",
            "del",
            &format!("{RA_PREFIX}/64"),
            "dev",
            iface,
        ],
    );
    undo.ip(
        neighbour,
        &[
            "-6", "addr", "flush", "dev", iface, "scope", "global", "dynamic",
        ],
    );
    let listener = Listener::start(
        neighbour,
        iface,
        1000,
        &["--eth-src", &lab.attacker.mac, "--icmp6-type", "134"],
    );
    let prefix = format!("{RA_PREFIX}/64");
    let mut args = vec![
        "ra6",
        "--iface",
        &lab.attacker.iface,
        "--src",
        &source,
        "--prefix",
        &prefix,
        "--router-lifetime",
        "1800",
    ];
    if tagged {
        args.extend(["--vlan", PRIORITY_TAG]);
    }
    forge::send(ns, &args);
    let arrived = listener.count();
    // The route comes with the RA; the address after the neighbour's duplicate address
    // detection, about a second.
    wait_until(Duration::from_secs(3), || {
        ra_taken(neighbour, iface) == (true, true)
    });
    let (route, address) = ra_taken(neighbour, iface);
    Outcome {
        attack: if tagged {
            "e, tagged. router advertisement toward a neighbour (VID 0)"
        } else {
            "e. router advertisement toward a neighbour"
        },
        succeeded: route || address,
        measured: format!(
            "{arrived} router advertisement(s) from the attacker's MAC arrived at the proxy \
             ({iface}: accept_ra={accept_ra}, forwarding={forwarding}); it took a route: \
             {route}, an address in {RA_PREFIX}/64: {address}; routes {:?}",
            ra_routes(neighbour)
        ),
    }
}

/// The prefix of the rogue router advertisements, without its length.
const RA_PREFIX: &str = "fd00:bad:1::";

/// Whether `ns` took a route from a router advertisement, and an address in [`RA_PREFIX`]
/// on `iface`.
fn ra_taken(ns: &Netns, iface: &str) -> (bool, bool) {
    let addresses = text(
        &ns.exec_ok("ip", &["-6", "addr", "show", "dev", iface])
            .stdout,
    );
    (
        ra_routes(ns).iter().any(|l| l.contains("proto ra")),
        addresses.contains(&RA_PREFIX[..RA_PREFIX.len() - 1]),
    )
}

/// The IPv6 routes of `ns` that a router advertisement gave or that lead to [`RA_PREFIX`].
fn ra_routes(ns: &Netns) -> Vec<String> {
    text(&ns.exec_ok("ip", &["-6", "route", "show"]).stdout)
        .lines()
        .filter(|l| l.contains("proto ra") || l.starts_with(&RA_PREFIX[..RA_PREFIX.len() - 1]))
        .map(str::to_string)
        .collect()
}

/// f. An ARP reply to the proxy claiming the gateway's address: does the proxy's entry for
/// its gateway move to the attacker's MAC?
pub(crate) fn gateway_arp_poisoning(lab: &Lab) -> Outcome {
    let neighbour = lab.proxy_ns();
    let iface = lab.proxy.iface.as_str();
    let gateway = EGRESSNET.gateway(Family::V4).to_string();
    let mut undo = Undo::new(lab);
    undo.ip(neighbour, &["neigh", "del", &gateway, "dev", iface]);
    let before = neighbour_mac(neighbour, &gateway, iface);
    // Linux ignores a changed address within a second of the entry's last change (locktime):
    // three replies over one second.
    forge::send(
        lab.attacker_ns(),
        &[
            "arp",
            "--iface",
            &lab.attacker.iface,
            "--op",
            "reply",
            "--eth-dst",
            &lab.proxy.mac,
            "--sender-ip",
            &gateway,
            "--target-ip",
            &lab.proxy.v4,
            "--target-mac",
            &lab.proxy.mac,
            "--count",
            "3",
            "--interval-ms",
            "500",
        ],
    );
    let after = neighbour_mac(neighbour, &gateway, iface);
    Outcome {
        attack: "f. ARP reply claiming the gateway, toward a neighbour",
        succeeded: after.as_deref() == Some(lab.attacker.mac.as_str()),
        measured: format!(
            "the proxy's entry for {gateway}: {before:?} before, {after:?} after (gateway {}, \
             attacker {})",
            lab.gateway_mac, lab.attacker.mac
        ),
    }
}
