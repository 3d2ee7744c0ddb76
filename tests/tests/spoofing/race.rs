//! The race: new containers whose first command forges.

use std::time::{Duration, Instant};

use enforcer_harness::docker::{Dockerd, IMAGE};
use enforcer_harness::spec::EGRESSNET;
use enforcer_harness::wait_until;

use crate::forge::Listener;
use crate::inspect::forget_neighbour;
use crate::lab::{Lab, Outcome};

/// Containers the race starts.
const RACERS: usize = 50;

/// The race: containers started on egressnet whose first command is a gratuitous ARP for the
/// proxy's address (busybox `arping -U`), one after the other; the frames claiming the proxy's
/// address from another MAC are counted at a neighbour, the bystander.
pub(crate) fn forged_arp_race(lab: &Lab) -> Outcome {
    let neighbour = lab.attacker_ns();
    let proxy = lab.proxy.v4.as_str();
    // Bounded by count (RACERS) and by time: the listener stops by itself after 3 minutes.
    let listener = Listener::start(
        neighbour,
        &lab.attacker.iface,
        180_000,
        &[
            "--ethertype",
            "0x0806",
            "--arp-sender-ip",
            proxy,
            "--exclude-eth-src",
            &lab.proxy.mac,
        ],
    );
    let names: Vec<String> = (0..RACERS).map(|i| format!("fgrace{i}")).collect();
    struct Remove<'a>(&'a Dockerd, &'a [String]);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let mut args = vec!["rm", "-f"];
            args.extend(self.1.iter().map(String::as_str));
            let _ = self.0.try_docker(&args);
        }
    }
    let remove = Remove(lab.docker(), &names);
    let start = Instant::now();
    for name in &names {
        // ip_nonlocal_bind only lets busybox's arping bind its check socket to an address it
        // does not hold; the frame itself needs only CAP_NET_RAW, which the container has.
        lab.docker().docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            EGRESSNET.name,
            "--sysctl",
            "net.ipv4.ip_nonlocal_bind=1",
            IMAGE,
            "arping",
            "-U",
            "-c",
            "2",
            "-w",
            "1",
            "-I",
            "eth0",
            "-s",
            proxy,
            proxy,
        ]);
    }
    let started = start.elapsed();
    let done = wait_until(Duration::from_secs(30), || {
        lab.docker()
            .docker(&["ps", "-q", "--filter", "name=fgrace"])
            .is_empty()
    });
    assert!(done, "the racers did not exit within 30 s");
    std::thread::sleep(Duration::from_millis(300));
    let seen = listener.stop();
    drop(remove);
    // The host's entry for the proxy may now name a racer: forget it.
    forget_neighbour(lab.host(), proxy, &lab.bridge);
    lab.expect_proxy_out();
    Outcome {
        attack: "race: new containers' first command forges ARP for the proxy",
        succeeded: seen > 0,
        measured: format!(
            "{seen} ARP frames claiming {proxy} from {RACERS} containers (2 each, started in \
             {started:.1?}) reached the bystander"
        ),
    }
}
