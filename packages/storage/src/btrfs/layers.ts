// Layered sliver roots: the image's read-only subvolume as the lower layer of an overlayfs,
// seen through an idmapped mount in the sliver's own host ids, under a writable upper layer in
// a subvolume of the sliver's own (whose qgroup is its disk quota).
//
// Why: every sliver of an image then reads the *same* inodes, so the page cache of sshd, libc
// and the rest is shared by all of them. A btrfs snapshot shares disk blocks but not page
// cache (each snapshot's files are inodes of their own): ≈ 9 MiB of cache per idle sliver.
// An idmapped mount *of an overlay* is refused by the kernel (EINVAL), so the lower layer is
// idmapped on its own, and the upper layer holds host ids (the sliver's root is host uid H).
//
// Node cannot make the system calls (unshare, open_tree, mount_setattr, move_mount) and
// util-linux 2.38 has no idmapped mounts, so a short Python helper (Debian's python3, ctypes)
// does them, as the qemu jail does (packages/instance/src/qemu/jail.ts).
//
// Layout of slivers/<id> (a subvolume): upper/ and work/ (overlayfs's), lower/ (an empty
// folder the idmapped image is attached on while the overlay is mounted, detached at once),
// rootfs/ (where the overlay is mounted: the root a sliver sees) and layers.json (the image
// and the id base, so open() can mount it again after a reboot).
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Coprocess, run, tryRun } from '@planetlite/host';
import { StorageError } from '../errors.js';

export const LAYERS_PYTHON = '/usr/bin/python3';
export const LAYERS_FILE = 'layers.json';
/** Ids a sliver's map covers (as LXC's lxc.idmap and the agent's slots). */
export const LAYERS_ID_COUNT = 65536;

export interface Layers {
  /** The image (sha256) whose subvolume is the lower layer. */
  image: string;
  /** Host uid/gid of the sliver's root: the lower layer is seen shifted by this much. */
  idmapBase: number;
}

export function isLayers(v: unknown): v is Layers {
  const o = v as Layers;
  return typeof o === 'object' && o !== null && typeof o.image === 'string' && /^[0-9a-f]{64}$/.test(o.image) && Number.isSafeInteger(o.idmapBase) && o.idmapBase >= LAYERS_ID_COUNT && o.idmapBase <= 2 ** 32 - 1 - LAYERS_ID_COUNT;
}

