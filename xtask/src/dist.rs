//! `cargo xtask dist`: a `.deb` and a tarball with the release binary, the systemd unit, the
//! man page and shell completions (generated from the clap definitions by the binary itself),
//! the README and the example policies. The `.deb` enables the unit (it starts at the next
//! boot, or with `systemctl start enforcer`). Prints the unit's `systemd-analyze security`
//! exposure score.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use enforcer_harness::workspace_root;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The most the unit may be exposed, per `systemd-analyze security` (lower is better).
const EXPOSURE_TARGET: f64 = 1.5;

fn run(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(output.status.success(), "{command:?} failed");
    Ok(output.stdout)
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child.stdin.take().expect("piped").write_all(data)?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "gzip failed");
    Ok(output.stdout)
}

/// The oldest glibc the binary runs on: its highest `GLIBC_x.y` symbol version.
fn glibc_needed(binary: &Path) -> Result<String> {
    let symbols = String::from_utf8(run(Command::new("objdump").arg("-T").arg(binary))?)?;
    let mut best = (2u32, 17u32);
    for version in symbols.split("GLIBC_").skip(1) {
        let text: String = version
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = text.split('.').filter_map(|p| p.parse::<u32>().ok());
        if let (Some(major), Some(minor)) = (parts.next(), parts.next()) {
            best = best.max((major, minor));
        }
    }
    Ok(format!("{}.{}", best.0, best.1))
}

