//! Least privilege for the daemon: CAP_NET_ADMIN and nothing else, and no way to gain more.

use std::collections::HashSet;

use anyhow::{Context, Result};
use caps::{CapSet, Capability};

/// Drops every capability but CAP_NET_ADMIN from the bounding, inheritable, ambient, permitted
/// and effective sets, and sets no_new_privs. A set that already holds exactly what it should is
/// left alone, so that under the systemd unit (which already gives CAP_NET_ADMIN alone) no
/// `capset` call is made and the unit's syscall filter can forbid it. Call it on the main
/// thread before any other thread exists (capability sets are per thread, and new threads
/// inherit them).
pub fn keep_only_net_admin() -> Result<()> {
    let keep = Capability::CAP_NET_ADMIN;
    let only: HashSet<Capability> = [keep].into();
    let read = |set| caps::read(None, set).context("reading this process's capabilities");
    // The bounding set can only shrink while CAP_SETPCAP is held, so it goes first. Without
    // CAP_SETPCAP (a unit running as a non-root user) systemd's CapabilityBoundingSet did it.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .context("reading this process's capabilities")?
    {
        let bounding = caps::read(None, CapSet::Bounding).context("reading the bounding set")?;
        for cap in bounding.into_iter().filter(|c| *c != keep) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    if !read(CapSet::Ambient)?.is_empty() {
        caps::clear(None, CapSet::Ambient).context("clearing the ambient set")?;
    }
    if !read(CapSet::Inheritable)?.is_empty() {
        caps::clear(None, CapSet::Inheritable).context("clearing the inheritable set")?;
    }
    if read(CapSet::Effective)? != only {
        caps::set(None, CapSet::Effective, &only).context("setting the effective set")?;
    }
    if read(CapSet::Permitted)? != only {
        caps::set(None, CapSet::Permitted, &only).context("setting the permitted set")?;
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    anyhow::ensure!(
        rc == 0,
        "setting no_new_privs: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
