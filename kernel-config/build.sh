#!/usr/bin/env bash
# Build the mvm guest kernel (vmlinux + bzImage) from Debian's linux-source-6.1 with
# kernel-config/microvm-6.1.config, once per machine.
#
# Result: ${MVM_CACHE:-/var/cache/mvm}/kernel/<key>/{vmlinux,bzImage,config}
#   key = sha256(config file + linux-source package version + this script)
# and ${MVM_CACHE}/kernel/current -> <key> (a relative symlink, replaced atomically).
#
# Usage:
#   kernel-config/build.sh               build if needed; last stdout line is the cache dir
#   kernel-config/build.sh --print-path  print the cache dir; exit 1 if it is not built
#
# Environment:
#   MVM_CACHE          cache root (default /var/cache/mvm)
#   MVM_KERNEL_SRC     source tarball (default /usr/src/linux-source-6.1.tar.xz)
#   MVM_KERNEL_SRC_PKG Debian package providing it (default linux-source-6.1)
#   MVM_KERNEL_JOBS    make -j value (default $(nproc))
set -euo pipefail

die() { echo "kernel-config/build.sh: error: $*" >&2; exit 1; }
say() { echo "kernel: $*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
config="$here/microvm-6.1.config"
src_tar="${MVM_KERNEL_SRC:-/usr/src/linux-source-6.1.tar.xz}"
src_pkg="${MVM_KERNEL_SRC_PKG:-linux-source-6.1}"
cache_root="${MVM_CACHE:-/var/cache/mvm}/kernel"

mode=build
case "${1:-}" in
  "") ;;
  --print-path) mode=print ;;
  -h|--help) sed -n '2,17p' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (usage: build.sh [--print-path])" ;;
esac

[[ -f "$config" ]] || die "missing $config"

# The source version string: the Debian package version when the tarball comes from the
# package, else the tarball's own checksum.
if src_ver="$(dpkg-query -W -f='${Version}' "$src_pkg" 2>/dev/null)" && [[ -n "$src_ver" ]] \
   && [[ -z "${MVM_KERNEL_SRC:-}" ]]; then
  src_ver="$src_pkg $src_ver"
elif [[ -f "$src_tar" ]]; then
  src_ver="tarball $(sha256sum "$src_tar" | cut -d' ' -f1)"
else
  die "kernel source $src_tar not found: install it with 'apt-get install -y $src_pkg' (or run scripts/setup.sh)"
fi

key="$( { cat "$config"; printf '%s\n' "$src_ver"; cat "$self"; } | sha256sum | cut -d' ' -f1)"
out="$cache_root/$key"

is_built() { [[ -s "$out/vmlinux" && -s "$out/bzImage" && -s "$out/config" ]]; }

update_current() {
  local tmp="$cache_root/.current.$$"
  ln -sfn "$key" "$tmp"
  mv -Tf "$tmp" "$cache_root/current"
}

if [[ "$mode" == print ]]; then
  echo "$out"
  is_built || exit 1
  exit 0
fi

if is_built; then
  [[ "$(readlink "$cache_root/current" 2>/dev/null || true)" == "$key" ]] || update_current
  echo "$out"
  exit 0
fi

[[ -f "$src_tar" ]] || die "kernel source $src_tar not found: install it with 'apt-get install -y $src_pkg' (or run scripts/setup.sh)"
for tool in make gcc ld bc bison flex perl tar xz; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: the kernel build needs build-essential bc bison flex libelf-dev libssl-dev xz-utils (run scripts/setup.sh)"
done

mkdir -p "$cache_root" 2>/dev/null && [[ -w "$cache_root" ]] \
  || die "cannot write $cache_root (run as root or set MVM_CACHE)"

# One build at a time per cache; a second caller waits, then finds the result.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it"
  flock 9
fi
if is_built; then
  update_current
  echo "$out"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mvm-kernel.XXXXXX")"
stage="$cache_root/.tmp.$key.$$"
cleanup() { rm -rf "$work" "$stage"; }
trap cleanup EXIT
log="$cache_root/build-$key.log"
: >"$log"

fail() {
  echo "---- last 50 lines of $log ----" >&2
  tail -n 50 "$log" >&2 || true
  die "$*; full log: $log"
}

start=$SECONDS
say "building guest kernel $key (from $src_ver; log: $log)"
say "unpacking $src_tar"
tar -xf "$src_tar" -C "$work" >>"$log" 2>&1 || fail "unpacking $src_tar failed"
srcdir="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)"
[[ -n "$srcdir" && -f "$srcdir/Makefile" ]] || fail "no kernel tree found in $src_tar"

# Reproducible-ish build metadata (these only end up in the version banner).
export KBUILD_BUILD_USER=mvm KBUILD_BUILD_HOST=mvm KBUILD_BUILD_VERSION=1
export KBUILD_BUILD_TIMESTAMP="1970-01-01"
mk=(make -C "$srcdir" ARCH=x86_64 -j"${MVM_KERNEL_JOBS:-$(nproc)}")

cp "$config" "$srcdir/.config"
"${mk[@]}" olddefconfig >>"$log" 2>&1 || fail "make olddefconfig failed"
# The committed config must be olddefconfig-clean, or its hash would not name what we build.
# Compiler-detected lines (CC_VERSION_TEXT, GCC_VERSION, CC_HAS_..., AS_/LD_VERSION) differ
# with the toolchain and are only warned about.
toolchain_re='^(# )?CONFIG_(CC_|GCC_|CLANG_|AS_|LD_|LLD_|RUSTC_|PAHOLE_|TOOLS_SUPPORT_|HAVE_.*_COMPILER)'
if ! cmp -s "$config" "$srcdir/.config"; then
  if diff <(grep -Ev "$toolchain_re" "$config") <(grep -Ev "$toolchain_re" "$srcdir/.config") >>"$log" 2>&1; then
    say "warning: this compiler differs from the one the config was made with (only toolchain lines differ)"
  else
    fail "kernel-config/microvm-6.1.config is not 'make olddefconfig' clean (diff in log); regenerate it"
  fi
fi

say "compiling (make -j${MVM_KERNEL_JOBS:-$(nproc)} vmlinux bzImage; several minutes)"
"${mk[@]}" vmlinux bzImage >>"$log" 2>&1 || fail "kernel build failed"

mkdir -p "$stage"
cp "$srcdir/vmlinux" "$stage/vmlinux"
cp "$srcdir/arch/x86/boot/bzImage" "$stage/bzImage"
cp "$srcdir/.config" "$stage/config"
printf '%s\n' "$src_ver" >"$stage/source-version"
sync -f "$stage/vmlinux" 2>/dev/null || sync
rm -rf "$out"
mv -T "$stage" "$out"
update_current

mib() { echo "$(( ($(stat -c %s "$1") + 524288) / 1048576 )) MiB"; }
say "built in $((SECONDS - start)) s: vmlinux $(mib "$out/vmlinux"), bzImage $(mib "$out/bzImage")"
echo "$out"
