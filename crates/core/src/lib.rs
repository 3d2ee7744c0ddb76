//! The pure core of enforcer: no root, no kernel, no Docker.
//!
//! [`policy`] reads the operator's TOML policy, [`topology`] models the managed networks and
//! egress proxies, [`docker`] classifies what Docker reports into more of them, [`planner`] turns
//! both into the desired [`ruleset::Ruleset`], and [`render`] writes that value as an `nft`
//! script. The kernel edge (crate `enforcer-nft`) applies the same value over netlink.
//! [`evaluate`] runs a packet through that value as netfilter would.

pub mod binding;
pub mod diff;
pub mod docker;
pub mod evaluate;
pub mod explain;
pub mod flows;
pub mod names;
pub mod nft_syntax;
pub mod planner;
pub mod policy;
pub mod ports;
pub mod render;
pub mod roles;
pub mod ruleset;
pub mod text;
pub mod topology;
