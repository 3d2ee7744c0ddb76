#!/bin/sh
# Fuzzes enforcer for a bounded time, then checks the corpus with nft itself. As root (the
# corpus check loads tables into private network namespaces made with `unshare -n`).
#
#   fuzz/run.sh SECONDS      each target fuzzes for SECONDS (libFuzzer -max_total_time)
#
# Steps, per target (policy, docker):
#   1. every input under regressions/<target>/ runs alone, with the nft checks;
#   2. the target fuzzes from seeds/<target>/ (committed) into corpus/<target>/ (not committed);
#   3. the corpus check: every input of corpus/ and seeds/ that parses is rendered and loaded
#      by nft in a fresh network namespace (see src/nft_check.rs).
# The targets build without a sanitizer (`--sanitizer none`): the code under test is safe Rust,
# and with AddressSanitizer each execution took 7 (docker) to 12 (policy) times longer. Exits non-zero when any step
# found something; each finding is listed at the end with the file
# holding its input.
set -u
seconds=${1:?usage: fuzz/run.sh SECONDS (fuzzing time per target)}
cd "$(dirname "$0")"
started=$(date +%s)
say() { echo "fuzz/run.sh [$(($(date +%s) - started)) s]: $*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi
say "building the targets (nightly)"
cargo +nightly fuzz build --sanitizer none || exit 2
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
report=$(mktemp -d /tmp/enforcer-fuzz.XXXXXX)
failed=0

for target in policy docker; do
    bin=target/$triple/release/$target
    mkdir -p "corpus/$target" "artifacts/$target" "regressions/$target"
    for input in "regressions/$target"/*; do
        [ -f "$input" ] || continue
        before=$(cat "$report/failures.txt" 2>/dev/null | wc -l)
        if ! ENFORCER_FUZZ_NFT_REPORT=$report unshare -n "$bin" "$input" >"$report/run.log" 2>&1; then
            echo "$input: crashed: $(grep -m1 -E 'panicked|ERROR' "$report/run.log")" >>"$report/failures.txt"
        elif [ "$(wc -l 2>/dev/null <"$report/failures.txt" || echo 0)" -gt "$before" ]; then
            echo "    (the input above is fuzz/$input)" >>"$report/failures.txt"
        fi
    done
    say "$target: regressions replayed; fuzzing for $seconds s"
    if ! timeout $((seconds + 120)) cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -dict="$target.dict" -timeout=10 -print_final_stats=1 \
        >"$report/fuzz-$target.log" 2>&1; then
        tail -40 "$report/fuzz-$target.log"
        echo "fuzz/artifacts/$target: the $target target crashed or timed out (log above)" >>"$report/failures.txt"
    fi
    grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$report/fuzz-$target.log" | tr '\n' ' '
    echo
    say "$target: corpus check ($(find "corpus/$target" "seeds/$target" -type f | wc -l) inputs)"
    if ! ENFORCER_FUZZ_NFT_REPORT=$report unshare -n "$bin" -runs=0 "corpus/$target" "seeds/$target" \
        >"$report/check-$target.log" 2>&1; then
        tail -20 "$report/check-$target.log"
        echo "the corpus check of $target crashed (log above)" >>"$report/failures.txt"
    fi
done

if [ -s "$report/failures.txt" ]; then
    say "FAILED; inputs are in $report, crashes in fuzz/artifacts/:"
    cat "$report/failures.txt"
    failed=1
else
    rm -rf "$report"
    say "passed"
fi
exit $failed