/// Builds the packages under `target/dist`; returns the `.deb`'s path.
pub fn run_dist() -> Result<PathBuf> {
    let workspace = workspace_root();
    let binary = crate::bench::release_enforcer();
    let target = binary
        .parent()
        .and_then(Path::parent)
        .expect("target/release/enforcer")
        .to_path_buf();
    let dist = target.join("dist");
    let arch = String::from_utf8(run(Command::new("dpkg").arg("--print-architecture"))?)?
        .trim()
        .to_string();
    let stage = dist.join(format!("enforcer_{VERSION}_{arch}"));
    let _ = fs::remove_dir_all(&stage);

    stage_tree(&workspace, &binary, &stage)?;
    let tarball = dist.join(format!("enforcer-{VERSION}-{arch}.tar.gz"));
    write_tarball(&stage, &tarball)?;
    write_debian_files(&stage, &binary, &arch)?;
    let deb = dist.join(format!("enforcer_{VERSION}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb))?;

    let score = exposure(&workspace.join("systemd/enforcer.service"))?;
    println!("{}", deb.display());
    println!("{}", tarball.display());
    println!(
        "systemd-analyze security --offline=yes systemd/enforcer.service: exposure {score:.1} \
         (target <= {EXPOSURE_TARGET}: {})",
        if score <= EXPOSURE_TARGET {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(deb)
}

/// The tree both packages hold, under `stage`: the binary, the unit, the man page, shell
/// completions, the README and docs/, the copyright and the example policies.
fn stage_tree(workspace: &Path, binary: &Path, stage: &Path) -> Result<()> {
    write(&stage.join("usr/bin/enforcer"), &fs::read(binary)?, 0o755)?;
    write(
        &stage.join("lib/systemd/system/enforcer.service"),
        &fs::read(workspace.join("systemd/enforcer.service"))?,
        0o644,
    )?;
    let manpage = run(Command::new(binary).arg("manpage"))?;
    write(
        &stage.join("usr/share/man/man1/enforcer.1.gz"),
        &gzip(&manpage)?,
        0o644,
    )?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/enforcer"),
        ("zsh", "usr/share/zsh/vendor-completions/_enforcer"),
        ("fish", "usr/share/fish/vendor_completions.d/enforcer.fish"),
    ] {
        let script = run(Command::new(binary).args(["completions", shell]))?;
        write(&stage.join(path), &script, 0o644)?;
    }
    let doc = stage.join("usr/share/doc/enforcer");
    write(
        &doc.join("README.md"),
        &fs::read(workspace.join("README.md"))?,
        0o644,
    )?;
    for page in fs::read_dir(workspace.join("docs"))? {
        let page = page?.path();
        let name = page.file_name().expect("a file name");
        write(&doc.join("docs").join(name), &fs::read(&page)?, 0o644)?;
    }
    write(
        &doc.join("copyright"),
        b"enforcer\nLicense: GPL-3.0-or-later\n On Debian systems, the full text is in /usr/share/common-licenses/GPL-3.\n",
        0o644,
    )?;
    for example in ["default.toml", "threegate.toml"] {
        write(
            &doc.join("examples").join(example),
            &fs::read(workspace.join("rules").join(example))?,
            0o644,
        )?;
    }
    Ok(())
}

/// The tarball: the staged tree under `enforcer-VERSION/`.
fn write_tarball(stage: &Path, tarball: &Path) -> Result<()> {
    run(Command::new("tar")
        .arg("-C")
        .arg(stage)
        .args(["--owner=0", "--group=0", "--transform"])
        .arg(format!("s,^\\.,enforcer-{VERSION},"))
        .arg("-czf")
        .arg(tarball)
        .arg("."))?;
    Ok(())
}

/// The `.deb`'s control file and maintainer scripts under `stage/DEBIAN`.
fn write_debian_files(stage: &Path, binary: &Path, arch: &str) -> Result<()> {
    let installed_kib: u64 = walk(stage)?
        .iter()
        .map(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        / 1024;
    let control = format!(
        "Package: enforcer\nVersion: {VERSION}\nArchitecture: {arch}\nMaintainer: enforcer developers <enforcer@localhost>\n\
         Installed-Size: {installed_kib}\nDepends: libc6 (>= {}), libgcc-s1\nRecommends: docker.io | docker-ce, nftables\n\
         Section: net\nPriority: optional\nDescription: default-deny egress firewall for Docker networks running AI agents\n \
         enforcer keeps one nftables table of its own: egress from Docker networks marked\n \
         internal (or labelled enforcer.managed=true) is denied, and only containers labelled\n \
         as egress proxies reach their allowed services (tcp/443 and DNS by default). It\n \
         follows Docker's events, applies each change in one atomic transaction, and starts\n \
         before Docker at boot.\n",
        glibc_needed(binary)?
    );
    write(&stage.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(
        &stage.join("DEBIAN/postinst"),
        b"#!/bin/sh\nset -e\n\
          if [ \"$1\" = configure ] && command -v deb-systemd-helper >/dev/null 2>&1; then\n\
          \tdeb-systemd-helper unmask enforcer.service >/dev/null || true\n\
          \tdeb-systemd-helper enable enforcer.service >/dev/null || true\n\
          \tif [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi\n\
          \techo 'enforcer: unit enabled; it starts at the next boot, before Docker (now: systemctl start enforcer)'\n\
          fi\n",
        0o755,
    )?;
    write(
        &stage.join("DEBIAN/prerm"),
        b"#!/bin/sh\nset -e\n\
          if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n\
          \tdeb-systemd-invoke stop enforcer.service >/dev/null || true\n\
          \techo 'enforcer: stopped; its tables stay in the kernel (remove them: nft delete table inet enforcer; nft delete table bridge enforcer; with a quarantine, nft delete table arp enforcer)'\n\
          fi\n",
        0o755,
    )?;
    write(
        &stage.join("DEBIAN/postrm"),
        b"#!/bin/sh\nset -e\n\
          if [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi\n\
          if [ \"$1\" = purge ]; then\n\
          \tif command -v deb-systemd-helper >/dev/null 2>&1; then deb-systemd-helper purge enforcer.service >/dev/null || true; fi\n\
          \trm -rf /var/lib/enforcer\n\
          fi\n",
        0o755,
    )?;
    Ok(())
}

/// The unit's overall exposure level per `systemd-analyze security --offline=yes`.
fn exposure(unit: &Path) -> Result<f64> {
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .context("running systemd-analyze (package systemd)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| {
            l.split("Overall exposure level for enforcer.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no exposure level in systemd-analyze's output: {text}"))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}
