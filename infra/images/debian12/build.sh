#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) sliver image: a debootstrap --variant=minbase root filesystem
# with the OpenSSH server and a small shell init (/sbin/init) instead of systemd.
#
#   build.sh OUT.tar | OUT.tar.zst | OUT.tar.gz | OUT.tar.xz      (as root)
#
# The Debian mirror is read from this machine's apt sources (the first bookworm "main" entry of
# /etc/apt/sources.list, then /etc/apt/sources.list.d/*.list and *.sources, in apt's order);
# DEBIAN_MIRROR=URL overrides it. No mirror is named in this repository.
# Idempotent: the tree is built in a temp dir (removed on exit, also on failure) and the archive
# renamed over OUT at the end.
set -euo pipefail

SUITE=bookworm
# openssh-server brings openssh-client (ssh-keygen) and procps; iproute2 for `ip`, netbase for
# /etc/services and /etc/protocols. No init system: /sbin/init is the script written below.
INCLUDE=openssh-server,iproute2,netbase
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "build.sh: $*" >&2; exit 1; }

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT.tar[.zst|.gz|.xz]" >&2
  exit 2
fi
out=$1
case $out in
  *.tar) compress=() ;;
  *.tar.zst | *.tzst) compress=(--zstd) ;;
  *.tar.gz | *.tgz) compress=(--gzip) ;;
  *.tar.xz | *.txz) compress=(--xz) ;;
  *) echo "usage: $0 OUT.tar[.zst|.gz|.xz] (the name says how it is compressed)" >&2; exit 2 ;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap, or bash scripts/setup.sh)"
[[ -r $KEYRING ]] || die "$KEYRING is missing (apt-get install debian-archive-keyring)"
case $out in *.tar) ;; *.zst | *.tzst) command -v zstd >/dev/null || die "zstd is missing (apt-get install zstd)" ;; esac
case $out in *.xz | *.txz) command -v xz >/dev/null || die "xz is missing (apt-get install xz-utils)" ;; esac

# The first enabled "deb" source for $SUITE with component main, one-line or deb822 format.
# Prints the URI only; callers must not log it.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
    [[ -f $f ]] || continue
    case $f in
      *.list)
        awk -v suite="$SUITE" '
          { sub(/#.*/, ""); gsub(/\[[^]]*\]/, " ") }
          $1 == "deb" && $3 == suite {
            for (i = 4; i <= NF; i++) if ($i == "main") { print $2; exit }
          }' "$f" ;;
      *.sources)
        awk -v suite="$SUITE" '
          function has(list, word,   n, a, i) { n = split(list, a, " "); for (i = 1; i <= n; i++) if (a[i] == word) return 1; return 0 }
          function flush(   a) {
            if (!done && has(types, "deb") && has(suites, suite) && has(comps, "main") && enabled !~ /^(no|false|0)$/ && split(uris, a, " ") > 0) { print a[1]; done = 1 }
            types = uris = suites = comps = enabled = key = ""
          }
          /^#/ { next }
          /^[ \t]*$/ { flush(); next }
          /^[ \t]/ { val = $0 }
          /^[^ \t]/ { key = tolower(substr($0, 1, index($0, ":") - 1)); val = substr($0, index($0, ":") + 1) }
          {
            gsub(/[ \t]+/, " ", val)
            if (key == "types") types = types " " val
            else if (key == "uris") uris = uris " " val
            else if (key == "suites") suites = suites " " val
            else if (key == "components") comps = comps " " val
            else if (key == "enabled") { enabled = tolower(val); gsub(/ /, "", enabled) }
          }
          END { flush() }' "$f" ;;
      *) ;;
    esac | { grep -E '^(https?|file)://' || true; } | sed -n 1p
  done | sed -n 1p
}

if [[ -n ${DEBIAN_MIRROR:-} ]]; then
  mirror=$DEBIAN_MIRROR
else
  mirror=$(apt_mirror)
  [[ -n $mirror ]] || die "no 'deb <URL> $SUITE main' entry in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set DEBIAN_MIRROR=URL"
fi

# Mount points under $1 (deepest first), from this process's mount table.
mounts_under() {
  awk -v dir="$1/" 'index($5 "/", dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
work="" partial=""
cleanup() {
  # An interrupted debootstrap leaves /proc, /sys (and in a container a bind of /dev) mounted in
  # the target: unmount them first, and never let rm cross into another file system.
  local m
  if [[ -n $work && -d $work ]]; then
    for m in $(mounts_under "$work"); do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$work"
  fi
  [[ -z $partial ]] || rm -f "$partial"
}
trap cleanup EXIT

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "${TMPDIR:-/tmp}/debian12-image.XXXXXX")
# The archive is written next to OUT, so the final rename is atomic.
partial=$(mktemp "$(dirname "$out")/.$(basename "$out").partial.XXXXXX")
root=$work/rootfs

