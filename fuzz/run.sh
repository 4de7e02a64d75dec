#!/usr/bin/env bash
# The fuzz targets' smoke run for CI: builds every target, then runs each for a few seconds
# from its seed corpus (fuzz/corpus/), one after the other, and fails if any of them finds
# a crash, a hang or an out-of-memory (its input is left in fuzz/artifacts/<target>/).
# Installs cargo-fuzz when it is missing. Idempotent. Needs the nightly toolchain.
#
#   FUZZ_SECONDS   seconds of fuzzing per target (default 7: about a minute for all)
#
# The runs start from a fixed seed (-seed=1): a CI run repeats the same mutations, so it
# fails on a change, not on the luck of the draw; the long runs (README.md) explore.
#   FUZZ_SANITIZER address (the default) or none (faster builds and runs; see README.md)
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-7}"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked
fi

# --dev (unoptimised, the profile's debug line tables only): the build costs less than
# half of a release one, and a smoke run replays the seeds and a few mutations (README.md,
# "CI cost"); the long runs use release builds.
build=(--dev --sanitizer "$sanitizer")
nice -n 19 cargo +nightly fuzz build "${build[@]}"

# What the runs grow stays out of the committed seed corpus, and out of the next run.
grown=target/smoke-corpus
rm -rf "$grown"
failed=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$grown/$target"
  echo "fuzz/run.sh: $target for ${seconds}s"
  if ! nice -n 19 cargo +nightly fuzz run "${build[@]}" "$target" "$grown/$target" "corpus/$target" -- \
    -seed=1 -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$grown/$target.log"; then
    tail -n 40 "$grown/$target.log" >&2
    failed+=("$target")
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ +DONE' "$grown/$target.log" || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz/run.sh: every target ran ${seconds}s without a failure"
