// Images on this node: image names as the registry uses them → the sha256 of the archive that
// the storage pool keeps as a read-only base. `planetlite-agent image import` fills it until
// images arrive over BitTorrent (issue 4).
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWrite } from '../state.js';

export interface ImageRecord {
  name: string;
  sha256: string;
  size: number;
  imported_at: string;
}

export class ImageIndex {
  readonly #file: string;

  constructor(stateDir: string) {
    this.#file = join(stateDir, 'images.json');
  }

  all(): ImageRecord[] {
    return existsSync(this.#file) ? (JSON.parse(readFileSync(this.#file, 'utf8')) as ImageRecord[]) : [];
  }

  byName(name: string): ImageRecord | undefined {
    return this.all().find((i) => i.name === name);
  }

  remove(name: string): void {
    atomicWrite(this.#file, JSON.stringify(this.all().filter((i) => i.name !== name), null, 1) + '\n', 0o644);
  }

  put(rec: ImageRecord): void {
    const rest = this.all().filter((i) => i.name !== rec.name);
    atomicWrite(this.#file, JSON.stringify([...rest, rec], null, 1) + '\n', 0o644);
  }
}

export async function sha256File(file: string): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), size };
}
