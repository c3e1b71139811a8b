// PGlite's node filesystem with working flushes, so that a commit the embedded database
// acknowledges is on disk, not only in the page cache.
//
// PGlite mounts Emscripten's NODEFS over the real data dir, and Emscripten answers both of the
// calls PostgreSQL flushes with without doing anything: fsync() reaches `fd_sync`, which asks the
// stream for an fsync that NODEFS does not have, and fdatasync() (PostgreSQL's default
// wal_sync_method on Linux, so every commit) reaches `__syscall_fdatasync`, an empty stub. We
// replace those two imports before the wasm module is instantiated with ones that pass the flush
// to the kernel on the real file descriptor (a directory, which NODEFS opens without one, is
// opened and flushed by its real path). Nothing else changes: PostgreSQL already asks for every
// flush it needs (WAL at commit, data files at checkpoint before WAL is recycled, directories
// after creating or renaming files), so making them real is the whole fix.
import { closeSync, fdatasyncSync, fsyncSync, openSync, constants as fsConstants } from 'node:fs';
import { NodeFS } from '@electric-sql/pglite/nodefs';

/** The parts of Emscripten's FS the flush needs. */
interface EmscriptenStream {
  nfd?: number;
  node: { mount: { type: unknown }; mode: number };
}
interface EmscriptenModule {
  FS: {
    getStream(fd: number): EmscriptenStream | undefined;
    isDir(mode: number): boolean;
    filesystems: { NODEFS: { realPath(node: unknown): string; tryFSOperation<T>(f: () => T): T } };
    ErrnoError: new (errno: number) => { errno: number };
  };
}
type WasmImports = Record<string, unknown>;
type InstantiateWasm = (imports: Record<string, WasmImports>, done: (instance: unknown, module: unknown) => void) => unknown;

const EBADF = 8; // Emscripten's (WASI's) errno numbering

/** Counts of flushes passed to the kernel, for tests and benchmarks. */
export interface FlushCounts {
  fsync: number;
  fdatasync: number;
}

export class DurableNodeFS extends NodeFS {
  readonly flushes: FlushCounts = { fsync: 0, fdatasync: 0 };

  override async init(pg: Parameters<NodeFS['init']>[0], opts: Parameters<NodeFS['init']>[1]): ReturnType<NodeFS['init']> {
    const { emscriptenOpts } = await super.init(pg, opts);
    let mod: EmscriptenModule | undefined;
    const flush = (fd: number, dataOnly: boolean): number => {
      const stream = mod?.FS.getStream(fd);
      if (!mod || !stream) return EBADF;
      const { FS } = mod;
      const nodefs = FS.filesystems.NODEFS;
      try {
        if (stream.nfd !== undefined) {
          nodefs.tryFSOperation(() => (dataOnly ? fdatasyncSync : fsyncSync)(stream.nfd as number));
        } else if (stream.node.mount.type === nodefs && FS.isDir(stream.node.mode)) {
          nodefs.tryFSOperation(() => {
            const dirFd = openSync(nodefs.realPath(stream.node), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
            try {
              fsyncSync(dirFd);
            } finally {
              closeSync(dirFd);
            }
          });
        } else {
          return 0; // not a file on disk (pipe, device, memory fs): nothing to flush
        }
      } catch (err) {
        if (err instanceof FS.ErrnoError) return (err as { errno: number }).errno;
        throw err;
      }
      this.flushes[dataOnly ? 'fdatasync' : 'fsync']++;
      return 0;
    };
    const instantiate = emscriptenOpts.instantiateWasm as InstantiateWasm | undefined;
    if (!instantiate) throw new Error('PGlite no longer instantiates its wasm through instantiateWasm: the durable file layer needs updating');
    return {
      emscriptenOpts: {
        ...emscriptenOpts,
        instantiateWasm: (imports: Record<string, WasmImports>, done: (instance: unknown, module: unknown) => void) => {
          const env = imports.env as WasmImports; // the same object serves as wasi_snapshot_preview1
          if (typeof env.fd_sync !== 'function' || typeof env.__syscall_fdatasync !== 'function') {
            throw new Error('PGlite no longer imports fd_sync and __syscall_fdatasync: the durable file layer needs updating');
          }
          env.fd_sync = (fd: number) => flush(fd, false); // WASI: returns errno
          env.__syscall_fdatasync = (fd: number) => -flush(fd, true); // syscall: returns -errno
          return instantiate(imports, done);
        },
        preRun: [...(emscriptenOpts.preRun ?? []), (m: EmscriptenModule) => void (mod = m)],
      },
    } as Awaited<ReturnType<NodeFS['init']>>;
  }
}
