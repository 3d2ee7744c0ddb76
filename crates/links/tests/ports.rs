//! PortWatch against the kernel, run as root inside namespaces of its own (`lk-*`): a host
//! namespace with two bridges and their ports, whose veth peers live in two "container"
//! namespaces with known MAC addresses.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use enforcer_core::ports::{BridgePort, MacAddr};
use enforcer_links::{LinkError, PortWatch};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;

/// How long any wait for the kernel may take.
const WAIT: Duration = Duration::from_secs(5);

/// Runs `ip` with `args`; panics when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `ip -n <netns> -batch -` on `commands`; panics when one fails.
fn ip_batch(netns: &str, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ip (iproute2)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(commands.as_bytes())
        .expect("write ip's batch");
    let output = child.wait_with_output().expect("wait for ip");
    assert!(
        output.status.success(),
        "ip -n {netns} -batch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Named network namespaces this test made; deleted on drop, also when the test fails (their
/// links go with them).
struct Namespaces(Vec<String>);

impl Namespaces {
    /// Makes namespaces `names`, deleting first any a failed earlier run left.
    fn new(names: &[&str]) -> Namespaces {
        let mut made = Namespaces(Vec::new());
        for name in names {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", name]);
            made.0.push(name.to_string());
        }
        made
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `test` on a thread that has entered namespace `netns`, with a current-thread tokio
/// runtime; a panic in it is this caller's.
fn in_netns<T: Send + 'static>(netns: &str, test: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{netns}");
    let thread = std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an open namespace file moves only this thread into the namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        test()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A runtime like the agent's, on this thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn mac(text: &str) -> MacAddr {
    text.parse().expect("a MAC address")
}

fn port(bridge: &str, name: &str, peer_mac: Option<&str>) -> BridgePort {
    BridgePort {
        bridge: bridge.to_string(),
        name: name.to_string(),
        peer_mac: peer_mac.map(mac),
    }
}

/// Waits for link changes and reads the ports after each, until `done` holds for them; panics
/// after [`WAIT`].
async fn until(
    watch: &mut PortWatch,
    what: &str,
    done: impl Fn(&[BridgePort]) -> bool,
) -> Vec<BridgePort> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    loop {
        let Ok(changed) = tokio::time::timeout_at(deadline, watch.changed()).await else {
            panic!("{what}: not seen within {WAIT:?}; the last dump: {last:#?}");
        };
        changed.expect("wait for a link change");
        let ports = tokio::time::timeout_at(deadline, watch.ports())
            .await
            .unwrap_or_else(|_| panic!("{what}: no dump within {WAIT:?}"))
            .expect("read the ports");
        if done(&ports) {
            return ports;
        }
        last = Some(ports);
    }
}

/// Reads the ports, within [`WAIT`].
async fn ports_now(watch: &mut PortWatch) -> Vec<BridgePort> {
    tokio::time::timeout(WAIT, watch.ports())
        .await
        .expect("a dump within the wait")
        .expect("read the ports")
}

/// The ports as the setup builds them: on br-lk1, two veths whose peers are in lk-c1 and lk-c2
/// and one with both ends here; on br-lk2, a veth into lk-c2 and a tap.
fn initial_ports() -> Vec<BridgePort> {
    vec![
        port("br-lk1", "lkv1", Some("02:00:00:00:c1:01")),
        port("br-lk1", "lkv2", Some("02:00:00:00:c2:01")),
        port("br-lk1", "lkv3", None),
        port("br-lk2", "lkt0", None),
        port("br-lk2", "lkv4", Some("02:00:00:00:c2:02")),
    ]
}

#[test]
fn ports_and_their_peers_macs_follow_the_links() {
    let _namespaces = Namespaces::new(&["lk-host", "lk-c1", "lk-c2"]);
    ip_batch(
        "lk-host",
        "link add br-lk1 type bridge\n\
         link add br-lk2 type bridge\n\
         link set br-lk1 up\n\
         link set br-lk2 up\n\
         link add lkv1 type veth peer name eth0 address 02:00:00:00:c1:01 netns lk-c1\n\
         link add lkv2 type veth peer name eth0 address 02:00:00:00:c2:01 netns lk-c2\n\
         link add lkv3 type veth peer name lkv3p\n\
         link add lkv4 type veth peer name eth1 address 02:00:00:00:c2:02 netns lk-c2\n\
         tuntap add lkt0 mode tap\n\
         link set lkv1 master br-lk1 up\n\
         link set lkv2 master br-lk1\n\
         link set lkv3 master br-lk1\n\
         link set lkv4 master br-lk2\n\
         link set lkt0 master br-lk2\n",
    );

    in_netns("lk-host", || {
        runtime().block_on(async {
            let mut watch = PortWatch::open().await.expect("open the watch");
            assert_eq!(ports_now(&mut watch).await, initial_ports());
            // Read again, from the cache: the same.
            assert_eq!(ports_now(&mut watch).await, initial_ports());

            // A port whose peer is made in another namespace.
            ip(&[
                "-n",
                "lk-host",
                "link",
                "add",
                "lkv5",
                "type",
                "veth",
                "peer",
                "name",
                "eth2",
                "address",
                "02:00:00:00:c2:05",
                "netns",
                "lk-c2",
            ]);
            ip(&["-n", "lk-host", "link", "set", "lkv5", "master", "br-lk2"]);
            let mut expected = initial_ports();
            expected.push(port("br-lk2", "lkv5", Some("02:00:00:00:c2:05")));
            expected.sort();
            let ports = until(&mut watch, "adding lkv5", |ports| {
                ports.iter().any(|p| p.name == "lkv5")
            })
            .await;
            assert_eq!(ports, expected);

            // As Docker does it: both ends made here, the port enslaved, then the peer moved
            // into the container's namespace.
            ip_batch(
                "lk-host",
                "link add lkv6 type veth peer name lkv6p address 02:00:00:00:c1:06\n\
                 link set lkv6 master br-lk1\n",
            );
            until(&mut watch, "adding lkv6", |ports| {
                ports.contains(&port("br-lk1", "lkv6", None))
            })
            .await;
            ip(&["-n", "lk-host", "link", "set", "lkv6p", "netns", "lk-c1"]);
            expected.push(port("br-lk1", "lkv6", Some("02:00:00:00:c1:06")));
            expected.sort();
            let ports = until(&mut watch, "moving lkv6's peer to lk-c1", |ports| {
                ports.contains(&port("br-lk1", "lkv6", Some("02:00:00:00:c1:06")))
            })
            .await;
            assert_eq!(ports, expected);

            // The peer's MAC address set in its own namespace, then the peer brought up: no
            // notification here for the address, one for the port's carrier.
            ip_batch(
                "lk-c1",
                "link set eth0 address 02:00:00:00:c1:99\nlink set eth0 up\n",
            );
            let ports = until(&mut watch, "setting lkv1's peer's address", |ports| {
                ports.contains(&port("br-lk1", "lkv1", Some("02:00:00:00:c1:99")))
            })
            .await;
            for entry in &mut expected {
                if entry.name == "lkv1" {
                    entry.peer_mac = Some(mac("02:00:00:00:c1:99"));
                }
            }
            assert_eq!(ports, expected);

            // A port removed.
            ip(&["-n", "lk-host", "link", "del", "lkv2"]);
            expected.retain(|p| p.name != "lkv2");
            let ports = until(&mut watch, "deleting lkv2", |ports| {
                !ports.iter().any(|p| p.name == "lkv2")
            })
            .await;
            assert_eq!(ports, expected);
        })
    });

    // Without CAP_NET_ADMIN the dump works, reading a peer in another namespace does not, and
    // the error says what the agent needs.
    in_netns("lk-host", || {
        drop_net_admin();
        runtime().block_on(async {
            let mut watch = PortWatch::open().await.expect("open the watch");
            let error = tokio::time::timeout(WAIT, watch.ports())
                .await
                .expect("a dump within the wait")
                .expect_err("peers read without CAP_NET_ADMIN");
            assert!(matches!(error, LinkError::PeerDenied { .. }), "{error:?}");
            assert!(error.to_string().contains("needs CAP_NET_ADMIN"), "{error}");
        })
    });
}

/// What the kernel answers for a peer that is gone: ENODEV for an ifindex not in the peer's
/// namespace, EINVAL for a namespace id this namespace does not know (the peer's namespace was
/// deleted). The watch reports both as a port without a peer MAC.
#[test]
fn a_vanished_peer_is_enodev_and_a_vanished_namespace_einval() {
    let _namespaces = Namespaces::new(&["lk-gh", "lk-gc"]);
    ip(&[
        "-n", "lk-gh", "link", "add", "lkg0", "type", "veth", "peer", "name", "eth0", "netns",
        "lk-gc",
    ]);
    in_netns("lk-gh", || {
        runtime().block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            tokio::spawn(connection);
            let port = handle
                .link()
                .get()
                .match_name("lkg0")
                .execute()
                .try_next()
                .await
                .expect("read lkg0")
                .expect("lkg0 exists");
            let nsid = port
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::LinkNetNsId(nsid) => Some(*nsid),
                    _ => None,
                })
                .expect("the kernel gave lk-gc an id as seen from lk-gh");
            let errno = |nsid: i32, index: u32| {
                let handle = handle.clone();
                async move {
                    let mut request = handle.link().get().match_index(index);
                    request
                        .message_mut()
                        .attributes
                        .push(LinkAttribute::IfNetnsId(nsid));
                    match request.execute().try_next().await {
                        Err(rtnetlink::Error::NetlinkError(message)) => message.raw_code().abs(),
                        other => panic!("nsid {nsid}, ifindex {index}: {other:?}"),
                    }
                }
            };
            assert_eq!(errno(nsid, 999_999).await, libc::ENODEV);
            assert_eq!(errno(nsid + 1000, 1).await, libc::EINVAL);
        })
    });
}

