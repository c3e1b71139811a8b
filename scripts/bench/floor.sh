#!/usr/bin/env bash
# The floor of a sliver's start-up: the bare host operations a sliver needs, scripted by hand with
# no PlanetLite code: a btrfs snapshot of the image, a veth pair, one nftables DNAT rule, and a
# plain lxc-start of a minimal unprivileged container (idmapped root, the veth's peer as eth0)
# whose init starts sshd. scripts/bench/sliver.ts times it to the ssh banner beside
# POST …/slivers → banner, in the same run, pool and node namespace.
#
#   floor.sh up   NS IMAGE_SUBVOL POOL_DIR LXC_DIR N PUBLIC PORT
#   floor.sh down NS POOL_DIR LXC_DIR N
#
# N (0..16383) picks the names (floorN, flhN/flpN) and the /30 in 10.231.0.0/16.
set -euo pipefail

cmd=$1
ns=$2
in_ns() { ip netns exec "$ns" "$@"; }

if [[ $cmd == up ]]; then
  img=$3 pool=$4 lxc=$5 n=$6 public=$7 port=$8
  name=floor$n
  host=10.231.$((n / 64)).$(((n % 64) * 4 + 1))
  sliver=10.231.$((n / 64)).$(((n % 64) * 4 + 2))
  btrfs -q subvolume snapshot "$img" "$pool/$name"
  in_ns ip link add "flh$n" type veth peer name "flp$n"
  in_ns ip addr add "$host/30" dev "flh$n"
  in_ns ip link set "flh$n" up
  in_ns nft add rule ip pl_floor prerouting ip daddr "$public" tcp dport "$port" dnat to "$sliver:22"
  mkdir -p "$lxc/$name"
  cat > "$lxc/$name/config" <<CONFIG
lxc.uts.name = $name
lxc.rootfs.path = dir:$pool/$name
lxc.rootfs.options = idmap=container
lxc.idmap = u 0 $((1000000000 + n * 65536)) 65536
lxc.idmap = g 0 $((1000000000 + n * 65536)) 65536
lxc.init.cmd = /sbin/init
lxc.autodev = 1
lxc.mount.auto = proc:mixed sys:ro cgroup:mixed:force
lxc.net.0.type = phys
lxc.net.0.link = flp$n
lxc.net.0.name = eth0
lxc.net.0.flags = up
lxc.net.0.ipv4.address = $sliver/30
lxc.net.0.ipv4.gateway = $host
CONFIG
  # lxc-start runs in the node's namespace, where the veth's peer is.
  in_ns lxc-start -P "$lxc" -n "$name" -d
elif [[ $cmd == down ]]; then
  pool=$3 lxc=$4 n=$5
  name=floor$n
  in_ns lxc-stop -P "$lxc" -n "$name" -k 2>/dev/null || true
  rm -rf "${lxc:?}/$name"
  in_ns ip link del "flh$n" 2>/dev/null || true
  btrfs -q subvolume delete "$pool/$name" 2>/dev/null || true
elif [[ $cmd == init ]]; then
  in_ns sysctl -q -w net.ipv4.ip_forward=1
  in_ns nft -f - <<'NFT'
table ip pl_floor
delete table ip pl_floor
table ip pl_floor {
  chain prerouting { type nat hook prerouting priority dstnat; }
}
NFT
elif [[ $cmd == fini ]]; then
  in_ns nft delete table ip pl_floor 2>/dev/null || true
else
  echo "usage: floor.sh up|down|init|fini NS …" >&2
  exit 2
fi
