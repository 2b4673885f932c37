#!/bin/sh
# Builds the mvm test guest and prints the path of the ELF the VMM tests boot:
#   <workspace>/target/guest/mvm-test-guest.elf
# (set CARGO_TARGET_DIR to build elsewhere). Cargo must run from this directory so that
# .cargo/config.toml (target, no-SSE and static-link flags) applies.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target/guest}
cd "$here"
cargo build --release --quiet --target x86_64-unknown-linux-gnu --target-dir "$target_dir" >&2
elf="$target_dir/x86_64-unknown-linux-gnu/release/mvm-test-guest"
# On PVM every SSE instruction kills the guest (see .cargo/config.toml): refuse an ELF
# that has any, e.g. from a toolchain that ignores the target-feature flags.
if command -v objdump >/dev/null 2>&1; then
    if objdump -d "$elf" | grep -qE '%[xy]mm[0-9]'; then
        echo "build.sh: $elf contains SSE instructions" >&2
        exit 1
    fi
fi
out="$target_dir/mvm-test-guest.elf"
cp "$elf" "$out"
echo "$out"
