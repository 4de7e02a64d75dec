#!/usr/bin/env bash
# Regenerates the seed corpus (fuzz/corpus/<target>/): the RFC 5769 vectors that turn's
# tests hold, then what the seed generator's sans-IO calls put on the wire
# (examples/seeds.rs). Replaces earlier generated seeds (rfc5769-*, gen-*), leaves others.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p turn --test rfc5769 -- --ignored write_fuzz_seeds
cd fuzz
cargo run --release --example seeds
