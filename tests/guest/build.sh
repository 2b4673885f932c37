#!/bin/sh
# Builds the mvm test guest and prints the path of the ELF the VMM tests boot.
# Output: target/guest/mvm-test-guest.elf under the workspace root (override the target
# directory with CARGO_TARGET_DIR).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target/guest}
cd "$here"
cargo build --release --quiet --target x86_64-unknown-linux-gnu --target-dir "$target_dir" >&2
out="$target_dir/mvm-test-guest.elf"
cp "$target_dir/x86_64-unknown-linux-gnu/release/mvm-test-guest" "$out"
echo "$out"
