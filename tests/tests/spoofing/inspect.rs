//! Reading a namespace's links, addresses, neighbours and sysctls (`ip -j`, /proc/sys).

use enforcer_harness::Netns;

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ip -j ARGS` in `ns`, parsed.
pub(crate) fn ip_json(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let output = ns.exec_ok("ip", &all);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("ip {} in {}: {e}", all.join(" "), ns.name()))
}

/// The interface of `ns` that holds `address`.
pub(crate) fn iface_with(ns: &Netns, address: &str) -> String {
    let links = ip_json(ns, &["addr", "show"]);
    links
        .as_array()
        .into_iter()
        .flatten()
        .find(|link| {
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"] == address)
        })
        .and_then(|link| link["ifname"].as_str())
        .unwrap_or_else(|| panic!("no interface of {} holds {address}", ns.name()))
        .to_string()
}

/// The Ethernet address of `iface` in `ns`.
pub(crate) fn mac_of(ns: &Netns, iface: &str) -> String {
    ip_json(ns, &["link", "show", "dev", iface])[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{iface} in {} has no address", ns.name()))
        .to_string()
}

/// The IPv6 link-local address of `iface` in `ns`, if it has one.
pub(crate) fn link_local_of(ns: &Netns, iface: &str) -> Option<String> {
    let link = ip_json(ns, &["-6", "addr", "show", "dev", iface, "scope", "link"]);
    link[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|a| a["local"].as_str().map(str::to_string))
}

/// The link-layer address `ns` holds for `address` on `iface`, if any.
pub(crate) fn neighbour_mac(ns: &Netns, address: &str, iface: &str) -> Option<String> {
    ip_json(ns, &["neigh", "show", address, "dev", iface])[0]["lladdr"]
        .as_str()
        .map(str::to_string)
}

/// Forgets the neighbour entry for `address` on `iface` in `ns` (none is fine).
pub(crate) fn forget_neighbour(ns: &Netns, address: &str, iface: &str) {
    let _ = ns.exec("ip", &["neigh", "del", address, "dev", iface]);
}

/// A sysctl of `ns`, read from /proc/sys (which shows the reader's network namespace).
pub(crate) fn sysctl(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    text(&ns.exec_ok("cat", &[&path]).stdout).trim().to_string()
}

/// The host side of `iface` in a container's namespace: the bridge port.
pub(crate) fn host_port(host: &Netns, container: &Netns, iface: &str) -> String {
    let peer = ip_json(container, &["link", "show", "dev", iface])[0]["link_index"].clone();
    ip_json(host, &["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .find(|link| link["ifindex"] == peer)
        .and_then(|link| link["ifname"].as_str())
        .unwrap_or_else(|| panic!("no host interface is the peer of {iface}"))
        .to_string()
}
