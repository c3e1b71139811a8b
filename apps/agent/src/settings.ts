// Where this node keeps its slivers: the storage pool, the lxcpath, the sliver subnet. Given to
// `run` as flags, remembered in the state dir, so `image import` and later runs agree.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWrite } from './state.js';
import { defaultWatchdogSettings, validateWatchdogSettings, type WatchdogSettings } from './watchdog.js';

export interface AgentSettings {
  /** A loop file the agent creates (default) or a block device. */
  pool: string;
  pool_size: string;
  pool_mount: string;
  lxc_path: string;
  sliver_subnet: string;
  /** Network namespace the node's slivers live in; only for multi-node testbeds on one machine. */
  netns: string | null;
  /** Upload cap when seeding images to other nodes, kbit/s; null: none. */
  image_upload_kbps: number | null;
  /** VM (kvm) slivers: 'auto' runs them when qemu is installed and boots a probe guest; 'off' never. */
  vm: 'auto' | 'off';
  /** An image no sliver uses is removed from the node after this long, seconds. */
  image_gc_grace_seconds: number;
  /** The memory watchdog (watchdog.ts); fields missing from settings.json take their defaults. */
  watchdog: WatchdogSettings;
}

/** Flags given to `run`: any setting, the watchdog's field by field. */
export type SettingsOverrides = Partial<Omit<AgentSettings, 'watchdog'>> & { watchdog?: Partial<WatchdogSettings> };

export function defaultSettings(stateDir: string): AgentSettings {
  return {
    pool: join(stateDir, 'pool.img'),
    pool_size: '20G',
    pool_mount: join(stateDir, 'pool'),
    lxc_path: join(stateDir, 'lxc'),
    sliver_subnet: '10.200.0.0/16',
    netns: null,
    image_upload_kbps: 20_000,
    image_gc_grace_seconds: 86_400,
    vm: 'auto',
    watchdog: { ...defaultWatchdogSettings },
  };
}

export function loadSettings(stateDir: string, overrides: SettingsOverrides = {}): AgentSettings {
  const file = join(stateDir, 'settings.json');
  const saved = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as SettingsOverrides) : {};
  const defined = <T extends object>(o: T | undefined): Partial<T> => Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
  const base = defaultSettings(stateDir);
  const s = {
    ...base,
    ...saved,
    ...defined(overrides),
    watchdog: { ...base.watchdog, ...saved.watchdog, ...defined(overrides.watchdog) },
  } as AgentSettings;
  try {
    if (s.vm !== 'auto' && s.vm !== 'off') throw new Error(`vm must be 'auto' or 'off', not ${JSON.stringify(s.vm)}`);
    if (!Number.isSafeInteger(s.image_gc_grace_seconds) || s.image_gc_grace_seconds < 0)
      throw new Error(`image_gc_grace_seconds must be a whole number of seconds, not ${JSON.stringify(s.image_gc_grace_seconds)}`);
    validateWatchdogSettings(s.watchdog);
  } catch (err) {
    throw new Error(`${err instanceof Error ? err.message : String(err)} (in ${file} or the run flags)`, { cause: err });
  }
  atomicWrite(file, JSON.stringify(s, null, 2) + '\n', 0o600);
  return s;
}
