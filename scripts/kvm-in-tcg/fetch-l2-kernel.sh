#!/usr/bin/env bash
# Fetch the outer ("L2") machine's kernel for the KVM-in-TCG test tier
# (see tests/kvm-in-tcg/ and ../shared/reference/kvm-in-tcg.md): Debian's cloud kernel package,
# whatever version apt currently offers for linux-image-cloud-amd64, unpacked into
#   ${MVM_CACHE:-/var/cache/mvm}/l2/<package version>/
#     vmlinuz                       the cloud kernel (bzImage)
#     modules/<name>.ko             the modules below (decompressed if the package ships
#                                   .ko.xz/.ko.zst/.ko.gz)
#     version                       "<package> <version>"
# and points ${MVM_CACHE}/l2/current at it. Done once per machine: a second run does nothing
# (no apt) and just prints the directory. Prints the directory as its last stdout line.
# Needs apt-get (download only, no install: works as any user who can write the cache) and dpkg-deb.
set -euo pipefail

die() { echo "fetch-l2-kernel.sh: error: $*" >&2; exit 1; }

cache="${MVM_CACHE:-/var/cache/mvm}/l2"
# KVM (kvm_amd), a virtio-blk disk for the outer machine, and what `mvm run`'s networks need
# (engine/src/network/host.rs): TAP devices (tun), a Linux bridge (bridge, needing stp and
# llc), and nftables with a `type nat hook postrouting` chain that masquerades plus a filter
# forward chain (nf_tables over nfnetlink; nft_chain_nat and nft_masq over nf_nat, nf_conntrack
# and its defrag modules; libcrc32c for conntrack and nf_tables; its crc32c algorithm is built
# into the cloud kernel, as are IPv6, iifname/oifname (meta) and payload matches).
# The harness (tests/kvm-in-tcg/harness.rs) loads them in dependency order, which the
# package's own modules.dep would give (it is generated at install, so not in the .deb:
# `modinfo -F depends` on the .ko files shows the same).
# Adding a module here makes an older cached fetch incomplete, so the next run refreshes it.
modules=(irqbypass kvm kvm-amd virtio_ring virtio virtio_mmio virtio_blk
         tun llc stp bridge
         libcrc32c nfnetlink nf_tables nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack nf_nat
         nft_chain_nat nft_masq)

# Already fetched? `current` is only (re)pointed after a complete unpack.
complete() {
  local d="$1" m
  [[ -s "$d/vmlinuz" ]] || return 1
  for m in "${modules[@]}"; do [[ -s "$d/modules/$m.ko" ]] || return 1; done
}
if [[ "${1:-}" != "--refresh" && -L "$cache/current" ]] && complete "$cache/current"; then
  readlink -f "$cache/current"
  exit 0
fi

command -v apt-cache >/dev/null && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
  || die "needs apt-cache, apt-get and dpkg-deb (a Debian system)"

# The metapackage linux-image-cloud-amd64 depends on exactly one versioned image package.
meta=linux-image-cloud-amd64
candidate() { apt-cache policy "$meta" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
cand="$(candidate)"
if [[ -z "$cand" || "$cand" == "(none)" ]]; then
  echo "fetch-l2-kernel.sh: $meta unknown to apt; running apt-get update" >&2
  apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
  cand="$(candidate)"
  [[ -n "$cand" && "$cand" != "(none)" ]] || die "apt offers no $meta (is this Debian amd64 with main enabled?)"
fi
pkg="$(apt-cache show "$meta=$cand" | awk -F': ' '/^Depends:/ {print $2; exit}' \
       | tr ',' '\n' | grep -o 'linux-image-[0-9][^ ]*-cloud-amd64' | head -n1)"
[[ -n "$pkg" ]] || die "cannot tell which image package $meta $cand depends on"
ver="$(apt-cache show "$pkg" | awk '/^Version:/ {print $2; exit}')"
[[ -n "$ver" ]] || die "apt knows no version of $pkg"

dir="$cache/$ver"
mkdir -p "$cache" 2>/dev/null && [[ -w "$cache" ]] || die "cannot write $cache (run as root or set MVM_CACHE)"
if ! complete "$dir"; then
  echo "fetch-l2-kernel.sh: downloading $pkg $ver" >&2
  work="$(mktemp -d "$cache/.fetch.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$work/apt.log") \
    || { cat "$work/apt.log" >&2; die "apt-get download $pkg=$ver failed"; }
  deb="$(ls "$work"/*.deb 2>/dev/null | head -n1)"
  [[ -n "$deb" ]] || die "apt-get download produced no .deb"
  dpkg-deb -x "$deb" "$work/x"
  kver="${pkg#linux-image-}"
  vmlinuz="$work/x/boot/vmlinuz-$kver"
  [[ -s "$vmlinuz" ]] || die "$pkg has no boot/vmlinuz-$kver"
  out="$work/out"
  mkdir -p "$out/modules"
  cp "$vmlinuz" "$out/vmlinuz"
  mdir="$work/x/lib/modules/$kver"
  [[ -d "$mdir" ]] || die "$pkg has no lib/modules/$kver"
  for m in "${modules[@]}"; do
    # module file names use either - or _ (kvm-amd.ko, virtio_ring.ko)
    f="$(find "$mdir" -type f \( -name "$m.ko*" -o -name "${m//-/_}.ko*" -o -name "${m//_/-}.ko*" \) | head -n1)"
    [[ -n "$f" ]] || die "module $m not found in $pkg"
    case "$f" in
      *.ko)     cp "$f" "$out/modules/$m.ko" ;;
      *.ko.xz)  xz -dc "$f" >"$out/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" >"$out/modules/$m.ko" ;;
      *.ko.gz)  gzip -dc "$f" >"$out/modules/$m.ko" ;;
      *) die "unexpected module file $f" ;;
    esac
  done
  printf '%s %s\n' "$pkg" "$ver" >"$out/version"
  # Replace an incomplete older unpack of the same version with as short a gap as possible
  # (a test may be reading it).
  if [[ -e "$dir" ]]; then mv -T "$dir" "$work/old"; fi
  mv -T "$out" "$dir"
fi
ln -sfn "$ver" "$cache/current.tmp.$$"
mv -T "$cache/current.tmp.$$" "$cache/current"
echo "$dir"
