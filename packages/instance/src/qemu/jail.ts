// The jail a VM sliver's qemu runs in: its own unprivileged host ids (the sliver's id range, as
// LXC's idmap), its own mount namespace holding only what qemu needs, no new privileges, the
// sliver's cgroups, and the tap handed over as an open fd. Node cannot make the system calls this
// takes (unshare, open_tree, mount_setattr, pivot_root, ioctl), and util-linux 2.38 (Debian 12)
// has no idmapped mounts, so a short Python helper (Debian's python3, ctypes) does them and then
// execs qemu: the process the driver spawned *is* qemu, with the pid the pidfile names.
//
// Why an idmapped mount: a sliver root is the image as unpacked on the host, owned by uids
// 0..65535. qemu in a user namespace mapping 0..65535 to H..H+65535 sees that root, mounted with
// the same map (open_tree + mount_setattr MOUNT_ATTR_IDMAP, what LXC's `idmap=container` does),
// as owned by its own ids, so 9p passthrough serves the guest the true owners and chowns new files
// without any host privilege. 9p's mapped-xattr/mapped-file models would need the tree chowned to
// H first (a metadata copy of every file of every snapshot) and would break slivers made before;
// Debian 12 packages no virtiofsd. Files stay uid 0..65535 on disk, exactly as before.
import { isAbsolute } from 'node:path';
import { InvalidSpecError } from '../driver.js';

/** What the helper needs; paths are host paths and keep their names inside the jail. */
export interface JailSpec {
  /** Host uid and gid of the guest's root (the sliver's idmap base); 65536 ids from there. */
  idmapBase: number;
  /** The sliver's root, mounted idmapped and read-write. */
  rootfs: string;
  /** An empty directory the jail's tmpfs root is mounted on (in qemu's namespace only). */
  jail: string;
  /** Files and directories bound into the jail at their own path: 'ro', 'rw' (nosuid, nodev) or
   * 'dev' (a device node). None may lie inside another. */
  binds: Array<[path: string, mode: 'ro' | 'rw' | 'dev']>;
  /** cgroup directories (one per hierarchy) the process joins before anything else. */
  cgroups: string[];
  /** The sliver's tap, opened by the (still root) helper and given to qemu as fd 3; its owner is
   * set to the VM's uid so no other unprivileged process can attach to it. Null: no network. */
  tap: string | null;
  /** A host group qemu keeps as a supplementary group (the owner of /dev/kvm), or null. */
  extraGid: number | null;
  /** qemu's working directory inside the jail. */
  cwd: string;
}

/** The fd the tap is handed over as. */
export const JAIL_TAP_FD = 3;
/** The gid the extra group takes inside qemu's user namespace (just past the guest's range). */
export const JAIL_EXTRA_GID = 65536;
/** Capabilities qemu keeps inside its user namespace (they reach only files of the sliver's own
 * ids): what 9p passthrough needs to serve owners, modes and file capabilities. */
export const JAIL_KEPT_CAPS = { CHOWN: 0, DAC_OVERRIDE: 1, DAC_READ_SEARCH: 2, FOWNER: 3, FSETID: 4, SETFCAP: 31 } as const;

export const JAIL_PYTHON = '/usr/bin/python3';

/** Throws InvalidSpecError naming the first bad field: every value reaches a mount call as root. */
export function validateJailSpec(j: JailSpec): void {
  const bad = (why: string): never => {
    throw new InvalidSpecError(`vm jail ${why}`);
  };
  const isPath = (p: string) => isAbsolute(p) && !/[\n\r\0]/.test(p) && !p.split('/').includes('..') && p !== '/';
  if (!Number.isSafeInteger(j.idmapBase) || j.idmapBase < 65536 || j.idmapBase > 2 ** 32 - 1 - 2 * 65536) bad(`idmapBase must be an id from 65536, got ${j.idmapBase}`);
  for (const p of [j.rootfs, j.jail, j.cwd, ...j.binds.map((b) => b[0]), ...j.cgroups]) if (!isPath(p)) bad(`path must be absolute, without '..', got ${JSON.stringify(p)}`);
  const all = [j.rootfs, ...j.binds.map((b) => b[0])];
  for (const a of all) for (const b of all) if (a !== b && b.startsWith(`${a}/`)) bad(`bind ${b} lies inside ${a}`);
  if (all.some((p) => p === j.jail || p.startsWith(`${j.jail}/`) || j.jail.startsWith(`${p}/`))) bad(`jail ${j.jail} overlaps a bind`);
  if (j.tap !== null && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(j.tap)) bad(`tap must be an interface name, got ${JSON.stringify(j.tap)}`);
  if (j.extraGid !== null && (!Number.isSafeInteger(j.extraGid) || j.extraGid < 0)) bad(`extraGid must be a gid, got ${j.extraGid}`);
}

/** argv that runs qemuArgv (binary first) inside the jail. */
export function jailArgv(j: JailSpec, qemuArgv: string[]): string[] {
  validateJailSpec(j);
  return [JAIL_PYTHON, '-I', '-S', '-c', JAIL_SCRIPT, JSON.stringify({ ...j, keep: Object.values(JAIL_KEPT_CAPS), tapFd: JAIL_TAP_FD, extraNsGid: JAIL_EXTRA_GID }), ...qemuArgv];
}

