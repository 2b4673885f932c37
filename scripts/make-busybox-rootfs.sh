#!/usr/bin/env bash
# Make the root filesystem tarball of the `busybox` base image from Debian's busybox-static:
#   ${MVM_CACHE:-/var/cache/mvm}/images/busybox-rootfs.tar
# Contents: /bin/busybox and a symlink in /bin for every applet, /etc/passwd, /etc/group,
# /root /tmp /home/user /proc /sys /dev /etc /var /run /usr/bin. Owners are numeric (root,
# except /home/user which is 1000:1000), mtimes are 0, entries sorted: the tar is byte-for-byte
# reproducible for a given busybox. It is rebuilt only when its key (busybox-static version +
# this script) changes; the key is kept next to it in busybox-rootfs.tar.key.
# Prints the tarball's path as its last stdout line. Works as root or not.
set -euo pipefail

die() { echo "make-busybox-rootfs.sh: error: $*" >&2; exit 1; }

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
pkg=busybox-static
busybox=/bin/busybox
out_dir="${MVM_CACHE:-/var/cache/mvm}/images"
out="$out_dir/busybox-rootfs.tar"

ver="$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$pkg" 2>/dev/null || true)"
[[ "$ver" == "ii "* ]] || die "$pkg is not installed: run 'apt-get install -y $pkg' (or scripts/setup.sh)"
ver="${ver#ii }"; ver="${ver# }"
[[ -x "$busybox" ]] || die "$busybox not found although $pkg is installed"
case "$(ldd "$busybox" 2>&1 || true)" in
  *"not a dynamic executable"*) ;;
  *) echo "make-busybox-rootfs.sh: warning: $busybox is not statically linked" >&2 ;;
esac

key="$( { printf '%s %s\n' "$pkg" "$ver"; cat "$self"; } | sha256sum | cut -d' ' -f1)"
if [[ -s "$out" && "$(cat "$out.key" 2>/dev/null || true)" == "$key" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out_dir" 2>/dev/null && [[ -w "$out_dir" ]] || die "cannot write $out_dir (run as root or set MVM_CACHE)"
work="$(mktemp -d "${TMPDIR:-/tmp}/mvm-busybox.XXXXXX")"
trap 'rm -rf "$work" "$out.tmp.$$"' EXIT
r="$work/root"

mkdir -p "$r"/{bin,etc,root,tmp,home/user,proc,sys,dev,var,run,usr/bin}
chmod 0755 "$r" "$r"/{bin,etc,home,home/user,proc,sys,dev,var,run,usr,usr/bin}
chmod 0700 "$r/root"
chmod 1777 "$r/tmp"

install -m 0755 "$busybox" "$r/bin/busybox"
n=0
while read -r applet; do
  [[ -n "$applet" && "$applet" != busybox && "$applet" != */* ]] || continue
  ln -s busybox "$r/bin/$applet"
  n=$((n + 1))
done < <("$busybox" --list)
[[ $n -gt 100 ]] || die "'$busybox --list' gave only $n applets"

cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$r/etc/group" <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
chmod 0644 "$r/etc/passwd" "$r/etc/group"

# Everything is owned by root except home/user (1000:1000): two passes, as root or not.
topts=(--format=gnu --numeric-owner --sort=name --mtime=@0)
tmp="$out.tmp.$$"
( cd "$r" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort >"$work/top" )
tar -C "$r" -cf "$tmp" "${topts[@]}" --owner=0 --group=0 --exclude=./home/user --exclude=home/user \
  -T "$work/top"
tar -C "$r" -rf "$tmp" "${topts[@]}" --owner=1000 --group=1000 --no-recursion home/user

# Sanity: the entries we promise are there.
list="$(tar -tvf "$tmp")"
for want in bin/busybox bin/sh etc/passwd etc/group tmp/ home/user/ usr/bin/; do
  grep -q " $want\$\| $want -> " <<<"$list" || die "built tarball lacks $want"
done
grep -q '^drwxr-xr-x 1000/1000 .* home/user/$' <<<"$list" || die "home/user is not owned by 1000:1000"
grep -q '^drwxrwxrwt 0/0 .* tmp/$' <<<"$list" || die "tmp is not 1777"

mv -f "$tmp" "$out"
printf '%s\n' "$key" >"$out.key.tmp.$$" && mv -f "$out.key.tmp.$$" "$out.key"
echo "busybox rootfs: $n applets from $pkg $ver -> $out" >&2
echo "$out"
