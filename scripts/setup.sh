#!/usr/bin/env bash
# Full, idempotent set-up of a Debian 12 (bookworm) machine for mvm: packages, the guest
# kernel, vhost-device-vsock (QEMU backend's vsock), the busybox base image, then the build.
# Run as root. Needs network access only to the Debian archive and crates.io.
# A second run does no apt and no builds and takes a few seconds.
#
# Environment: MVM_CACHE (default /var/cache/mvm) is where the kernel and images are cached.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$SECONDS
step() { echo "setup: $*"; }
die() { trap - EXIT; echo "setup: error: $*" >&2; exit 1; }
trap 'rc=$?; [[ $rc -eq 0 ]] || echo "setup: FAILED (exit $rc) at line $LINENO: $BASH_COMMAND" >&2' EXIT

[[ "$(id -u)" -eq 0 ]] || die "run as root (installs packages, writes ${MVM_CACHE:-/var/cache/mvm})"
command -v dpkg-query >/dev/null && command -v apt-get >/dev/null \
  || die "this is not a Debian system (no dpkg/apt-get); mvm's set-up targets Debian 12"
[[ "$(uname -m)" == x86_64 ]] || die "x86_64 only (this is $(uname -m))"

# ---- 1. Debian packages -------------------------------------------------------------------
packages=(
  # QEMU backend (qemu-system-x86_64 -M microvm; bios-microvm.bin comes with qemu-system-data)
  qemu-system-x86 qemu-system-data
  # guest kernel source and its build
  linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev perl xz-utils
  # base image and disk images
  busybox-static e2fsprogs erofs-utils cpio tar
  # networking, sockets, misc tools used by scripts and tests
  iproute2 nftables socat util-linux procps kmod ca-certificates pkg-config git file strace
  # peers for bench/ (podman with runc, as the shared client notes run it)
  podman runc
  # registry tier of the image tests (Debian's distribution registry, skopeo for OCI layouts)
  docker-registry skopeo
  # engines that run mvm-runc as their OCI runtime (tests/oci: dockerd 20.10 with containerd)
  docker.io containerd iptables
  # to build virtiofsd (volumes: the virtio-fs daemon)
  libseccomp-dev libcap-ng-dev
)
missing=()
for p in "${packages[@]}"; do
  [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)" == "ii"* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  step "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_log="$(mktemp /tmp/mvm-apt.XXXXXX.log)"
  apt-get update >"$apt_log" 2>&1 \
    || { tail -n 20 "$apt_log" >&2; die "apt-get update failed (log: $apt_log)"; }
  apt-get install -y --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 \
    || { tail -n 20 "$apt_log" >&2; die "apt-get install failed (log: $apt_log)"; }
  rm -f "$apt_log"
else
  step "apt: all ${#packages[@]} packages present"
fi
for tool in qemu-system-x86_64 mkfs.ext4 mkfs.erofs busybox socat ip nft gcc make docker-registry skopeo dockerd containerd tc nsenter; do
  command -v "$tool" >/dev/null || die "'$tool' still missing after installing packages"
done
[[ -f /usr/src/linux-source-6.1.tar.xz ]] || die "/usr/src/linux-source-6.1.tar.xz missing (package linux-source-6.1)"

# ---- 2. Rust toolchain (preinstalled with rustup on these machines) ------------------------
if ! command -v cargo >/dev/null && [[ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]]; then
  # shellcheck disable=SC1091
  . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs) first"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# ---- 3. guest kernel ----------------------------------------------------------------------
if kdir="$("$repo/kernel-config/build.sh" --print-path 2>/dev/null)"; then
  "$repo/kernel-config/build.sh" >/dev/null   # refreshes the `current` link; no build
  step "kernel: cached at $kdir"
else
  step "kernel: building (once per machine; about 7 min on 2 cores)"
  kdir="$("$repo/kernel-config/build.sh" | tail -n1)" || die "guest kernel build failed (see above)"
  step "kernel: built at $kdir"
