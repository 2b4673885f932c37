#!/usr/bin/env bash
# Make the rootfs tarball of the `bench-tools` image used by `bench/bench.py net` and `fs`:
#   ${MVM_CACHE:-/var/cache/mvm}/images/bench-tools-rootfs.tar
# Contents: the busybox rootfs (scripts/make-busybox-rootfs.sh) plus Debian's /usr/bin/iperf3 and
# /usr/bin/fio with every shared library `ldd` lists for them, the dynamic loader included, each
# stored at the path ldd prints (e.g. /lib/x86_64-linux-gnu/libc.so.6, /lib64/ld-linux-x86-64.so.2;
# the host's merged-/usr symlinks are resolved, so the image has real /lib and /lib64 directories).
# Installs iperf3 and fio on the host (apt-get, no recommends) when they are missing: the bench
# also runs them on the host as the baseline. Rebuilt only when missing or when the key (package
# versions of iperf3, libiperf0, fio, the busybox rootfs's key, this script) changes; the key is
# kept next to it in bench-tools-rootfs.tar.key. Prints the tarball's path as its last stdout line.
set -euo pipefail

die() { echo "make-tools-image.sh: error: $*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
out_dir="${MVM_CACHE:-/var/cache/mvm}/images"
out="$out_dir/bench-tools-rootfs.tar"

pkgver() { dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$1" 2>/dev/null || true; }

missing=()
for p in iperf3 fio; do
  [[ "$(pkgver "$p")" == "ii "* ]] || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ $(id -u) -eq 0 ]] || die "${missing[*]} not installed and not root: run 'apt-get install -y --no-install-recommends ${missing[*]}'"
  echo "make-tools-image.sh: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
fi
for b in /usr/bin/iperf3 /usr/bin/fio; do [[ -x "$b" ]] || die "$b not found after install"; done

busybox_tar="$("$here/../scripts/make-busybox-rootfs.sh" | tail -n1)"
[[ -s "$busybox_tar" ]] || die "no busybox rootfs at '$busybox_tar'"

key="$( {
  for p in iperf3 libiperf0 fio; do printf '%s %s\n' "$p" "$(pkgver "$p")"; done
  cat "$busybox_tar.key" 2>/dev/null || sha256sum "$busybox_tar"
  cat "$self"
} | sha256sum | cut -d' ' -f1)"
if [[ -s "$out" && "$(cat "$out.key" 2>/dev/null || true)" == "$key" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out_dir" 2>/dev/null && [[ -w "$out_dir" ]] || die "cannot write $out_dir (run as root or set MVM_CACHE)"
work="$(mktemp -d "${TMPDIR:-/tmp}/mvm-tools.XXXXXX")"
trap 'rm -rf "$work" "$out.tmp.$$"' EXIT
r="$work/root"
mkdir -p "$r/usr/bin"

# Every path ldd names (absolute, after "=>" or alone for the loader); vdso has none.
libs="$(ldd /usr/bin/iperf3 /usr/bin/fio | awk '
  /=>/ { if ($3 ~ /^\//) print $3; next }
  $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | LC_ALL=C sort -u)"
[[ -n "$libs" ]] || die "ldd found no libraries for iperf3/fio"
if ldd /usr/bin/iperf3 /usr/bin/fio | grep -q 'not found'; then
  die "ldd reports a missing library: $(ldd /usr/bin/iperf3 /usr/bin/fio | grep 'not found' | head -n1)"
fi
grep -q '^/lib64/ld-linux-x86-64.so.2$' <<<"$libs" || echo "make-tools-image.sh: warning: loader is not /lib64/ld-linux-x86-64.so.2" >&2

for f in /usr/bin/iperf3 /usr/bin/fio $libs; do
  mkdir -p "$r$(dirname "$f")"
  cp -L --preserve=mode "$f" "$r$f"     # -L: the file itself, wherever the /lib symlink leads
done
# Directories above the copied files, in the busybox tarball's style.
find "$r" -type d -exec chmod 0755 {} +

# The busybox tarball unchanged, then the new files appended (usr/bin/ is already in it).
topts=(--format=gnu --numeric-owner --sort=name --mtime=@0 --owner=0 --group=0)
tmp="$out.tmp.$$"
cp "$busybox_tar" "$tmp"
( cd "$r" && find . -mindepth 1 \( -type f -o \( -type d ! -path ./usr ! -path ./usr/bin \) \) -printf '%P\n' \
    | LC_ALL=C sort >"$work/list" )
tar -C "$r" -rf "$tmp" "${topts[@]}" --no-recursion -T "$work/list"

list="$(tar -tf "$tmp")"
for want in bin/busybox usr/bin/iperf3 usr/bin/fio lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6; do
  grep -qx "$want" <<<"$list" || die "built tarball lacks $want"
done

mv -f "$tmp" "$out"
printf '%s\n' "$key" >"$out.key.tmp.$$" && mv -f "$out.key.tmp.$$" "$out.key"
echo "bench-tools rootfs: busybox + iperf3 $(pkgver iperf3 | awk '{print $2}') + fio $(pkgver fio | awk '{print $2}'), $(wc -l <<<"$libs") libraries, $(du -h "$out" | cut -f1) -> $out" >&2
echo "$out"
