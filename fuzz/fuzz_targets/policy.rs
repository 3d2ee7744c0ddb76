//! Arbitrary bytes as a policy file: what parses is planned, rendered and encoded, and the
//! rendered text scanned (see `enforcer_fuzz::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cases = enforcer_fuzz::policy_case(data).into_iter().collect();
    enforcer_fuzz::run(data, cases);
});