/// Times `ports()` with 200 veth ports on one bridge: the first call reads every peer, the
/// second finds them all cached. Prints the times (`--nocapture`); asserts only what it read.
#[test]
fn two_hundred_ports_timed() {
    const PORTS: usize = 200;
    let _namespaces = Namespaces::new(&["lk-bh", "lk-bc"]);
    let mut commands = String::from("link add br-lkb type bridge\n");
    for i in 0..PORTS {
        commands.push_str(&format!(
            "link add lkb{i} type veth peer name eth{i} address 02:00:00:00:{:02x}:{:02x} \
             netns lk-bc\nlink set lkb{i} master br-lkb\n",
            i / 256,
            i % 256
        ));
    }
    ip_batch("lk-bh", &commands);
    let mut expected: Vec<BridgePort> = (0..PORTS)
        .map(|i| BridgePort {
            bridge: "br-lkb".to_string(),
            name: format!("lkb{i}"),
            peer_mac: Some(MacAddr([2, 0, 0, 0, (i / 256) as u8, (i % 256) as u8])),
        })
        .collect();
    expected.sort();

    in_netns("lk-bh", move || {
        runtime().block_on(async {
            let mut watch = PortWatch::open().await.expect("open the watch");
            let start = Instant::now();
            let first = ports_now(&mut watch).await;
            let first_took = start.elapsed();
            let start = Instant::now();
            let second = ports_now(&mut watch).await;
            let second_took = start.elapsed();
            println!(
                "ports() with {PORTS} veth ports: first call (every peer read) {first_took:?}, \
                 second (cached) {second_took:?}"
            );
            assert_eq!(first, expected);
            assert_eq!(second, expected);
        })
    });
}

