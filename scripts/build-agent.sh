#!/usr/bin/env bash
# Builds the guest agent as a static-pie (glibc, crt-static) and installs it where `mvm` looks
# for it: target/<profile>/mvm-agent.static, beside the mvm binary of the same profile.
# Usage: scripts/build-agent.sh [release|debug]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
flag=()
[ "$profile" = release ] && flag=(--release)
target_dir="${CARGO_TARGET_DIR:-target}"
# The host side builds with panic=abort (Cargo.toml); the agent keeps unwinding: as PID 1 it
# catches a panic and powers the VM off cleanly, and a panic in one exec's thread ends only it.
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q "${flag[@]}" -p mvm-agent \
  --config 'profile.release.panic="unwind"' \
  --target x86_64-unknown-linux-gnu --target-dir "$target_dir/agent"
out="$target_dir/agent/x86_64-unknown-linux-gnu/$profile/mvm-agent"
if file -b "$out" | grep -q "dynamically linked"; then
  echo "build-agent: $out is dynamically linked; expected static-pie" >&2
  exit 1
fi
mkdir -p "$target_dir/$profile"
install -m 0755 "$out" "$target_dir/$profile/mvm-agent.static"
echo "$target_dir/$profile/mvm-agent.static"
