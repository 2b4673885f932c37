#!/usr/bin/env bash
# Builds the hostile test agent (agent/examples/hostile-agent.rs) as a static-pie, as
# build-agent.sh builds the real one, and installs it beside the mvm binary of the profile:
# target/<profile>/mvm-hostile-agent.static. tests/bounds runs `mvm` with MVM_AGENT set to it.
# It is a test artifact: never install it where `mvm` looks for its agent.
# Usage: scripts/build-hostile-agent.sh [release|debug]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
flag=()
[ "$profile" = release ] && flag=(--release)
target_dir="${CARGO_TARGET_DIR:-target}"
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q "${flag[@]}" -p mvm-agent \
  --example hostile-agent \
  --config 'profile.release.panic="unwind"' \
  --target x86_64-unknown-linux-gnu --target-dir "$target_dir/agent"
out="$target_dir/agent/x86_64-unknown-linux-gnu/$profile/examples/hostile-agent"
if file -b "$out" | grep -q "dynamically linked"; then
  echo "build-hostile-agent: $out is dynamically linked; expected static-pie" >&2
  exit 1
fi
mkdir -p "$target_dir/$profile"
install -m 0755 "$out" "$target_dir/$profile/mvm-hostile-agent.static"
echo "$target_dir/$profile/mvm-hostile-agent.static"
