// The node-built initramfs every VM sliver boots with: busybox-static, the virtio and 9p modules of
// the kernel it boots, and an /init that mounts the 9p root, configures eth0 from ip=, runs the
// image's own init in a mount+PID namespace, and serves the control port (halt, exec).
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { run } from '@planetlite/host';

/** Modules /init loads, in dependency order (read from each .ko's depends=; busybox has no
 * modprobe database here). Modules a kernel lacks are left out: built in, or not needed. */
export const INITRAMFS_MODULES = [
  'virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio-rng', 'virtio_balloon',
  'failover', 'net_failover', 'virtio_net', '9pnet', '9pnet_virtio', 'netfs', 'fscache', '9p',
] as const;

/** The marker /init prints under `planetlite.probe` (the acceleration probe), then powers off. */
export const PROBE_MARKER = 'PLANETLITE-PROBE-OK';

/** PATH of a command exec runs in the sliver (as the LXC driver's lxc-attach --clear-env). */
const EXEC_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * PID 1 of the VM. The control port (ttyS1) speaks lines, each value "_" + base64 so an empty one
 * is still a field:
 *   ping ID                      -> pong ID
 *   halt                         -> SIGPWR to the image's init (what lxc-stop sends)
 *   exec ID _INPUT _ARG0 _ARG1…  -> result ID EXIT _STDOUT _STDERR
 * When the image's init ends (halt, poweroff, reboot or crash all end it in its PID namespace)
 * this PID 1 powers the VM off, so qemu exits.
 */
export const INIT_SCRIPT = `#!/bin/busybox sh
# PlanetLite VM sliver initramfs (PID 1 of the VM), written by packages/instance/src/qemu/initramfs.ts.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
if grep -qw planetlite.probe /proc/cmdline; then
  echo "${PROBE_MARKER}" > /dev/console
  poweroff -f
fi
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0700 tmpfs /tmp
fail() { echo "initramfs: $*" > /dev/console; sleep 1; poweroff -f; }
root=root rootfstype=9p rootflags= ipcfg= init=/sbin/init
for x in $(cat /proc/cmdline); do
  case $x in
    root=*) root=\${x#root=} ;;
    rootfstype=*) rootfstype=\${x#rootfstype=} ;;
    rootflags=*) rootflags=\${x#rootflags=} ;;
    ip=*) ipcfg=\${x#ip=} ;;
    init=*) init=\${x#init=} ;;
  esac
done
while read -r m; do insmod "/lib/modules/$m.ko" || echo "initramfs: insmod $m failed" > /dev/console; done < /modules
n=0
until mount -t "$rootfstype" \${rootflags:+-o "$rootflags"} "$root" /newroot; do
  n=$((n + 1)); [ $n -lt 50 ] || fail "cannot mount $root ($rootfstype, $rootflags)"; sleep 0.1
done
ip link set lo up
if [ -n "$ipcfg" ]; then
  IFS=: read -r addr _server gw mask host dev _auto <<EOF
$ipcfg
EOF
  dev=\${dev:-eth0}
  n=0; until [ -e "/sys/class/net/$dev" ]; do n=$((n + 1)); [ $n -lt 50 ] || fail "no $dev"; sleep 0.1; done
  eval "$(ipcalc -p "$addr" "$mask")"
  ip addr add "$addr/$PREFIX" dev "$dev"
  ip link set "$dev" up
  [ -z "$gw" ] || ip route add default via "$gw"
  [ -z "$host" ] || hostname "$host"
fi
[ ! -s /newroot/etc/hostname ] || hostname "$(cat /newroot/etc/hostname)"
rm -rf /lib/modules
# The image's init runs as under LXC: PID 1 of its own PID namespace, with a fresh /proc, /sys,
# /dev and /dev/pts, on the 9p root. This PID 1 stays outside, in the initramfs.
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
image_init() { p=$(cat "/proc/$child/task/$child/children" 2>/dev/null); echo \${p%% *}; }
# exec ID _INPUT _ARG…: runs ARG… in the image's namespaces and root, as its root, with only PATH set.
run_exec() {
  id=$1 input=$2; shift 2
  p=$(image_init)
  if [ -z "$p" ]; then
    printf 'result %s 255 _ _%s\\n' "$id" "$(echo "the sliver's init is not running" | base64 -w0)" >&3
    return
  fi
  n=$#
  while [ $n -gt 0 ]; do
    v=$(printf %s "\${1#_}" | base64 -d; echo .)
    set -- "$@" "\${v%.}"
    shift; n=$((n - 1))
  done
  f=/tmp/exec-$id
  printf %s "\${input#_}" | base64 -d > "$f.in"
  env -i PATH=${EXEC_PATH} nsenter -t "$p" -m -u -i -p -r -w -- "$@" < "$f.in" > "$f.out" 2> "$f.err"
  rc=$?
  printf 'result %s %s _%s _%s\\n' "$id" "$rc" "$(base64 -w0 < "$f.out")" "$(base64 -w0 < "$f.err")" >&3
  rm -f "$f.in" "$f.out" "$f.err"
}
if [ -e /dev/ttyS1 ]; then
  stty -F /dev/ttyS1 raw -echo 2>/dev/null
  (
    exec 0</dev/ttyS1 3>/dev/ttyS1 1>/dev/null 2>&1
    set -f
    while read -r cmd id rest; do
      case $cmd in
        halt) p=$(image_init); [ -z "$p" ] || kill -PWR "$p" ;;
        ping) printf 'pong %s\\n' "$id" >&3 ;;
        # Detached twice: a job ending while read is mid-line makes busybox's read restart and
        # drop what it had read; the short-lived middle shell ends before the next line comes.
        exec) (run_exec "$id" $rest &) ;;
      esac
    done
  ) &
fi
wait $child
echo "initramfs: the image's init exited ($?); powering off" > /dev/console
poweroff -f
`;

