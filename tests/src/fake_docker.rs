//! A fake Docker Engine API on a unix socket of the test's own, for the hostile answers a real
//! dockerd never gives: a body that trickles, an endless event line, a forbidden event stream,
//! a flood of events, an object ID that is a path, thousands of networks.
//!
//! It speaks just enough HTTP/1.1 for enforcer's client: one request per connection, answered
//! with `Connection: close`. Every loop it runs is bounded in count and in time, and it stops
//! (and removes its socket) when dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::TempDir;

/// The ID of the one proxy container the fake reports in [`Hostile::EventFlood`].
pub const PROXY_ID: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

/// How the fake misbehaves.
#[derive(Debug, Clone)]
pub enum Hostile {
    /// `GET /networks` answers with a body of one byte every 2 s.
    SlowBody,
    /// `/events` sends the start of an event and then never ends the line.
    EndlessEventLine,
    /// `/events` answers 403, as a socket proxy that forbids it.
    EventsForbidden,
    /// `/events` sends this many start/die events of one proxy container, as fast as it can.
    EventFlood(usize),
    /// `/events` names an object whose ID is a request path.
    PathAsId,
    /// `/networks` lists this many internal networks, and `/events` stays quiet.
    Networks(usize),
    /// Not hostile: `/networks` and `/containers/json` answer these JSON arrays as they are,
    /// and `/events` stays quiet (a fixed Docker state, for tests that need one without a
    /// dockerd).
    Fixed {
        /// The body of `GET /networks`.
        networks: String,
        /// The body of `GET /containers/json`.
        containers: String,
    },
}

/// A running fake Docker; stopped on drop.
pub struct FakeDocker {
    dir: TempDir,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    server: Option<JoinHandle<()>>,
}

