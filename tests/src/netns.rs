//! Network namespaces: made by the harness (deleted on drop) or a process's (left alone).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crate::ip;

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// A network namespace: a named one this harness made (deleted on drop), or a process's (a
/// Docker container's, left alone on drop).
pub struct Netns {
    name: String,
    path: String,
    owned: bool,
}

impl Netns {
    /// Creates a namespace whose name starts with `role`, with loopback up.
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "enf{}-{}-{role}",
            std::process::id(),
            NEXT_NETNS.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns {
            path: format!("/var/run/netns/{name}"),
            name,
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: addresses (link-local ones too) are usable at once.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns
    }

    /// The namespace of process `pid` (a container's), called `label` in messages.
    pub fn of_process(pid: u32, label: &str) -> Netns {
        Netns {
            name: label.to_string(),
            path: format!("/proc/{pid}/ns/net"),
            owned: false,
        }
    }

    /// Another handle on this namespace that does not delete it on drop.
    pub fn borrowed(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            path: self.path.clone(),
            owned: false,
        }
    }

    /// The namespace's name (for `ip netns exec`; a label for a process's namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (for `nsenter --net=`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        if self.owned {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        } else {
            self.exec_ok("ip", args);
        }
    }

    /// The command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command;
        if self.owned {
            command = Command::new("ip");
            command.args(["netns", "exec", &self.name, program]);
        } else {
            command = Command::new("nsenter");
            command.arg(format!("--net={}", self.path)).arg(program);
        }
        command
    }

    /// Creates a veth pair: `name` here, `peer_name` inside `peer`.
    pub fn veth(&self, name: &str, peer: &Netns, peer_name: &str) {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            peer.name(),
        ]);
    }

    /// Runs a program inside the namespace and returns its output (whatever its status).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// Runs a program inside the namespace with `input` on its standard input.
    pub fn exec_with_input(&self, program: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait for child")
    }

    /// Runs a program inside the namespace; panics when it fails.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Output {
        let output = self.exec(program, args);
        assert!(
            output.status.success(),
            "{program} {} in {} failed: {}{}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates live there.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Like [`Netns::enter`], without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path.clone();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Kill whatever still runs inside (a daemon a failed test left), then delete.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn enter_netns(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}
