//! Arbitrary bytes as a Docker state (its JSON, else a state shaped from the bytes): it is
//! classified under the embedded policy and under a static topology with Docker on, then
//! planned, rendered and encoded, and the rendered text scanned (see `enforcer_fuzz::check`).
#![no_main]

use std::sync::OnceLock;

use enforcer_core::policy::Policy;
use libfuzzer_sys::fuzz_target;

static POLICIES: OnceLock<[Policy; 2]> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let policies = POLICIES.get_or_init(enforcer_fuzz::docker_policies);
    enforcer_fuzz::run(data, enforcer_fuzz::docker_cases(data, policies));
});