impl FakeDocker {
    /// Starts the fake, behaving as `hostile` says.
    pub fn start(hostile: Hostile) -> FakeDocker {
        let dir = TempDir::new("fake-docker");
        let listener = UnixListener::bind(dir.path().join("docker.sock")).expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, log) = (stop.clone(), requests.clone());
        let server = std::thread::spawn(move || serve(listener, hostile, stop_flag, log));
        FakeDocker {
            dir,
            stop,
            requests,
            server: Some(server),
        }
    }

    /// `DOCKER_HOST` for it.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// The directory the fake owns (for the agent's log and state file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The request lines received so far (`GET /v1.41/networks HTTP/1.1`, ...).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests so far had a path containing `part`.
    pub fn count(&self, part: &str) -> usize {
        self.requests().iter().filter(|r| r.contains(part)).count()
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// No answer of the fake lasts longer than this.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

fn serve(
    listener: UnixListener,
    hostile: Hostile,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut answers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (hostile, stop, requests) = (hostile.clone(), stop.clone(), requests.clone());
                answers.push(std::thread::spawn(move || {
                    let _ = answer(stream, &hostile, &stop, &requests);
                }));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for answer in answers {
        let _ = answer.join();
    }
}

fn answer(
    stream: UnixStream,
    hostile: &Hostile,
    stop: &AtomicBool,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // A client that stops reading must not hold the fake (and the test's drop) forever.
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let request = request.trim_end().to_string();
    requests.lock().unwrap().push(request.clone());
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    let mut out = stream;
    let route = path.split('?').next().unwrap_or("");
    let route = route
        .strip_prefix("/v1.41")
        .or_else(|| route.strip_prefix("/v1.51"))
        .unwrap_or(route);
    match route {
        "/_ping" => respond(&mut out, 200, "OK"),
        "/version" => respond(
            &mut out,
            200,
            r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.99-fake"}"#,
        ),
        "/networks" => networks(&mut out, hostile, stop),
        "/containers/json" => match hostile {
            Hostile::EventFlood(_) => respond(&mut out, 200, &format!("[{}]", proxy_summary())),
            Hostile::Fixed { containers, .. } => respond(&mut out, 200, containers),
            _ => respond(&mut out, 200, "[]"),
        },
        "/events" => events(&mut out, hostile, stop),
        _ if route.starts_with("/containers/") => respond(&mut out, 200, &proxy_inspect()),
        _ => respond(&mut out, 404, r#"{"message":"no such object"}"#),
    }
}

fn respond(out: &mut UnixStream, status: u16, body: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The head of a streamed answer: no length, the body ends when the connection does.
fn stream_head(out: &mut UnixStream) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    )
}

fn networks(out: &mut UnixStream, hostile: &Hostile, stop: &AtomicBool) -> std::io::Result<()> {
    match hostile {
        Hostile::SlowBody => {
            stream_head(out)?;
            let started = Instant::now();
            for byte in b"[]".iter().cycle() {
                if stop.load(Ordering::SeqCst) || started.elapsed() > ANSWER_LIMIT {
                    break;
                }
                out.write_all(&[*byte])?;
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(())
        }
        Hostile::Networks(count) => {
            let list: Vec<String> = (0..*count).map(network).collect();
            respond(out, 200, &format!("[{}]", list.join(",")))
        }
        Hostile::Fixed { networks, .. } => respond(out, 200, networks),
        _ => respond(out, 200, "[]"),
    }
}

/// Internal network `i` on 10.(i / 256).(i % 256).0/24, from 10.64.0.0 on.
fn network(i: usize) -> String {
    format!(
        r#"{{"Id":"{i:012x}{}","Name":"net{i}","Driver":"bridge","Internal":true,"Labels":{{}},"Options":{{}},"IPAM":{{"Config":[{{"Subnet":"10.{}.{}.0/24"}}]}}}}"#,
        // Distinct first 12 digits: Docker names the bridge after them.
        "f".repeat(52),
        64 + i / 256,
        i % 256
    )
}

fn events(out: &mut UnixStream, hostile: &Hostile, stop: &AtomicBool) -> std::io::Result<()> {
    if let Hostile::EventsForbidden = hostile {
        return respond(out, 403, r#"{"message":"forbidden by the socket proxy"}"#);
    }
    stream_head(out)?;
    let started = Instant::now();
    let live = || !stop.load(Ordering::SeqCst) && started.elapsed() < ANSWER_LIMIT;
    match hostile {
        Hostile::EndlessEventLine => {
            out.write_all(br#"{"Type":"network","Action":"create","Actor":{"ID":""#)?;
            let chunk = [b'a'; 64 * 1024];
            // At most 1 GiB: the client is expected to give up after a few hundred KiB.
            for _ in 0..16 * 1024 {
                if !live() {
                    break;
                }
                out.write_all(&chunk)?;
            }
        }
        Hostile::EventFlood(count) => {
            for i in 0..*count {
                if !live() {
                    break;
                }
                let action = if i % 2 == 0 { "die" } else { "start" };
                writeln!(
                    out,
                    r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{PROXY_ID}","Attributes":{{"name":"proxy","enforcer.role":"egress-proxy"}}}}}}"#
                )?;
            }
        }
        Hostile::PathAsId => {
            writeln!(
                out,
                r#"{{"Type":"network","Action":"create","Actor":{{"ID":"../../containers/json","Attributes":{{"name":"x"}}}}}}"#
            )?;
        }
        _ => {}
    }
    // Then stay quiet, as an idle Docker does, until stopped.
    while live() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn proxy_summary() -> String {
    format!(
        r#"{{"Id":"{PROXY_ID}","Names":["/proxy"],"Labels":{{"enforcer.role":"egress-proxy"}},"NetworkSettings":{{"Networks":{{}}}}}}"#
    )
}

fn proxy_inspect() -> String {
    format!(
        r#"{{"Id":"{PROXY_ID}","Name":"/proxy","State":{{"Running":true}},"Config":{{"Labels":{{"enforcer.role":"egress-proxy"}}}},"NetworkSettings":{{"Networks":{{}}}}}}"#
    )
}
