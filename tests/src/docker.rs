//! A sealed Docker host: a private dockerd inside its own network namespace (started with
//! `nsenter`, as `../shared/docs/test-hosts.md` measured), whose only way out is a second
//! namespace playing the internet; the enforcer daemon runs inside the same namespace.
//!
//! [`ThreeGate::create`] builds ThreeGate's topology, as [`crate::spec`] writes it, through
//! Docker itself: internal networks `--internal`, labelled ones with `enforcer.managed=true`,
//! the proxy with `enforcer.role=egress-proxy`, every address fixed as the spec gives it, so
//! [`crate::matrix::threegate_matrix`] applies unchanged.
//!
//! Everything is removed on drop: containers, dockerd (and its containerd), its files, the
//! namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use crate::agent::Agent;
use crate::host::{
    connect_internet, internet_endpoints, namespace_in, threegate_responders, Containers,
};
use crate::spec::{
    host_uplink, Container, Family, Management, Network, Role, CONTAINERS, NETWORKS,
};
use crate::{enforcer_bin, poll_until, probe_here, wait_until, Netns, Proto, Responders};

/// Image every test container runs (busybox, imported).
pub const IMAGE: &str = "enforcer-test:latest";
/// Where `tests/docker28.sh` unpacks Debian sid's docker.io (override: `ENFORCER_DOCKER28_DIR`).
const DOCKER28_DIR: &str = "/var/cache/enforcer-tests/docker28";

/// Which Docker Engine a [`Dockerd`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerVersion {
    /// Debian bookworm's docker.io, Engine 20.10 (`dockerd` on the PATH; tests/setup.sh).
    Bookworm,
    /// Debian sid's docker.io, Engine 28.5, unpacked by `tests/docker28.sh` into
    /// /var/cache/enforcer-tests/docker28 (tests/setup.sh runs it). It gives containers on
    /// internal networks no default route, and random MAC addresses.
    Sid,
}

impl DockerVersion {
    /// The version `ENFORCER_TEST_DOCKER` names (`20` or `bookworm`, `28` or `sid`), Bookworm
    /// when it is unset: [`Dockerd::start`] runs it, so that every Docker test can be run
    /// against either Engine.
    pub fn from_env() -> DockerVersion {
        match std::env::var("ENFORCER_TEST_DOCKER").as_deref() {
            Err(_) | Ok("") | Ok("20") | Ok("bookworm") => DockerVersion::Bookworm,
            Ok("28") | Ok("sid") => DockerVersion::Sid,
            Ok(other) => {
                panic!("ENFORCER_TEST_DOCKER={other}: say 20 (or bookworm) or 28 (or sid)")
            }
        }
    }

    /// The dockerd binary of this version.
    pub fn dockerd(self) -> PathBuf {
        match self {
            DockerVersion::Bookworm => PathBuf::from("dockerd"),
            DockerVersion::Sid => {
                let dir = std::env::var("ENFORCER_DOCKER28_DIR")
                    .unwrap_or_else(|_| DOCKER28_DIR.to_string());
                let path = Path::new(&dir).join("usr/sbin/dockerd");
                assert!(
                    path.is_file(),
                    "{} is missing: run tests/setup.sh (its tests/docker28.sh fetches Debian \
                     sid's docker.io into {dir})",
                    path.display()
                );
                path
            }
        }
    }

    /// The start of the version string its daemon reports (`20.10.`, `28.`).
    pub fn version_prefix(self) -> &'static str {
        match self {
            DockerVersion::Bookworm => "20.10.",
            DockerVersion::Sid => "28.",
        }
    }
}
/// Whether Docker writes its own firewall rules, as `ENFORCER_TEST_DOCKER_FIREWALL` says: `on`
/// (or unset) runs dockerd with `--iptables=true`, `off` with `--iptables=false` (and
/// `--ip6tables=false` where the Engine has the flag outside experimental mode, 28.5), where
/// every guarantee comes from enforcer alone. Without Docker's rules nothing turns on
/// br_netfilter's sysctls; the Docker host then sets them itself, as an operator must for
/// east-west rules to see bridged traffic.
pub fn docker_firewall_from_env() -> bool {
    match std::env::var("ENFORCER_TEST_DOCKER_FIREWALL").as_deref() {
        Err(_) | Ok("") | Ok("on") => true,
        Ok("off") => false,
        Ok(other) => panic!("ENFORCER_TEST_DOCKER_FIREWALL={other}: say on or off"),
    }
}

