// planetlite-agent image import: a local archive becomes a read-only base image in the pool.
import { ImageIndex, sha256File, type ImageRecord } from './records.js';
import { loadSettings, type SettingsOverrides } from '../settings.js';
import { StateDir, withStateLock } from '../state.js';
import { openStorage } from '../drivers.js';

export async function importImage(opts: { stateDir: string; name: string; file: string; settings?: SettingsOverrides }): Promise<ImageRecord> {
  const state = new StateDir(opts.stateDir);
  state.ensure();
  const settings = loadSettings(state.dir, opts.settings);
  const { sha256, size } = await sha256File(opts.file);
  const storage = await openStorage(settings, state.dir);
  await storage.importImage(sha256, opts.file);
  const rec: ImageRecord = { name: opts.name, sha256, size, imported_at: new Date().toISOString() };
  await withStateLock(state.dir, 'image import', async () => new ImageIndex(state.dir).put(rec));
  return rec;
}