echo "build.sh: debootstrap $SUITE minbase (+$INCLUDE) into $root" >&2
if ! debootstrap --variant=minbase --merged-usr --components=main --include="$INCLUDE" --keyring="$KEYRING" \
    "$SUITE" "$root" "$mirror" >"$work/debootstrap.out" 2>&1; then
  tail -n 20 "$work/debootstrap.out" >&2
  [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
  die "debootstrap failed (output above)"
fi
[[ -z $(mounts_under "$root") ]] || die "debootstrap left file systems mounted under $root"

# No init system came in; ours is the only /sbin/init (Debian's /sbin is a link to usr/sbin).
[[ -L $root/sbin ]] || die "$root/sbin is not the merged-/usr link this recipe expects"
[[ ! -e $root/usr/sbin/init && ! -e $root/usr/lib/systemd/systemd ]] || die "an init system was installed; this image must have none"

# --- Shrink: no package caches, lists, logs, docs; nothing of the build host ---------------------
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root/debootstrap"
mkdir -p "$root/var/lib/apt/lists/partial"
find "$root/var/log" -type f -delete
rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
# Documentation, man pages and translations, as Debian's own slim container images do; the dpkg
# rule keeps packages installed later in the sliver from bringing them back. Copyright files stay.
cat > "$root/etc/dpkg/dpkg.cfg.d/planetlite-nodoc" <<'NODOC'
# PlanetLite sliver image: no documentation, man pages or translations (copyright files stay).
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
NODOC
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# debootstrap copies the build host's resolver and hosts files; a sliver gets neutral ones.
rm -f "$root/etc/resolv.conf"
: > "$root/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' > "$root/etc/hosts"
printf 'debian12\n' > "$root/etc/hostname"
# LXC mounts its own /dev (lxc.autodev); the image ships an empty one, like the tiny image.
find "$root/dev" -mindepth 1 -delete

# --- sshd: keys only, no PAM, no host keys in the image ----------------------------------------
# Every sliver gets its own host key (the node agent writes /etc/ssh/ssh_host_ed25519_key before
# the first start; init makes one if it did not).
rm -f "$root"/etc/ssh/ssh_host_*
# /run is a tmpfs at boot; what the package scripts left in the image's /run is stale.
find "$root/run" -mindepth 1 -delete
mkdir -p "$root/run/lock" "$root/run/sshd"
chmod 1777 "$root/run/lock"
chmod 0755 "$root/run/sshd"
# Debian's sshd_config includes sshd_config.d/*.conf first, and the first value of a keyword wins.
cat > "$root/etc/ssh/sshd_config.d/planetlite.conf" <<'SSHD'
# PlanetLite sliver: key logins only, this sliver's own ed25519 host key.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
# PAM's session stack (pam_loginuid) fails in an unprivileged container, and keys need no PAM.
UsePAM no
UseDNS no
PidFile /run/sshd.pid
SSHD

# --- init ----------------------------------------------------------------------------------------
# LXC runs /sbin/init (lxc.init.cmd) as PID 1 and has already mounted /proc, /sys, /dev and the
# cgroups (lxc.autodev, lxc.mount.auto) and configured eth0. dash, no service manager.
cat > "$root/usr/sbin/init" <<'INIT'
#!/bin/sh
# PlanetLite sliver init (PID 1; no systemd). Mounts a fresh /run and /dev/shm, makes a host key if
# the node wrote none, keeps `sshd -D -e` running (its log goes to the console, i.e. LXC's console
# log), reaps orphaned processes (dash's wait reaps any child), and halts on SIGPWR (LXC's
# lxc.signal.halt, sent by lxc-stop) or SIGTERM: TERM to every process, KILL after 3 s, exit.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
export PATH
umask 022

halt() {
  trap '' PWR TERM
  echo "init: halting" >&2
  # (dash: `kill -s TERM -1` would read -1 as an option.)
  kill -TERM -1 2>/dev/null
  n=0
  while [ "$n" -lt 30 ]; do
    alone=1
    for p in /proc/[0-9]*; do [ "$p" = /proc/1 ] || { alone=0; break; }; done
    [ "$alone" = 1 ] && break
    sleep 0.1 &
    wait $!
    n=$((n + 1))
  done
  kill -KILL -1 2>/dev/null
  exit 0
}
trap halt PWR TERM

# /run is a tmpfs, as on any Debian system (nothing stale survives a restart); /dev/shm too.
mountpoint -q /run || mount -t tmpfs -o nosuid,nodev,mode=0755,size=16m tmpfs /run 2>/dev/null ||
  rm -rf /run/sshd.pid /run/utmp
mkdir -p /run/lock /run/sshd /dev/shm
chmod 1777 /run/lock
chmod 0755 /run/sshd
: > /run/utmp
mountpoint -q /dev/shm || mount -t tmpfs -o nosuid,nodev,mode=1777 shm /dev/shm 2>/dev/null || chmod 1777 /dev/shm

[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key

while :; do
  /usr/sbin/sshd -D -e &
  # Returns when sshd exits, or early for a trapped signal (whose handler halts).
  wait $!
  echo "init: sshd exited ($?); starting it again in 1 s" >&2
  sleep 1 &
  wait $!
done
INIT
chmod 0755 "$root/usr/sbin/init"

# --- archive -------------------------------------------------------------------------------------
[[ -z $(mounts_under "$root") ]] || die "file systems are mounted under $root; not archiving"
tar --create "${compress[@]}" --file "$partial" --directory "$root" --numeric-owner --sort=name .
chmod 0644 "$partial"
mv -f "$partial" "$out"
echo "build.sh: wrote $out ($(du -h "$out" | cut -f1))" >&2
