#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every tier of tests (unit tests, VMM tests
# with the project's test guest on this machine's KVM, end-to-end microVMs through the real
# mvm binary, and the KVM-in-TCG harness where it exists). .ci/run calls this.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [[ ! -c /dev/kvm ]]; then
  echo "test: error: /dev/kvm is absent: the VMM tests need KVM" >&2
  exit 1
fi
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --release --workspace --all-targets -q -- -D warnings
echo "test: building the workspace, the static guest agents and the test guest"
# The end-to-end tiers run target/release/mvm and mvm-vmm beside it: build them first.
cargo build --release --workspace -q
scripts/build-agent.sh release >/dev/null
# The hostile test agent tests/bounds boots in place of the real one (it rebuilds it too).
scripts/build-hostile-agent.sh release >/dev/null
tests/guest/build.sh >/dev/null
echo "test: cargo test"
cargo test --release --workspace
