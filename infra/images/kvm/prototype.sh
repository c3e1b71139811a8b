#!/usr/bin/env bash
# Prototype of the KVM/qemu sliver boot path (issue 5): boots a directory root filesystem (a
# sliver's btrfs snapshot, or an extracted tiny/debian12 image) as a qemu VM whose root file
# system is that directory over virtio-9p, with a tap device in a network namespace, waits for
# the guest's ssh banner, prints the timings and cleans everything up. See NOTES.md.
#
#   prototype.sh [options] ROOTDIR          (as root)
#   prototype.sh --assets                   only fetch the kernel and build the initramfs
#
# Options (environment):
#   ACCEL=auto|tcg|kvm   auto (default): no usable /dev/kvm -> TCG; else a probe boot of this
#                        kernel under KVM with a 10 s deadline, TCG if it fails or hangs
#   MEM=256 CPUS=1       guest memory (MiB) and vCPUs
#   ROOTFS=9p            root transport: 9p (virtio-9p inside qemu, the default) or virtiofs
#                        (/usr/lib/qemu/virtiofsd from qemu-system-common, a second process)
#   SECURITY=passthrough 9p security model; mapped-xattr cannot serve a host-unpacked image
#   IMAGE_KERNEL=0       0: the node's kernel (Debian's linux-image-amd64) + this initramfs
#                        1: the image's /vmlinuz and /initrd.img (e.g. initramfs-tools, NOTES.md)
#                        modules: the image's /vmlinuz + this initramfs built from its modules
#   KERNEL_FORMAT=pvh    pvh: boot the ELF vmlinux extracted from the bzImage (saves ~3 s of xz
#                        decompression under TCG); bzimage: boot vmlinuz as it is
#   KERNEL_DEB=FILE      a linux-image-*.deb instead of `apt-get download` of linux-image-amd64
#   CACHE=/var/cache/planetlite-kvm   kernel package, extracted kernel and initramfs
#   TCG_OPTS=tb-size=32  extra -accel tcg properties (empty: qemu's 1 GiB translation cache)
#   BALLOON=1            virtio-balloon with free-page-reporting (empty: none)
#   MEMFD=1              guest RAM in a memfd (0: qemu's anonymous RAM, THP-backed)
#   KEEP=0               seconds to stay up after the banner (RSS is sampled after that)
#   SSH_TEST=1           log in as root and as the slice user with a throwaway key
#   BANNER_TIMEOUT=120   seconds to wait for the ssh banner
#   EXTRA_APPEND, EXTRA_QEMU, SANDBOX   experiments: kernel parameters, qemu options, -sandbox value
#
# It writes into ROOTDIR what the agent's provisioning writes into a sliver's snapshot
# (/etc/slicename, /etc/hostname, the slice user, a host key, and with SSH_TEST=1 a throwaway
# authorized key): use a snapshot or a copy. The host network is not touched: everything is in
# two namespaces it creates (plkvmtest-PID, plkvmtest-PID-c) and removes on exit.
set -euo pipefail

die() { echo "prototype.sh: $*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date -u +%T.%3N)" "$*" >&2; }
now_ms() { date +%s%3N; }

