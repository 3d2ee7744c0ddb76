//! The enforcer binary: built from this workspace, run inside a namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::Netns;

/// The root of this workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate sits in the workspace")
        .to_path_buf()
}

/// Runs `cargo build --quiet` (with `--release` when `release`) and `args` in this workspace;
/// returns the profile's output directory (under `CARGO_TARGET_DIR` when set). Panics when the
/// build fails.
pub fn cargo_build(release: bool, args: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .args(args)
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build {} failed", args.join(" "));
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
        .join(if release { "release" } else { "debug" })
}

/// The enforcer binary, built once per test process (debug profile, this workspace).
pub fn enforcer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(false, &["--package", "enforcer", "--bin", "enforcer"]).join("enforcer")
    })
    .clone()
}

/// A file of this repository (for example `rules/threegate.toml`).
pub fn repo_file(path: &str) -> PathBuf {
    workspace_root().join(path)
}

/// Where tests point enforcer when it must not find Docker: never the machine's own dockerd.
pub const NO_DOCKER: &str = "unix:///nonexistent/enforcer-test/docker.sock";

/// Runs `enforcer <args>` inside `ns`, with Docker unreachable ([`NO_DOCKER`]).
pub fn enforcer(ns: &Netns, args: &[&str]) -> Output {
    let bin = enforcer_bin();
    ns.command(bin.to_str().expect("utf-8 path"))
        .args(args)
        .env("DOCKER_HOST", NO_DOCKER)
        .stdin(Stdio::null())
        .output()
        .expect("run enforcer")
}

/// Runs `enforcer apply <args>` inside `ns` (Docker unreachable, as [`enforcer`]); panics with
/// its standard error unless it succeeds; returns that standard error (the change summary).
pub fn apply_ok(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let output = enforcer(ns, &all);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "enforcer {} in {} failed ({}): {stderr}",
        all.join(" "),
        ns.name(),
        output.status
    );
    stderr
}
