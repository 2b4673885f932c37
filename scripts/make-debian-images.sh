#!/usr/bin/env bash
# Make two real Debian 12 (bookworm) base images with debootstrap, for the image tests and the
# image benchmark:
#   ${MVM_CACHE:-/var/cache/mvm}/images/debian-bookworm-rootfs.tar        minbase bookworm
#   ${MVM_CACHE:-/var/cache/mvm}/images/debian-bookworm-nginx-rootfs.tar  the same + nginx-light
# The packages come from the Debian mirror this machine's apt already uses (the first `bookworm`
# source in /etc/apt/sources.list and /etc/apt/sources.list.d/*), so no other network access
# is needed. nginx-light is installed with apt-get inside the debootstrap tree (chroot, no
# recommends, no services started). Both trees are made slim the way Docker's debian images are:
# no apt lists or caches, no docs, man pages, info or locales (the last three are also kept out of
# what apt installs, by a dpkg path-exclude file left in the images), /dev empty, no host
# resolv.conf or hostname (the runtime provides /dev, /proc, /sys and resolv.conf).
# Cached: rebuilt only when a tar is missing or the key (this script, mirror, suite, package)
# kept in debian-bookworm.key changes. Prints the two tar paths as its last two stdout lines.
# Run as root (debootstrap, chroot); installs debootstrap with apt-get when it is missing.
set -euo pipefail

die() { echo "make-debian-images.sh: error: $*" >&2; exit 1; }
say() { echo "make-debian-images.sh: $*" >&2; }

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
suite=bookworm
extra_pkg=nginx-light
out_dir="${MVM_CACHE:-/var/cache/mvm}/images"
base_tar="$out_dir/debian-$suite-rootfs.tar"
nginx_tar="$out_dir/debian-$suite-nginx-rootfs.tar"
key_file="$out_dir/debian-$suite.key"

# The mirror: the URI of the first source that serves $suite/main, in one-line or deb822 form.
mirror_of_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    # Stanzas are separated by blank lines; a stanza with Types: deb and Suites: ... $suite.
    awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
      { types = uris = suites = ""; enabled = 1
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) types = $i; else if ($i ~ /^URIs:/) uris = $i
          else if ($i ~ /^Suites:/) suites = $i; else if ($i ~ /^Enabled: *no/) enabled = 0 }
        if (enabled && types ~ /[ \t]deb([ \t]|$)/ && (" " suites " ") ~ ("[ \t]" s "[ \t]")) {
          sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f"
  done
}
mirror="${MVM_DEBIAN_MIRROR:-$(mirror_of_sources | head -n1)}"
[[ -n "$mirror" ]] || die "no '$suite' source in /etc/apt/sources.list{,.d/*}: set MVM_DEBIAN_MIRROR"
mirror="${mirror%/}"

key="$( { printf 'suite=%s mirror=%s pkg=%s\n' "$suite" "$mirror" "$extra_pkg"; cat "$self"; } \
  | sha256sum | cut -d' ' -f1)"
if [[ -s "$base_tar" && -s "$nginx_tar" && "$(cat "$key_file" 2>/dev/null || true)" == "$key" ]]; then
  echo "$base_tar"
  echo "$nginx_tar"
  exit 0
fi

[[ "$(id -u)" -eq 0 ]] || die "run as root (debootstrap and chroot need it)"
mkdir -p "$out_dir" 2>/dev/null && [[ -w "$out_dir" ]] || die "cannot write $out_dir"
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1; } \
    || die "apt-get install debootstrap failed"
fi

work="$(mktemp -d "${TMPDIR:-/var/tmp}/mvm-debian.XXXXXX")"
r="$work/root"
cleanup() {
  mountpoint -q "$r/proc" 2>/dev/null && umount -l "$r/proc"
  rm -rf --one-file-system "$work"
  rm -f "$base_tar.tmp.$$" "$nginx_tar.tmp.$$"
}
trap cleanup EXIT
t0=$SECONDS

# Keep docs, man pages, info and locales out of everything apt installs later (Debian's slim
# images do the same); the base system's copies are removed below.
nodoc='path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*'

say "debootstrap --variant=minbase $suite from $mirror (about a minute here)"
log="$work/debootstrap.log"
debootstrap --variant=minbase --arch=amd64 "$suite" "$r" "$mirror" >"$log" 2>&1 \
  || { tail -n 20 "$log" >&2; cp "$log" /tmp/mvm-debootstrap.log 2>/dev/null || true
       die "debootstrap failed (log: /tmp/mvm-debootstrap.log)"; }
say "debootstrap: done in $((SECONDS - t0)) s"
printf '%s\n' "$nodoc" >"$r/etc/dpkg/dpkg.cfg.d/01-mvm-nodoc"
# No service starts inside the chroot (nginx's postinst would try).
printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
chmod 0755 "$r/usr/sbin/policy-rc.d"

# Makes the tree an image: no caches, docs or host files; then tars it reproducibly.
slim_and_tar() {
  local out="$1" tmp="$1.tmp.$$"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
    "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/tmp/* "$r"/var/tmp/* "$r"/run/* \
    "$r"/var/lib/dpkg/*-old "$r"/var/cache/ldconfig/aux-cache
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/lintian/*
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  rm -f "$r/etc/resolv.conf" "$r/etc/hostname"
  tar -C "$r" -cf "$tmp" --format=gnu --numeric-owner --sort=name --one-file-system \
    --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* --exclude=./usr/sbin/policy-rc.d .
  mv -f "$tmp" "$out"
}

# Image 1: the minimal system.
slim_and_tar "$base_tar"
say "base image: $(du -h "$base_tar" | cut -f1) in $((SECONDS - t0)) s"

# Image 2: the same plus nginx-light, installed with apt inside the tree.
cp /etc/resolv.conf "$r/etc/resolv.conf"
mount -t proc proc "$r/proc"
export DEBIAN_FRONTEND=noninteractive
clog="$work/chroot-apt.log"
{ chroot "$r" apt-get update \
  && chroot "$r" apt-get install -y --no-install-recommends "$extra_pkg" \
  && chroot "$r" apt-get clean; } >"$clog" 2>&1 \
  || { tail -n 20 "$clog" >&2; cp "$clog" /tmp/mvm-debian-chroot-apt.log 2>/dev/null || true
       die "apt-get install $extra_pkg in the $suite tree failed (log: /tmp/mvm-debian-chroot-apt.log)"; }
umount "$r/proc"
chroot "$r" nginx -v >/dev/null 2>&1 || die "nginx -v fails in the built tree"
slim_and_tar "$nginx_tar"
say "nginx image: $(du -h "$nginx_tar" | cut -f1) in $((SECONDS - t0)) s"

printf '%s\n' "$key" >"$key_file.tmp.$$" && mv -f "$key_file.tmp.$$" "$key_file"
echo "$base_tar"
echo "$nginx_tar"