[[ $# -eq 1 ]] || { sed -n '2,35p' "$0" >&2; exit 2; }
assets_only=0
if [[ $1 == --assets ]]; then
  assets_only=1
else
  root=$(realpath "$1")
  [[ -d $root ]] && [[ -e $root/sbin/init || -L $root/sbin/init ]] || die "$root has no /sbin/init"
fi
[[ $(id -u) -eq 0 ]] || die "must run as root (tap, netns, 9p passthrough)"
for t in qemu-system-x86_64 ip busybox dpkg-deb apt-get; do
  command -v "$t" >/dev/null || die "$t is missing (apt-get install qemu-system-x86 busybox-static iproute2)"
done
ldd "$(command -v busybox)" >/dev/null 2>&1 && die "busybox is dynamically linked; install busybox-static"

BALLOON=${BALLOON-1} ROOTFS=${ROOTFS:-9p} ACCEL=${ACCEL:-auto} MEM=${MEM:-256} CPUS=${CPUS:-1} SECURITY=${SECURITY:-passthrough}
KEEP=${KEEP:-0} SSH_TEST=${SSH_TEST:-1} CACHE=${CACHE:-/var/cache/planetlite-kvm} IMAGE_KERNEL=${IMAGE_KERNEL:-0}
slice=plkvmtest

# --- kernel + initramfs (node default: Debian's generic kernel, 9p as modules) --------------------
# The initramfs is busybox-static + the modules for virtio-pci, virtio-net, virtio-rng,
# virtio-balloon, then a 9p root and a virtiofs root (the cloud kernel has no 9p; modules missing
# from a kernel are left out), loaded in this order. Its /init reads the same kernel parameters as
# Debian's initramfs-tools (root= rootfstype= rootflags= ip= init=), so an image's own
# initramfs-tools initrd boots with the same command line.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio-rng virtio_balloon
failover net_failover virtio_net 9pnet 9pnet_virtio netfs fscache 9p fuse virtiofs"

build_initramfs() { # KERNEL_TREE OUT
  local tree=$1 out=$2 kver stage m f
  kver=$(basename "$(ls -d "$tree"/lib/modules/*/ | head -n1)")
  stage=$(mktemp -d "${TMPDIR:-/tmp}/plkvm-initramfs.XXXXXX")
  chmod 0755 "$stage"
  mkdir -p "$stage"/{bin,dev,proc,sys,newroot,lib/modules}
  install -m 0755 "$(command -v busybox)" "$stage/bin/busybox"
  mknod -m 0600 "$stage/dev/console" c 5 1
  : > "$stage/modules"
  for m in $MODULES; do
    f=$(find "$tree/lib/modules/$kver/kernel" -name "$m.ko" -print -quit)
    [[ -n $f ]] || { log "note: $kver has no $m.ko (built in, or not in this kernel)"; continue; }
    cp "$f" "$stage/lib/modules/"
    echo "$m" >> "$stage/modules"
  done
  cat > "$stage/init" <<'INIT'
#!/bin/busybox sh
# PlanetLite KVM sliver initramfs (PID 1 of the VM). Loads the virtio/9p/virtiofs modules, mounts
# the root (tag `root`), configures eth0 from ip=CLIENT::GW:NETMASK:HOST:DEV:off, and runs the
# image's /sbin/init in a mount+PID namespace on that root (what LXC gives an image).
# planetlite.probe: print a marker and power off at once (the KVM probe).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
if grep -qw planetlite.probe /proc/cmdline; then
  echo "PLANETLITE-PROBE-OK" > /dev/console
  poweroff -f
fi
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "initramfs: $*" > /dev/console; sleep 1; poweroff -f; }
root=root rootfstype=9p rootflags= ipcfg= init=/sbin/init
for x in $(cat /proc/cmdline); do
  case $x in
    root=*) root=${x#root=} ;;
    rootfstype=*) rootfstype=${x#rootfstype=} ;;
    rootflags=*) rootflags=${x#rootflags=} ;;
    ip=*) ipcfg=${x#ip=} ;;
    init=*) init=${x#init=} ;;
  esac
done
[ -n "$rootflags" ] || [ "$rootfstype" != 9p ] || rootflags=trans=virtio,version=9p2000.L
while read -r m; do insmod "/lib/modules/$m.ko" || echo "initramfs: insmod $m failed" > /dev/console; done < /modules
n=0
until mount -t "$rootfstype" ${rootflags:+-o "$rootflags"} "$root" /newroot; do
  n=$((n + 1)); [ $n -lt 50 ] || fail "cannot mount $root ($rootfstype, $rootflags)"; sleep 0.1
done
ip link set lo up
if [ -n "$ipcfg" ]; then
  IFS=: read -r addr _server gw mask host dev _auto <<EOF
$ipcfg
EOF
  dev=${dev:-eth0}
  n=0; until [ -e "/sys/class/net/$dev" ]; do n=$((n + 1)); [ $n -lt 50 ] || fail "no $dev"; sleep 0.1; done
  eval "$(ipcalc -p "$addr" "$mask")"
  ip addr add "$addr/$PREFIX" dev "$dev"
  ip link set "$dev" up
  [ -z "$gw" ] || ip route add default via "$gw"
  [ -z "$host" ] || hostname "$host"
fi
[ ! -s /newroot/etc/hostname ] || hostname "$(cat /newroot/etc/hostname)"
# Drop the modules' files (they are loaded); this initramfs stays as the VM's outer root.
rm -rf /lib/modules
# The image runs in its own mount and PID namespace, as under LXC: its init is PID 1 there and
# sees a fresh /proc, /sys, /dev and /dev/pts. This PID 1 stays outside, in the initramfs: it
# forwards "halt" from the control port (ttyS1) to the image's init as SIGPWR (what lxc-stop
# sends), and when the image's init exits (halt, poweroff, reboot or crash: in a PID namespace
# any of them ends its init) it powers the VM off, so qemu exits.
export init
unshare -m -p -f sh -c '
  mount --make-rprivate /
  mount -t proc proc /newroot/proc
  mount -t sysfs sysfs /newroot/sys
  mount -t devtmpfs devtmpfs /newroot/dev
  mkdir -p /newroot/dev/pts
  mount -t devpts -o newinstance,gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
  [ -e /newroot/dev/ptmx ] && mount --bind /newroot/dev/pts/ptmx /newroot/dev/ptmx
  cd /newroot && mount --move . / && exec chroot . "$init"
' &
child=$!
image_init() { cat "/proc/$child/task/$child/children" 2>/dev/null; }
if [ -e /dev/ttyS1 ]; then
  stty -F /dev/ttyS1 raw -echo 2>/dev/null
  (
    exec 0</dev/ttyS1 1>/dev/null 2>&1
    while read -r cmd; do
      case $cmd in halt*) p=$(image_init); [ -n "$p" ] && kill -PWR $p ;; esac
    done
  ) &
fi
wait $child
echo "initramfs: the image's init exited ($?); powering off" > /dev/console
poweroff -f
INIT
  chmod 0755 "$stage/init"
  (cd "$stage" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$out.partial"
  mv -f "$out.partial" "$out"
  rm -rf "$stage"
}

# The ELF vmlinux inside a bzImage (what the kernel tree's scripts/extract-vmlinux does).
extract_vmlinux() { # BZIMAGE OUT
  local magic tool off
  for magic in $'\xfd7zXZ:xz' $'\x28\xb5\x2f\xfd:zstd' $'\x1f\x8b\x08:gzip'; do
    tool=${magic##*:}
    command -v "$tool" >/dev/null || continue
    while read -r off; do
      tail -c +$((off + 1)) "$1" | "$tool" -dc > "$2.partial" 2>/dev/null || true
      if [[ $(head -c 4 "$2.partial" 2>/dev/null) == $'\x7fELF' ]]; then mv -f "$2.partial" "$2"; return 0; fi
    done < <(LC_ALL=C grep -abo "${magic%:*}" "$1" | cut -d: -f1 | head -n 5)
  done
  rm -f "$2.partial"
  die "cannot find a compressed ELF kernel in $1 (set KERNEL_FORMAT=bzimage)"
}

kernel_assets() { # sets kernel, initrd
  local deb dep tree
  mkdir -p "$CACHE"
  if [[ -n ${KERNEL_DEB:-} ]]; then
    deb=$KERNEL_DEB
  else
    # linux-image-amd64 is a metapackage; its one dependency is the versioned kernel package.
    dep=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
    [[ -n $dep ]] || die "apt-cache knows no linux-image-amd64"
    deb=$(ls "$CACHE"/"${dep}"_*.deb 2>/dev/null | head -n1 || true)
    if [[ -z $deb ]]; then
      log "downloading $dep"
      (cd "$CACHE" && chmod 0755 . && apt-get download -q "$dep" >/dev/null 2>&1) || die "apt-get download $dep failed"
      deb=$(ls "$CACHE"/"${dep}"_*.deb | head -n1)
    fi
  fi
  tree=$CACHE/$(basename "$deb" .deb)
  if [[ ! -d $tree/boot ]]; then
    # Only the kernel, its config and the modules the initramfs needs (not the 400 MB of modules).
    local pats=('./boot/vmlinuz-*' './boot/config-*') m
    for m in $MODULES; do pats+=("*/kernel/*/$m.ko"); done
    rm -rf "$tree.partial"; mkdir -p "$tree.partial"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tree.partial" --wildcards "${pats[@]}" 2>/dev/null || true
    ls "$tree.partial"/boot/vmlinuz-* >/dev/null 2>&1 || die "no kernel in $deb"
    mv "$tree.partial" "$tree"
  fi
  kernel=$(ls "$tree"/boot/vmlinuz-* | head -n1)
  if [[ ${KERNEL_FORMAT:-pvh} == pvh ]]; then
    # Debian's bzImage is xz-compressed, and decompressing it under TCG takes ~3 s of a ~5.5 s
    # boot. The uncompressed ELF vmlinux inside it has a PVH entry note (CONFIG_PVH), which qemu's
    # -kernel boots directly.
    [[ -s $tree/vmlinux ]] || extract_vmlinux "$kernel" "$tree/vmlinux"
    kernel=$tree/vmlinux
  fi
  initrd=$tree/initrd-planetlite.img
  if [[ ! -s $initrd || $0 -nt $initrd ]]; then
    log "building $initrd"
    build_initramfs "$tree" "$initrd"
  fi
}

# A path inside ROOTDIR with every symlink resolved inside it (the image is untrusted input).
inside_root() {
  local p
  p=$(cd "$root" && realpath -e -- "$root/$1" 2>/dev/null) || return 1
  [[ $p == "$root"/* ]] && [[ -f $p ]] && printf '%s\n' "$p"
}

# --- scratch state and cleanup ----------------------------------------------------------------------
ns=plkvmtest-$$ cns=plkvmtest-$$-c tap=plkvmtap0
run=$(mktemp -d "${TMPDIR:-/tmp}/plkvm-run.XXXXXX")
host_ip=10.231.0.1 guest_ip=10.231.0.2 mask=255.255.255.252
cleanup() {
  local pid
  for f in "$run"/*.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  done
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$cns" 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case $IMAGE_KERNEL in
  0) kernel_assets ;;
  1 | initrd)
    # The image's own kernel and initrd (e.g. Debian's initramfs-tools, see NOTES.md).
    kernel=$(inside_root boot/vmlinuz || inside_root vmlinuz) || die "no /boot/vmlinuz or /vmlinuz in $root"
    initrd=$(inside_root boot/initrd.img || inside_root initrd.img) || die "no /boot/initrd.img or /initrd.img in $root"
    if [[ ${KERNEL_FORMAT:-pvh} == pvh ]]; then extract_vmlinux "$kernel" "$run/vmlinux"; kernel=$run/vmlinux; fi ;;
  modules)
    # The image's kernel with this script's initramfs, built from the image's own modules.
    kernel=$(inside_root boot/vmlinuz || inside_root vmlinuz) || die "no /boot/vmlinuz or /vmlinuz in $root"
    build_initramfs "$root" "$run/initrd.img"
    initrd=$run/initrd.img
    if [[ ${KERNEL_FORMAT:-pvh} == pvh ]]; then extract_vmlinux "$kernel" "$run/vmlinux"; kernel=$run/vmlinux; fi ;;
  *) die "IMAGE_KERNEL must be 0, 1 (or initrd) or modules" ;;
esac
log "kernel $kernel ($(du -h "$kernel" | cut -f1)), initrd $initrd ($(du -h "$initrd" | cut -f1))"
if [[ $assets_only == 1 ]]; then printf '%s\n%s\n' "$kernel" "$initrd"; exit 0; fi

# --- KVM probe: a tiny boot with a deadline ---------------------------------------------------------
# The same kernel and initramfs with `planetlite.probe`: /init prints a marker and powers off.
# Pass = the marker on the serial console and qemu exited by itself before the deadline.
probe_accel() { # ACCEL DEADLINE_S -> 0 if it booted
  local accel=$1 deadline=$2 t0 rc=0
  t0=$(now_ms)
  timeout -s KILL "$deadline" qemu-system-x86_64 -accel "$accel" -m 128 -smp 1 -nodefaults -display none \
    -no-reboot -kernel "$kernel" -initrd "$initrd" -serial "file:$run/probe-$accel.log" \
    -append "console=ttyS0 panic=-1 quiet planetlite.probe" 2>"$run/probe-$accel.err" || rc=$?
  log "probe -accel $accel: exit $rc after $(($(now_ms) - t0)) ms; $(grep -c PLANETLITE-PROBE-OK "$run/probe-$accel.log" 2>/dev/null || echo 0) marker(s); $(head -c 200 "$run/probe-$accel.err" | tr '\n' ' ')"
  [[ $rc -eq 0 ]] && grep -q PLANETLITE-PROBE-OK "$run/probe-$accel.log"
}
case $ACCEL in
  auto)
    if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then log "no usable /dev/kvm: TCG"; accel=tcg
    elif probe_accel kvm 10; then accel=kvm
    else accel=tcg; fi ;;
  kvm) probe_accel kvm 10 || die "KVM probe failed" ; accel=kvm ;;
  tcg) accel=tcg ;;
  *) die "ACCEL must be auto, tcg or kvm" ;;
esac
# tb-size: TCG's translation cache is 1 GiB by default and an idle guest fills ~80 MB of it.
TCG_OPTS=${TCG_OPTS-tb-size=32}
[[ $accel == kvm ]] && accel_opt=kvm || accel_opt=tcg,thread=multi${TCG_OPTS:+,$TCG_OPTS}
log "kvm_accel=$([[ $accel == kvm ]] && echo true || echo false) (using -accel $accel_opt)"

# --- provisioning (what apps/agent/src/provision.ts writes into a sliver's snapshot) ---------------
# The same files, uids and modes as for an LXC sliver: with a 9p/virtiofs root the guest sees the
# snapshot's own ownership (root 0, slice user 1000).
ensure_line() { # FILE NAME LINE
  [[ -f $1 ]] || return 0
  { grep -v "^$2:" "$1" || true; echo "$3"; } > "$1.new" && cat "$1.new" > "$1" && rm -f "$1.new"
}
echo "$slice" > "$root/etc/slicename"
echo "$slice" > "$root/etc/hostname"
ensure_line "$root/etc/passwd" "$slice" "$slice:x:1000:1000:slice $slice:/home/$slice:/bin/sh"
ensure_line "$root/etc/group" "$slice" "$slice:x:1000:"
ensure_line "$root/etc/shadow" "$slice" "$slice:*:19000:0:99999:7:::"
[[ -s $root/etc/ssh/ssh_host_ed25519_key ]] || { mkdir -p "$root/etc/ssh"; ssh-keygen -q -t ed25519 -N '' -C 'sliver host key' -f "$root/etc/ssh/ssh_host_ed25519_key"; }
if [[ $SSH_TEST == 1 ]]; then
  ssh-keygen -q -t ed25519 -N '' -f "$run/id" -C plkvmtest
  for h in "root:0" "home/$slice:1000"; do
    d=$root/${h%:*}; id=${h#*:}
    mkdir -p "$d/.ssh"; cp "$run/id.pub" "$d/.ssh/authorized_keys"
    chown "$id:$id" "$d" "$d/.ssh" "$d/.ssh/authorized_keys"
    chmod 0755 "$d"; chmod 0700 "$d/.ssh"; chmod 0600 "$d/.ssh/authorized_keys"
  done
  chmod 0700 "$root/root"
fi

# --- network: namespace $ns stands in for the node, $cns for a client on the internet ---------------
# The tap is created the way packages/network creates a KVM sliver's link (`ip tuntap add … mode
# tap`, host end .1 of a /30); qemu opens it by name, so qemu runs in the node's namespace
# (nsenter --net, as the LXC driver runs lxc-*). A DNAT rule maps the node's first window port to
# the guest's sshd, as the nftables driver does for every sliver.
ip netns add "$ns"
ip netns add "$cns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev "$tap" mode tap
ip -n "$ns" addr add "$host_ip/30" dev "$tap"
ip -n "$ns" link set "$tap" up
ip -n "$ns" link add plkvmup type veth peer name plkvmcl netns "$cns"
ip -n "$ns" addr add 192.0.2.1/24 dev plkvmup
ip -n "$ns" link set plkvmup up
ip -n "$cns" addr add 192.0.2.2/24 dev plkvmcl
ip -n "$cns" link set plkvmcl up
ip -n "$cns" link set lo up
nsenter --net="/run/netns/$ns" sysctl -qw net.ipv4.ip_forward=1
nsenter --net="/run/netns/$ns" nft -f - <<NFT
table ip plkvmtest {
  chain pre { type nat hook prerouting priority dstnat; tcp dport 40000 dnat to $guest_ip:22; }
}
NFT

# --- boot ----------------------------------------------------------------------------------------
mkfifo "$run/ctl.in" "$run/ctl.out"
common="console=ttyS0 rw ip=$guest_ip::$host_ip:$mask:$slice:eth0:off net.ifnames=0 panic=-1 quiet${EXTRA_APPEND:+ $EXTRA_APPEND}"
case $ROOTFS in
  9p)
    append="root=root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=mmap $common"
    rootdev=(-fsdev "local,id=rootfs,path=$root,security_model=$SECURITY,multidevs=remap"
      -device virtio-9p-pci,fsdev=rootfs,mount_tag=root)
    # Guest RAM in a memfd (shmem): the host's THP setting for shmem, typically "never", applies
    # instead of qemu's MADV_HUGEPAGE on anonymous RAM, which makes every 4 KiB the guest touches
    # cost a 2 MiB host page.
    [[ ${MEMFD:-1} == 0 ]] || rootdev+=(-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -machine memory-backend=mem) ;;
  virtiofs)
    # virtiofsd serves the directory over vhost-user; the guest RAM must be shared memory.
    append="root=root rootfstype=virtiofs $common"
    /usr/lib/qemu/virtiofsd --socket-path="$run/vfs.sock" -o source="$root" -o cache=auto \
      -o sandbox=namespace -o xattr >"$run/virtiofsd.log" 2>&1 &
    echo $! > "$run/virtiofsd.pid"
    for _ in $(seq 1 50); do [[ -S $run/vfs.sock ]] && break; sleep 0.05; done
    rootdev=(-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -machine memory-backend=mem
      -chardev "socket,id=vfs,path=$run/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=root) ;;
  *) die "ROOTFS must be 9p or virtiofs" ;;
esac
qemu=(qemu-system-x86_64 -name "$slice" -accel "$accel_opt" -machine pc -m "$MEM" -smp "$CPUS"
  -nodefaults -display none -no-reboot
  -kernel "$kernel" -initrd "$initrd" -append "$append"
  "${rootdev[@]}"
  -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no"
  -device virtio-net-pci,netdev=n0,mac=52:54:00:e7:00:02,romfile=
  -device virtio-rng-pci
  ${BALLOON:+-device virtio-balloon-pci,free-page-reporting=on}
  -serial "file:$run/console.log"
  -chardev "pipe,id=ctl,path=$run/ctl" -serial chardev:ctl
  -qmp "unix:$run/qmp.sock,server=on,wait=off"
  -sandbox "${SANDBOX:-on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny}"
  -pidfile "$run/qemu.pid")
# shellcheck disable=SC2206 # EXTRA_QEMU: extra options for experiments, split on spaces
qemu+=(${EXTRA_QEMU:-})
t0=$(now_ms)
# Not -daemonize: its fork and setsid are what -sandbox spawn=deny and elevateprivileges=deny
# forbid (qemu dies of SIGSYS, or exits 1). Detach it from here instead (the agent: spawn with
# detached: true) and take the pid from -pidfile, which qemu writes before the guest starts.
nsenter --net="/run/netns/$ns" setsid -f "${qemu[@]}" </dev/null >"$run/qemu.out" 2>&1
for _ in $(seq 1 100); do [[ -s $run/qemu.pid ]] && break; sleep 0.02; done
[[ -s $run/qemu.pid ]] || { cat "$run/qemu.out" >&2; die "qemu did not start"; }
t_daemon=$(($(now_ms) - t0))
pid=$(cat "$run/qemu.pid")
log "qemu pid $pid running after $t_daemon ms"

# The ssh banner, read with bash's /dev/tcp (no extra tools): from the node namespace on the guest's
# address, then from the client namespace through the DNAT port.
read_banner() { # NETNS ADDR PORT
  nsenter --net="/run/netns/$1" timeout 1 bash -c "exec 3<>/dev/tcp/$2/$3 && read -r -t 1 l <&3 && echo \"\$l\"" 2>/dev/null || true
}
banner=""
deadline=$(($(now_ms) + ${BANNER_TIMEOUT:-120} * 1000))
while [[ $(now_ms) -lt $deadline ]]; do
  banner=$(read_banner "$ns" "$guest_ip" 22)
  [[ -n $banner ]] && break
  kill -0 "$pid" 2>/dev/null || { tail -n 30 "$run/console.log" "$run/qemu.out" >&2; die "qemu exited before the banner"; }
  sleep 0.1
done
t_banner=$(($(now_ms) - t0))
[[ -n $banner ]] || { tail -n 30 "$run/console.log" >&2; die "no ssh banner after ${BANNER_TIMEOUT:-120} s"; }
log "ssh banner after $t_banner ms: $banner"
log "through DNAT 192.0.2.1:40000 from $cns: $(read_banner "$cns" 192.0.2.1 40000)"

if [[ $SSH_TEST == 1 ]]; then
  sshc=(nsenter --net="/run/netns/$ns" ssh -i "$run/id" -o BatchMode=yes -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=20)
  t1=$(now_ms)
  out=$("${sshc[@]}" "root@$guest_ip" 'echo "slicename=$(cat /etc/slicename) kernel=$(uname -r)"; grep " / " /proc/mounts | tail -n1; free -m | sed -n 2p' 2>&1) || true
  log "ssh root ($(($(now_ms) - t1)) ms): $(echo "$out" | tr '\n' ';')"
  out=$("${sshc[@]}" "$slice@$guest_ip" 'id; touch ~/ok && echo home-writable; touch /etc/nope 2>&1 || echo etc-refused' 2>&1) || true
  log "ssh $slice: $(echo "$out" | tr '\n' ';')"
  ls -ln "$root/home/$slice/ok" >&2 || true
fi

[[ $KEEP -gt 0 ]] && sleep "$KEEP"
rss() { awk '/^(VmRSS|RssAnon|RssFile|RssShmem)/ { printf "%s %.1f MiB ", $1, $2 / 1024 }' "/proc/$1/status"; }
log "qemu $(rss "$pid")(guest -m $MEM)"
[[ ! -f $run/virtiofsd.pid ]] || log "virtiofsd $(rss "$(cat "$run/virtiofsd.pid")")"

# Clean stop: "halt" on the control serial port -> SIGPWR to the image's init, as lxc-stop does.
# When that init ends, the initramfs's PID 1 powers off and qemu exits (with an image's own
# initrd, init itself is PID 1: its exit panics the kernel, and panic=-1 + -no-reboot end qemu).
t1=$(now_ms)
echo halt > "$run/ctl.in"
for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  log "guest did not stop within 15 s; killing qemu"
  kill -KILL "$pid"
else
  log "clean stop in $(($(now_ms) - t1)) ms"
fi
echo "RESULT rootfs=$ROOTFS accel=$accel banner_ms=$t_banner pidfile_ms=$t_daemon"
log "console log tail:"; tail -n 5 "$run/console.log" >&2 || true