/// Drops CAP_NET_ADMIN from this thread's effective capabilities (capabilities are per thread).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills the two data structs of a version 3 header for this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: capset reads the header and two data structs; it changes only this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// Notifications lost to a full socket buffer (the watch not reading while links churn) make the
/// next dump read every peer again: a peer's MAC address changed meanwhile, which no
/// notification here tells, is seen.
#[test]
fn lost_notifications_make_every_peer_read_again() {
    const FLOOD: usize = 400;
    let _namespaces = Namespaces::new(&["lk-oh", "lk-oc"]);
    ip_batch(
        "lk-oh",
        "link add br-lko type bridge\n\
         link add lko0 type veth peer name eth0 address 02:00:00:00:0c:01 netns lk-oc\n\
         link set lko0 master br-lko\n",
    );
    in_netns("lk-oh", || {
        runtime().block_on(async {
            let mut watch = PortWatch::open().await.expect("open the watch");
            assert_eq!(
                ports_now(&mut watch).await,
                vec![port("br-lko", "lko0", Some("02:00:00:00:0c:01"))]
            );
            // The port is down, so its peer's new address makes no notification in lk-oh.
            ip(&[
                "-n",
                "lk-oc",
                "link",
                "set",
                "eth0",
                "address",
                "02:00:00:00:0c:02",
            ]);
            // This thread runs the watch's connection too: while it waits for ip, nobody reads
            // the socket, and the flood's notifications overrun its buffer.
            let flood: String = (0..FLOOD)
                .map(|i| format!("link add lkof{i} type veth peer name lkofp{i}\n"))
                .collect();
            ip_batch("lk-oh", &flood);
            until(
                &mut watch,
                "the peer's new address after an overrun",
                |ports| ports == [port("br-lko", "lko0", Some("02:00:00:00:0c:02"))],
            )
            .await;
        })
    });
}
