// Where this node keeps its slivers: the storage pool, the lxcpath, the sliver subnet. Given to
// `run` as flags, remembered in the state dir, so `image import` and later runs agree.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWrite } from './state.js';

export interface AgentSettings {
  /** A loop file the agent creates (default) or a block device. */
  pool: string;
  pool_size: string;
  pool_mount: string;
  lxc_path: string;
  sliver_subnet: string;
  /** Network namespace the node's slivers live in; only for multi-node testbeds on one machine. */
  netns: string | null;
}

export function defaultSettings(stateDir: string): AgentSettings {
  return {
    pool: join(stateDir, 'pool.img'),
    pool_size: '20G',
    pool_mount: join(stateDir, 'pool'),
    lxc_path: join(stateDir, 'lxc'),
    sliver_subnet: '10.200.0.0/16',
    netns: null,
  };
}

export function loadSettings(stateDir: string, overrides: Partial<AgentSettings> = {}): AgentSettings {
  const file = join(stateDir, 'settings.json');
  const saved = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Partial<AgentSettings>) : {};
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  const s = { ...defaultSettings(stateDir), ...saved, ...defined } as AgentSettings;
  atomicWrite(file, JSON.stringify(s, null, 2) + '\n', 0o600);
  return s;
}
