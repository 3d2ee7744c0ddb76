//! No window without rules: while core streams UDP at the internet, 200 consecutive applies
//! alternating between two policies that both deny it let zero packets through.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enforcer_harness::host::DockerLikeHost;
use enforcer_harness::spec::{internet, Family};
use enforcer_harness::{apply_ok, object_handles, repo_file, Proto, Responders, TempFile};

const APPLIES: usize = 200;
const STREAM_PORT: u16 = 9999;
/// Bounds on the stream: one datagram every 100 µs, at most this many, at most this long.
const MAX_DATAGRAMS: u64 = 2_000_000;
const MAX_STREAM: Duration = Duration::from_secs(120);

#[test]
fn two_hundred_applies_let_no_packet_through() {
    let host = DockerLikeHost::threegate();
    let target = SocketAddr::new(internet(Family::V4), STREAM_PORT);
    let receiver = Responders::start(&host.internet, &[(Proto::Udp, target)]);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        host.containers["core"].spawn(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind sender");
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && sent.load(Ordering::Relaxed) < MAX_DATAGRAMS
                && start.elapsed() < MAX_STREAM
            {
                if socket.send_to(b"leak", target).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };

    // The stream gets through while no table is loaded: the receiver can see a leak.
    let leaked = enforcer_harness::wait_until(Duration::from_secs(5), || receiver.received() > 10);
    assert!(
        leaked,
        "the stream never reached the internet without rules"
    );

    let first = repo_file("rules/threegate.toml");
    let first = first.to_str().unwrap();
    // The second policy denies core as well, and differs (an extra managed network, and the
    // proxy limited to tcp/443), so each apply is a real transaction.
    let second = TempFile::new(
        ".toml",
        &format!(
            "{}\n[[networks]]\nname = \"scratchnet\"\nsubnets = [\"10.103.0.0/24\"]\n",
            std::fs::read_to_string(first).unwrap().replace(
                "name = \"proxy\"\n",
                "name = \"proxy\"\nallow = [\"tcp/443\"]\n"
            )
        ),
    );
    apply_ok(&host.host, &["--config", first]);
    // Let datagrams already past the hook arrive, then count from here.
    std::thread::sleep(Duration::from_millis(300));
    let baseline = receiver.received();
    let sent_before = sent.load(Ordering::Relaxed);

    let mut handles = Vec::with_capacity(APPLIES);
    for i in 0..APPLIES {
        let config = if i % 2 == 0 { second.path() } else { first };
        let stderr = apply_ok(&host.host, &["--config", config]);
        assert!(
            stderr.contains("applied tables enforcer in one transaction"),
            "apply {i}: {stderr}"
        );
        handles.push(object_handles(&host.host, "enforcer").expect("table present"));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender thread");

    let during = sent.load(Ordering::Relaxed) - sent_before;
    let through = receiver.received() - baseline;
    println!("{APPLIES} transactions, {during} datagrams sent meanwhile, {through} received");
    handles.dedup();
    assert_eq!(handles.len(), APPLIES, "every apply replaced the table");
    assert!(
        during > 1_000,
        "the stream was too thin to mean anything: {during} datagrams"
    );
    assert_eq!(
        through, 0,
        "{through} datagrams got through during the applies"
    );
}