/// How long dockerd may take to answer after start.
const DOCKERD_START: Duration = Duration::from_secs(60);

/// A private dockerd in its own namespace, and the internet namespace behind it.
pub struct Dockerd {
    /// The Docker host's namespace (dockerd, bridges, nftables, the enforcer).
    pub host: Netns,
    /// The internet namespace (203.0.113.10, 2001:db8:113::10).
    pub internet: Netns,
    dir: PathBuf,
    daemon: Option<Child>,
    version: DockerVersion,
    /// Whether dockerd writes its firewall rules ([`docker_firewall_from_env`]).
    firewall: bool,
    internet_responders: Responders,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Dockerd {
    /// Builds the namespaces, starts dockerd (the version [`DockerVersion::from_env`] names),
    /// imports the busybox image.
    pub fn start() -> Dockerd {
        Dockerd::start_with(DockerVersion::from_env())
    }

    /// Like [`Dockerd::start`], with the given Docker Engine; checks that the daemon is that
    /// version.
    pub fn start_with(version: DockerVersion) -> Dockerd {
        Dockerd::start_configured(version, docker_firewall_from_env())
    }

    /// Like [`Dockerd::start_with`], with Docker's own firewall rules on or off.
    pub fn start_configured(version: DockerVersion, firewall: bool) -> Dockerd {
        crate::require_root();
        let host = Netns::new("dhost");
        let internet = Netns::new("dinet");
        connect_internet(&host, &internet);
        // No NAT on internal networks or IPv6, nor anywhere without Docker's firewall: the
        // internet routes the test ranges back (othernet is 172.30.0.0/24).
        let (via_v4, via_v6) = (host_uplink(Family::V4), host_uplink(Family::V6));
        internet.ip(&["route", "add", "10.0.0.0/8", "via", &via_v4.to_string()]);
        internet.ip(&["route", "add", "172.16.0.0/12", "via", &via_v4.to_string()]);
        internet.ip(&["-6", "route", "add", "fd00::/8", "via", &via_v6.to_string()]);

        let internet_responders = Responders::start(&internet, &internet_endpoints());
        if !firewall {
            host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
            host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");
        }

        let dir = std::env::temp_dir().join(format!("enforcer-dockerd-{}", host.name()));
        std::fs::create_dir_all(&dir).expect("create dockerd directory");
        let mut dockerd = Dockerd {
            host,
            internet,
            dir,
            daemon: None,
            version,
            firewall,
            internet_responders,
        };
        dockerd.start_daemon();
        let server = dockerd.server_version();
        assert!(
            server.starts_with(version.version_prefix()),
            "{version:?} should run Docker {}x, the daemon says {server}",
            version.version_prefix()
        );
        dockerd.import_image();
        dockerd
    }

    /// Which Docker Engine this is.
    pub fn version(&self) -> DockerVersion {
        self.version
    }

    /// Whether Docker writes its own firewall rules here.
    pub fn firewall(&self) -> bool {
        self.firewall
    }

    /// The version the daemon reports (`20.10.24+dfsg1`, `28.5.2+dfsg4`).
    pub fn server_version(&self) -> String {
        self.docker(&["version", "--format", "{{.Server.Version}}"])
    }

    /// Datagrams and connections the internet's responders received so far, all services
    /// together.
    pub fn internet_received(&self) -> u64 {
        self.internet_responders.received()
    }

    /// The `DOCKER_HOST` value of this dockerd.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// The socket of this dockerd.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Starts dockerd (again) and waits until it answers.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "dockerd already runs");
        let log = File::create(self.dir.join("dockerd.log")).expect("dockerd log file");
        let dockerd = self.version.dockerd();
        // Its own docker-proxy and docker-init first (sid's sit beside its dockerd).
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(dir) = dockerd.parent().filter(|d| !d.as_os_str().is_empty()) {
            let usr = dir.parent().unwrap_or(dir);
            let mut own = std::env::join_paths([dir, &usr.join("bin")]).expect("PATH entries");
            own.push(":");
            own.push(&path);
            path = own;
        }
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host.path()))
            .arg(&dockerd)
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("-H")
            .arg(self.docker_host())
            .args(["--bridge=none", "--userland-proxy=false"])
            .args(match (self.firewall, self.version) {
                (true, _) => &["--iptables=true"][..],
                (false, DockerVersion::Bookworm) => &["--iptables=false"][..],
                (false, DockerVersion::Sid) => &["--iptables=false", "--ip6tables=false"][..],
            })
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (is docker.io installed? tests/setup.sh installs it)");
        self.daemon = Some(child);
        let up = wait_until(DOCKERD_START, || {
            self.try_docker(&["version", "--format", "{{.Server.APIVersion}}"])
                .status
                .success()
        });
        assert!(
            up,
            "dockerd did not answer within {DOCKERD_START:?}: {}",
            self.log()
        );
    }

    /// Stops dockerd (SIGTERM, at most 20 s, then SIGKILL); containers stop with it.
    pub fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let exited = poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn import_image(&self) {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (busybox-static; tests/setup.sh installs it)");
        for applet in ["sh", "nc", "sleep", "ip", "arping"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let tar = self.dir.join("rootfs.tar");
        crate::run(
            "tar",
            &["-C", path_str(&rootfs), "-cf", path_str(&tar), "."],
        );
        self.docker(&["import", path_str(&tar), IMAGE]);
    }

    /// `docker <args>` against this dockerd, whatever its status.
    pub fn try_docker(&self, args: &[&str]) -> Output {
        self.try_docker_env(&[], args)
    }

    /// `docker <args>` with the variables `env` set (for a stack file's `${VARIABLE}`),
    /// whatever its status.
    pub fn try_docker_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.docker_host())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run the docker client")
    }

    /// Imports `tag`: an image holding the test build of the agent at `/usr/bin/enforcer` and
    /// the shared libraries it links (as `ldd` lists them), nothing else.
    pub fn import_enforcer_image(&self, tag: &str) {
        let rootfs = self.dir.join("enforcer-rootfs");
        let binary = enforcer_bin();
        let mut files = vec![(binary.clone(), PathBuf::from("usr/bin/enforcer"))];
        let ldd = crate::run("ldd", &[path_str(&binary)]);
        for library in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
        {
            files.push((PathBuf::from(library), PathBuf::from(&library[1..])));
        }
        for (from, to) in files {
            let to = rootfs.join(to);
            std::fs::create_dir_all(to.parent().expect("a parent")).expect("rootfs");
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        let tar = self.dir.join("enforcer-rootfs.tar");
        crate::run(
            "tar",
            &["-C", path_str(&rootfs), "-cf", path_str(&tar), "."],
        );
        self.docker(&["import", path_str(&tar), tag]);
    }

    /// `docker <args>`; panics when it fails; returns its trimmed stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        let output = self.try_docker(args);
        assert!(
            output.status.success(),
            "docker {} failed: {}{}",
            args.join(" "),
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout).trim().to_string()
    }

    /// The network namespace of a running container.
    pub fn container_netns(&self, name: &str) -> Netns {
        let pid: u32 = self
            .docker(&["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .expect("container pid");
        Netns::of_process(pid, name)
    }

    /// The bridge interface of a network (`br-` and 12 digits of its ID).
    pub fn bridge(&self, network: &str) -> String {
        let id = self.docker(&["network", "inspect", "-f", "{{.Id}}", network]);
        format!("br-{}", &id[..12])
    }

    /// Starts `enforcer run` (the test build) inside the Docker host with `args`, logging to a
    /// file.
    pub fn start_agent(&self, args: &[&str]) -> Agent {
        self.start_agent_binary(&enforcer_bin(), args)
    }

    /// Like [`Dockerd::start_agent`], with the given enforcer binary.
    pub fn start_agent_binary(&self, binary: &Path, args: &[&str]) -> Agent {
        let docker_host = self.docker_host();
        self.start_agent_with(binary, args, &[("DOCKER_HOST", docker_host.as_str())])
    }

    /// Like [`Dockerd::start_agent`], with the given binary and environment (which may point
    /// `DOCKER_HOST` elsewhere).
    pub fn start_agent_with(&self, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Agent {
        Agent::start(&self.host, &self.dir, binary, args, env)
    }

    /// Elements of a set of the enforcer's table, as `nft -j` lists them (strings).
    pub fn set_elements(&self, set: &str) -> Vec<String> {
        crate::set_elements(&self.host, set)
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let ids = self.try_docker(&["ps", "-aq"]);
            let ids = text(&ids.stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.try_docker(&args);
            }
        }
        self.stop_daemon();
        // Whatever dockerd left mounted under its directory.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.to_string_lossy().to_string();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = Command::new("umount").args(["-l", point]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ThreeGate built through Docker, with responders in place.
pub struct ThreeGate {
    /// Container namespaces by name, and "host".
    pub containers: BTreeMap<&'static str, Netns>,
    host: Netns,
    _responders: Vec<Responders>,
}

/// `docker network create` arguments for `network`: how it is managed, its subnets.
fn network_args(network: &Network) -> Vec<String> {
    let mut args: Vec<String> = match network.management {
        Management::Internal => vec!["--internal".into()],
        Management::Labelled => vec!["--label".into(), "enforcer.managed=true".into()],
        Management::Unmanaged => vec![],
    };
    args.extend([
        "--subnet".into(),
        network.v4.to_string(),
        "--ipv6".into(),
        "--subnet".into(),
        network.v6.to_string(),
    ]);
    args
}

/// Runs `container` on its first network, connects it to the others (every address as the
/// spec gives it) and gives it a default route via its first network's gateway.
fn run_container(docker: &Dockerd, container: &Container) -> Netns {
    let name = container.name;
    let first = container.route();
    let v4 = first.network.host(first.host, Family::V4).to_string();
    let v6 = first.network.host(first.host, Family::V6).to_string();
    let mut args = vec!["run", "-d", "--name", name, "--network", first.network.name];
    args.extend(["--ip", &v4, "--ip6", &v6]);
    if container.role == Role::EgressProxy {
        args.extend(["--label", "enforcer.role=egress-proxy"]);
    }
    args.extend([IMAGE, "sleep", "100000"]);
    docker.docker(&args);
    for attachment in &container.attachments[1..] {
        let v4 = attachment
            .network
            .host(attachment.host, Family::V4)
            .to_string();
        let v6 = attachment
            .network
            .host(attachment.host, Family::V6)
            .to_string();
        let network = attachment.network.name;
        docker.docker(&[
            "network", "connect", "--ip", &v4, "--ip6", &v6, network, name,
        ]);
    }
    let ns = docker.container_netns(name);
    let gateway_v4 = first.network.gateway(Family::V4).to_string();
    let gateway_v6 = first.network.gateway(Family::V6).to_string();
    ns.exec_ok("ip", &["route", "replace", "default", "via", &gateway_v4]);
    ns.exec_ok(
        "ip",
        &["-6", "route", "replace", "default", "via", &gateway_v6],
    );
    ns
}

impl ThreeGate {
    /// Creates the networks and containers through Docker and starts the responders. Every
    /// container also gets a default route via its first network's gateway, as one with
    /// CAP_NET_RAW can send there anyway: routes must not be what blocks egress.
    pub fn create(docker: &Dockerd) -> ThreeGate {
        for network in NETWORKS {
            let mut args: Vec<String> = vec!["network".into(), "create".into()];
            args.extend(network_args(network));
            args.push(network.name.into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker.docker(&args);
        }
        let containers: BTreeMap<&'static str, Netns> = CONTAINERS
            .iter()
            .map(|c| (c.name, run_container(docker, c)))
            .collect();
        let responders = threegate_responders(&docker.host, &containers);
        ThreeGate {
            containers,
            host: docker.host.borrowed(),
            _responders: responders,
        }
    }

    /// Flushes Docker's isolation chains in the Docker host, as a Docker bug or an
    /// `iptables -F` would: from then on only the enforcer stands between the networks and
    /// the internet. IPv6's too where Docker wrote them (28.5 does, by default; 20.10 writes
    /// no ip6tables rules unless told to). Nothing to flush when Docker writes no rules.
    pub fn flush_docker_isolation(docker: &Dockerd) {
        if !docker.firewall {
            return;
        }
        for chain in ["DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"] {
            docker.host.exec_ok("iptables", &["-F", chain]);
            if docker
                .host
                .exec("ip6tables", &["-S", chain])
                .status
                .success()
            {
                docker.host.exec_ok("ip6tables", &["-F", chain]);
            }
        }
    }

    /// Waits (bounded) until `from` reaches `target` over TCP: a path that must be open.
    pub fn wait_open(&self, from: &str, target: SocketAddr, limit: Duration) -> bool {
        let ns = self.namespace(from);
        wait_until(limit, || {
            ns.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(300)))
        })
    }
}

impl Containers for ThreeGate {
    fn namespace(&self, name: &str) -> &Netns {
        namespace_in(&self.host, &self.containers, name)
    }
}