/** The layers of a root, or null when it is a snapshot root (no layers.json). */
export async function readLayers(subvolume: string): Promise<Layers | null> {
  let text: string;
  try {
    text = await readFile(join(subvolume, LAYERS_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const parsed: unknown = JSON.parse(text);
  if (!isLayers(parsed)) throw new StorageError('unexpected_output', `${join(subvolume, LAYERS_FILE)} does not name an image and an id base`);
  return parsed;
}

export async function writeLayers(subvolume: string, layers: Layers): Promise<void> {
  await writeFile(join(subvolume, LAYERS_FILE), JSON.stringify(layers) + '\n');
}

/**
 * Can this host mount a layered root in this pool? Tried for real on throwaway folders in
 * `scratch` (python3 with ctypes, overlayfs, idmapped mounts of this filesystem, overlayfs over
 * an idmapped layer). The reason when not. Starts the helper, so that the first sliver's root
 * does not wait for Python.
 */
export async function layersMissing(scratch: string): Promise<string | null> {
  if ((await helper.request({ ping: true }).catch(() => null)) === null) return `${LAYERS_PYTHON} with ctypes is missing (apt-get install python3)`;
  if (!/\toverlay$/m.test(await readFile('/proc/filesystems', 'utf8'))) {
    await tryRun('modprobe', ['overlay']);
    if (!/\toverlay$/m.test(await readFile('/proc/filesystems', 'utf8'))) return 'the kernel has no overlay filesystem (modprobe overlay)';
  }
  // A probe a crash cut short may have left its mounts.
  await unmountLayers(scratch, await mountPoints());
  await rm(scratch, { recursive: true, force: true });
  try {
    for (const name of ['image', 'upper', 'work', 'lower', 'rootfs']) await mkdir(join(scratch, name), { recursive: true });
    await writeFile(join(scratch, 'image', 'probe'), 'layers\n');
    await mountLayers(scratch, join(scratch, 'image'), { image: '0'.repeat(64), idmapBase: LAYERS_ID_COUNT });
    const seen = await stat(join(scratch, 'rootfs', 'probe'));
    await run('umount', [join(scratch, 'rootfs')]);
    if (seen.uid !== LAYERS_ID_COUNT) return `an idmapped layer showed uid ${seen.uid}, not ${LAYERS_ID_COUNT}`;
    return null;
  } catch (err) {
    await tryRun('umount', ['--lazy', join(scratch, 'rootfs')]);
    return `a layered mount failed here: ${(err as Error).message.split('\n')[0]}`;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Mounts the overlay of `image` (idmapped to layers.idmapBase) and subvolume/upper on subvolume/rootfs. */
export async function mountLayers(subvolume: string, imageDir: string, layers: Layers): Promise<void> {
  // overlayfs splits its options on ',' and its lower layers on ':'.
  if (/[,:\n]/.test(subvolume)) throw new StorageError('invalid_options', `a layered root cannot live under a path with ',' or ':' (${subvolume}); mount the pool elsewhere`);
  await helper.request({ image: imageDir, dir: subvolume, idmapBase: layers.idmapBase, count: LAYERS_ID_COUNT });
}

/** Unmounts subvolume/rootfs if it is mounted (also a lower/ a crash left attached); `mounted`:
 * the host's mount points when the caller has read them, else each path is looked at alone. */
export async function unmountLayers(subvolume: string, mounted?: ReadonlySet<string>): Promise<void> {
  for (const name of ['rootfs', 'lower']) {
    const path = join(subvolume, name);
    if (mounted ? mounted.has(path) : await isMountPoint(path)) await run('umount', ['--lazy', path]);
  }
}

/**
 * Whether something is mounted on path: its device is not its parent folder's (an overlay and an
 * idmapped image subvolume each have a device of their own). Two stats, where reading the host's
 * mount table costs as much as the node has slivers.
 */
export async function isMountPoint(path: string): Promise<boolean> {
  const [here, parent] = await Promise.all([stat(path).catch(() => null), stat(dirname(path)).catch(() => null)]);
  return here !== null && parent !== null && here.dev !== parent.dev;
}

/** Mount points on this host (from /proc/self/mountinfo, octal escapes decoded). */
export async function mountPoints(): Promise<Set<string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field) out.add(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/**
 * The helper, run as root in the host's namespaces, one JSON request per line: for each, a child
 * unshares a user namespace whose maps the helper writes (0 → idmapBase, count ids); the image's
 * tree is cloned (open_tree), idmapped through that namespace (mount_setattr) and attached on
 * dir/lower (move_mount); the overlay is mounted on dir/rootfs; lower is detached again (the
 * overlay keeps its own reference). Answers {"ok": true} or {"error": "..."}; a failure leaves
 * nothing mounted.
 */
const LAYERS_SCRIPT = String.raw`
import ctypes, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def ok(r, what):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, '%s: %s' % (what, os.strerror(e)))
    return r
B = lambda s: s.encode()
def userns(base, count):
    go_r, go_w = os.pipe(); ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_w); os.close(ready_r)
        if libc.unshare(0x10000000) < 0: os._exit(1)
        os.write(ready_w, b'1'); os.read(go_r, 1); os._exit(0)
    os.close(go_r); os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b'1': raise OSError(1, 'unshare a user namespace: refused')
        for kind in ('uid', 'gid'):
            with open('/proc/%d/%s_map' % (child, kind), 'w') as f: f.write('0 %d %d\n' % (base, count))
        return os.open('/proc/%d/ns/user' % child, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r); os.close(go_w); os.waitpid(child, 0)
def handle(spec):
    if spec.get('ping'): return
    d = spec['dir']; lower, upper, work, rootfs = d + '/lower', d + '/upper', d + '/work', d + '/rootfs'
    ns = userns(spec['idmapBase'], spec['count'])
    try:
        tree = ok(libc.syscall(428, -100, B(spec['image']), 1 | os.O_CLOEXEC), 'open_tree ' + spec['image'])
        try:
            attr = struct.pack('QQQQ', 0x00100000, 0, 0, ns)  # MOUNT_ATTR_IDMAP
            ok(libc.syscall(442, tree, b'', 0x1000, attr, len(attr)), 'mount_setattr idmap')
            ok(libc.syscall(429, tree, b'', -100, B(lower), 4), 'move_mount ' + lower)
        finally:
            os.close(tree)
    finally:
        os.close(ns)
    opts = 'lowerdir=%s,upperdir=%s,workdir=%s' % (lower, upper, work)
    r = libc.mount(b'overlay', B(rootfs), b'overlay', ctypes.c_ulong(0), B(opts))
    e = ctypes.get_errno()
    libc.umount2(B(lower), 2)  # MNT_DETACH
    if r < 0: raise OSError(e, 'mount overlay on %s: %s' % (rootfs, os.strerror(e)))
for line in sys.stdin:
    try:
        handle(json.loads(line))
        answer = {'ok': True}
    except Exception as err:
        answer = {'error': 'layered root: %s' % err}
    sys.stdout.write(json.dumps(answer) + '\n'); sys.stdout.flush()
`;

/** One helper for the process: Python starts in ~40 ms, a mount takes ~2 ms. */
const helper = new Coprocess([LAYERS_PYTHON, '-I', '-S', '-u', '-c', LAYERS_SCRIPT]);