fi
[[ -s "$kdir/vmlinux" ]] || die "kernel build reported $kdir but $kdir/vmlinux is missing"

# ---- 4. vhost-device-vsock (host side of virtio-vsock for the QEMU backend) ----------------
vsock_ver=0.3.0
have="$(vhost-device-vsock --version 2>/dev/null || true)"
if [[ "$have" == *" $vsock_ver"* ]]; then
  step "vhost-device-vsock: $vsock_ver present"
else
  step "vhost-device-vsock: installing $vsock_ver with cargo (about 1 min)"
  cargo_log="$(mktemp /tmp/mvm-cargo-install.XXXXXX.log)"
  cargo install --locked vhost-device-vsock --version "$vsock_ver" >"$cargo_log" 2>&1 \
    || { tail -n 30 "$cargo_log" >&2; die "cargo install vhost-device-vsock $vsock_ver failed (log: $cargo_log)"; }
  rm -f "$cargo_log"
  have="$(vhost-device-vsock --version 2>/dev/null || true)"
  [[ "$have" == *" $vsock_ver"* ]] || die "vhost-device-vsock $vsock_ver not on PATH after install (got '${have:-nothing}')"
fi

# ---- 4b. virtiofsd (the host side of volumes and bind mounts) -------------------------------
vfs_ver=1.14.0
have="$(virtiofsd --version 2>/dev/null || true)"
if [[ "$have" == *"$vfs_ver"* ]]; then
  step "virtiofsd: $vfs_ver present"
else
  step "virtiofsd: installing $vfs_ver with cargo (about 2 min)"
  cargo_log="$(mktemp /tmp/mvm-cargo-install.XXXXXX.log)"
  cargo install --locked virtiofsd --version "$vfs_ver" >"$cargo_log" 2>&1 \
    || { tail -n 30 "$cargo_log" >&2; die "cargo install virtiofsd $vfs_ver failed (log: $cargo_log)"; }
  rm -f "$cargo_log"
  have="$(virtiofsd --version 2>/dev/null || true)"
  [[ "$have" == *"$vfs_ver"* ]] || die "virtiofsd $vfs_ver not on PATH after install (got '${have:-nothing}')"
fi

# ---- 5. busybox base image rootfs ---------------------------------------------------------
bb="$("$repo/scripts/make-busybox-rootfs.sh" | tail -n1)" || die "making the busybox rootfs failed"
step "busybox rootfs: $bb"

# ---- 5a. real Debian images (debootstrap; cached; about 70 s the first time) ---------------
deb_imgs="$("$repo/scripts/make-debian-images.sh" | tail -n2 | paste -sd ' ')" \
  || die "making the Debian bookworm images with debootstrap failed (see above)"
step "Debian images: $deb_imgs"

# ---- 5b. the outer machine's kernel for the KVM-in-TCG test tier -----------------------------
l2="$("$repo/scripts/kvm-in-tcg/fetch-l2-kernel.sh" | tail -n1)" || die "fetching the KVM-in-TCG kernel failed"
step "L2 kernel: $l2"

# ---- 6. build mvm and import the base image -------------------------------------------------
cd "$repo"
step "cargo: building the workspace (release)"
cargo build --release --workspace -q || die "cargo build failed"
step "agent: building the static guest agent"
scripts/build-agent.sh release >/dev/null || die "building the guest agent failed"
# The OCI runtime at the fixed path daemon.json and containers.conf name (README), with the
# guest agent where an installed binary looks for it.
step "mvm-runc: installing /usr/local/bin/mvm-runc"
install -D -m 0755 target/release/mvm-runc /usr/local/bin/mvm-runc || die "installing mvm-runc failed"
install -D -m 0755 target/release/mvm-agent.static /usr/local/lib/mvm/mvm-agent.static \
  || die "installing the guest agent failed"
step "images: importing busybox into ${MVM_ROOT:-/var/lib/mvm}"
"$repo/target/release/mvm" import "$bb" busybox >/dev/null || die "mvm import of busybox failed"

step "done in $((SECONDS - t0)) s"