/** A short hash of what goes into an initramfs besides the modules, naming cached builds. */
export function initramfsVersion(busybox: Buffer): string {
  return createHash('sha256').update(INIT_SCRIPT).update(INITRAMFS_MODULES.join(' ')).update(busybox).digest('hex').slice(0, 12);
}

interface CpioEntry {
  name: string;
  /** st_mode with the file type bits. */
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/** An archive in the kernel's initramfs format (cpio "newc"), all entries owned by root. */
export function newcArchive(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const all = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  all.forEach((e, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const fields = [i + 1, e.mode, 0, 0, 1, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''));
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  });
  return Buffer.concat(parts);
}

const DIR = 0o040755;
const FILE = 0o100644;
const EXE = 0o100755;
const CHR = 0o020600;

/** Paths of the wanted modules under a kernel's module tree (DIR/lib/modules/RELEASE), by name;
 * symlinks are not followed (an image's tree is untrusted). */
export async function findModules(modulesDir: string): Promise<Map<string, string>> {
  const wanted = new Set<string>(INITRAMFS_MODULES);
  const found = new Map<string, string>();
  for (const e of await readdir(modulesDir, { recursive: true, withFileTypes: true })) {
    const m = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/.exec(e.name);
    if (!e.isFile() || !m?.[1] || !wanted.has(m[1]) || found.has(m[1])) continue;
    found.set(m[1], join(e.parentPath, e.name));
  }
  return found;
}

/** A module file's bytes, decompressed (busybox insmod takes plain .ko files). */
async function moduleBytes(path: string, scratch: string): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFile(path);
  if (path.endsWith('.gz')) return gunzipSync(await readFile(path));
  const copy = join(scratch, basename(path));
  await copyFile(path, copy);
  if (path.endsWith('.xz')) await run('xz', ['-d', '-f', '-q', copy]);
  else await run('zstd', ['-d', '-f', '-q', '--rm', copy]);
  return readFile(copy.replace(/\.(xz|zst)$/, ''));
}

/** Builds the initramfs for the kernel whose modules are in modulesDir, written atomically to out.
 * Returns the modules it could not find (built into that kernel, or missing). */
export async function buildInitramfs(opts: { modulesDir: string; busybox: string; out: string }): Promise<string[]> {
  const modules = await findModules(opts.modulesDir);
  const scratch = await mkdtemp(`${opts.out}.modules-`);
  try {
    const entries: CpioEntry[] = ['bin', 'dev', 'proc', 'sys', 'tmp', 'newroot', 'lib', 'lib/modules'].map((name) => ({ name, mode: DIR }));
    entries.push({ name: 'dev/console', mode: CHR, rdev: [5, 1] });
    entries.push({ name: 'bin/busybox', mode: EXE, data: await readFile(opts.busybox) });
    entries.push({ name: 'init', mode: EXE, data: Buffer.from(INIT_SCRIPT) });
    const loaded = INITRAMFS_MODULES.filter((m) => modules.has(m));
    for (const m of loaded) entries.push({ name: `lib/modules/${m}.ko`, mode: FILE, data: await moduleBytes(modules.get(m)!, scratch) });
    entries.push({ name: 'modules', mode: FILE, data: Buffer.from(loaded.map((m) => `${m}\n`).join('')) });
    const tmp = `${opts.out}.tmp-${process.pid}`;
    await writeFile(tmp, gzipSync(newcArchive(entries), { level: 1 }));
    await rename(tmp, opts.out);
    return INITRAMFS_MODULES.filter((m) => !modules.has(m));
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