/**
 * The helper. P (the spawned process, root): joins the cgroups, opens the tap, unshares a mount
 * namespace and forks C. P unshares a user namespace; C (still root, in P's mount namespace)
 * writes P's id maps, builds the jail (tmpfs root, read-only binds, the idmapped sliver root) and
 * pivots into it, which moves P's root too. The jail's /proc shows only qemu's own process
 * (subset=pid, hidepid=invisible): 9p passthrough changes modes through /proc/self/fd. P then
 * becomes root of its namespace (host uid H), drops every capability but JAIL_KEPT_CAPS from its
 * bounding set, sets no_new_privs and execs qemu. P's namespace does not own the mount namespace, so qemu cannot undo any mount.
 */
export const JAIL_SCRIPT = String.raw`
import ctypes, fcntl, json, os, struct, sys
spec = json.loads(sys.argv[1]); argv = sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def ok(r, what):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, what + ': ' + os.strerror(e))
    return r
B = lambda s: s.encode() if s is not None else None
def mount(src, dst, fstype, flags, data=None):
    ok(libc.mount(B(src), B(dst), B(fstype), ctypes.c_ulong(flags), B(data)), 'mount %s on %s' % (src, dst))
RDONLY, NOSUID, NODEV, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
H = spec['idmapBase']

for d in spec['cgroups']:
    with open(d + '/cgroup.procs', 'w') as f: f.write(str(os.getpid()))
if spec['tap']:
    tun = os.open('/dev/net/tun', os.O_RDWR)
    fcntl.ioctl(tun, 0x400454ca, struct.pack('16sH22x', spec['tap'].encode(), 0x0002 | 0x1000 | 0x4000))  # TUNSETIFF tap, no_pi, vnet_hdr
    for req, what in ((0x400454cc, 'TUNSETOWNER'), (0x400454ce, 'TUNSETGROUP')):
        ok(libc.ioctl(tun, ctypes.c_ulong(req), ctypes.c_ulong(H)), what)
    if tun != spec['tapFd']: os.dup2(tun, spec['tapFd']); os.close(tun)
    os.set_inheritable(spec['tapFd'], True)
ok(libc.unshare(0x00020000), 'unshare mount namespace')
mount(None, '/', None, REC | PRIVATE)

go_r, go_w = os.pipe(); done_r, done_w = os.pipe()
parent = os.getpid()
child = os.fork()
if child == 0:
    os.close(go_w); os.close(done_r)
    try:
        os.read(go_r, 1)
        for kind, extra in (('uid', None), ('gid', spec['extraGid'])):
            lines = '0 %d 65536\n' % H + ('%d %d 1\n' % (spec['extraNsGid'], extra) if extra is not None else '')
            with open('/proc/%d/%s_map' % (parent, kind), 'w') as f: f.write(lines)
        userns = os.open('/proc/%d/ns/user' % parent, os.O_RDONLY)
        jail = spec['jail']
        mount('tmpfs', jail, 'tmpfs', NOSUID | NODEV, 'mode=0755,size=1m')
        for name in ('bin', 'sbin', 'lib', 'lib64'):
            if os.path.islink('/' + name): os.symlink(os.readlink('/' + name), jail + '/' + name)
        for path, mode in spec['binds']:
            target = jail + path
            if os.path.isdir(path): os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True); open(target, 'a').close()
            mount(path, target, None, BIND)
            mount(None, target, None, BIND | REMOUNT | NOSUID | (RDONLY if mode == 'ro' else 0) | (0 if mode == 'dev' else NODEV))
        # 9p chmods through /proc/self/fd: a procfs of only this process's own pid directories.
        os.mkdir(jail + '/proc')
        mount('proc', jail + '/proc', 'proc', NOSUID | NODEV | 8, 'subset=pid,hidepid=invisible')  # 8: noexec
        # The sliver root, idmapped through P's user namespace (open_tree, mount_setattr, move_mount).
        tree = ok(libc.syscall(428, -100, B(spec['rootfs']), 1 | os.O_CLOEXEC), 'open_tree ' + spec['rootfs'])
        attr = struct.pack('QQQQ', 0x00100000 | 2 | 4, 0, 0, userns)  # MOUNT_ATTR_IDMAP | NOSUID | NODEV
        ok(libc.syscall(442, tree, b'', 0x1000, attr, len(attr)), 'mount_setattr idmap')
        os.makedirs(jail + spec['rootfs'], exist_ok=True)
        ok(libc.syscall(429, tree, b'', -100, B(jail + spec['rootfs']), 4), 'move_mount')
        os.chdir(jail); os.mkdir('.old')
        ok(libc.syscall(155, b'.', b'.old'), 'pivot_root')
        ok(libc.umount2(b'/.old', 2), 'umount old root')
        os.rmdir('/.old')
        mount(None, '/', None, REMOUNT | RDONLY | NOSUID | NODEV)
        os.write(done_w, b'k')
    except BaseException as e:
        os.write(done_w, ('E' + str(e)).encode()[:4000])
    os._exit(0)

os.close(go_r); os.close(done_w)
ok(libc.unshare(0x10000000), 'unshare user namespace')
os.write(go_w, b'g')
answer = os.read(done_r, 4096)
os.waitpid(child, 0)
if answer != b'k':
    sys.stderr.write('planetlite vm jail: ' + answer[1:].decode(errors='replace') + '\n'); sys.exit(111)
os.close(go_w); os.close(done_r)
os.chdir(spec['cwd'])
os.setgroups([spec['extraNsGid']] if spec['extraGid'] is not None else [])
os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
for cap in range(64):
    if cap not in spec['keep'] and libc.prctl(24, cap, 0, 0, 0) < 0 and ctypes.get_errno() != 22: ok(-1, 'drop capability %d' % cap)
ok(libc.prctl(38, 1, 0, 0, 0), 'no_new_privs')
os.execv(argv[0], argv)
`;
