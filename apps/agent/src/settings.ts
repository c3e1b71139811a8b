// Where this node keeps its slivers: the storage pool, the lxcpath, the sliver subnet. Given to
// `run` as flags, remembered in the state dir, so `image import` and later runs agree. Checked
// against one TypeBox schema when read; a bad value is refused with the setting's name.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parseSubnet } from '@planetlite/network';
import { atomicWrite } from './state.js';
import { defaultWatchdogSettings, validateWatchdogSettings, type WatchdogSettings } from './watchdog.js';

const Strict = { additionalProperties: false } as const;
const AbsolutePath = (what: string) => Type.String({ pattern: '^/[^\\n\\r\\0]*$', description: `an absolute path (${what})` });
const Path = (what: string) => Type.String({ pattern: '^[^\\n\\r\\0]+$', description: `a path (${what})` });
const Nullable = <T extends TSchema>(t: T, description: string) => Type.Union([t, Type.Null()], { description });

const WatchdogSchema = Type.Object(
  {
    enabled: Type.Boolean({ description: 'true or false' }),
    interval_ms: Type.Number({ minimum: 100, maximum: 60_000, description: 'a number of ms from 100 to 60000' }),
    budget_mb: Nullable(Type.Number({ minimum: 16, maximum: 1 << 24 }), 'MiB from 16 to 16777216, or null for the whole host'),
    warn_percent: Type.Number({ minimum: 1, maximum: 100, description: 'a percentage from 1 to 100' }),
    reset_percent: Type.Number({ minimum: 1, maximum: 100, description: 'a percentage from 1 to 100' }),
    hysteresis_percent: Type.Number({ minimum: 0, maximum: 50, description: 'a percentage from 0 to 50' }),
    cooldown_seconds: Type.Number({ minimum: 0, maximum: 86_400, description: 'seconds from 0 to 86400' }),
    psi_full_reset: Nullable(Type.Number({ minimum: 0.01, maximum: 100 }), 'a PSI full avg10 percentage from 0.01 to 100, or null for none'),
    // The freeze on memory pressure (pressure.ts).
    freeze_psi_some: Nullable(Type.Number({ minimum: 0.01, maximum: 100 }), 'a PSI some avg10 percentage from 0.01 to 100, or null to never freeze'),
    thaw_psi_some: Type.Number({ minimum: 0, maximum: 100, description: 'a PSI some avg10 percentage from 0 to 100' }),
    sliver_psi_min: Type.Number({ minimum: 0, maximum: 100, description: 'a PSI some avg10 percentage from 0 to 100' }),
    freeze_timeout_seconds: Type.Number({ minimum: 1, maximum: 86_400, description: 'seconds from 1 to 86400' }),
    freeze_strikes: Type.Integer({ minimum: 1, maximum: 100, description: 'a whole number from 1 to 100' }),
  },
  Strict,
);

export const AgentSettingsSchema = Type.Object(
  {
    /** A loop file the agent creates (default) or a block device. */
    pool: Path('a loop file or a block device'),
    pool_size: Type.String({ pattern: '^[0-9]+([KMGTPEZY](i?B)?|[kK]B?)?$', description: "a size as truncate takes it, e.g. '20G'" }),
    pool_mount: Path('where the pool is mounted'),
    lxc_path: AbsolutePath("the agent's own lxcpath"),
    sliver_subnet: Type.String({ description: 'IPv4 CIDR with a prefix of at most /30, e.g. 10.200.0.0/16' }),
    /** Network namespace the node's slivers live in; only for multi-node testbeds on one machine. */
    netns: Nullable(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }), 'a network namespace name, or null'),
    /** Upload cap when seeding images to other nodes, kbit/s; null: none. */
    image_upload_kbps: Nullable(Type.Integer({ minimum: 8 }), "whole kbit/s (at least 8), or null for no cap"),
    /** VM (kvm) slivers: 'auto' runs them when qemu is installed and boots a probe guest; 'off' never. */
    vm: Type.Union([Type.Literal('auto'), Type.Literal('off')], { description: "'auto' or 'off'" }),
    /** New container slivers' roots: 'layered' (an overlay over the image, idmapped: slivers of
     * one image share its page cache) where the host can, else snapshots; 'snapshot' always.
     * A root keeps the kind it was made with. */
    sliver_roots: Type.Union([Type.Literal('layered'), Type.Literal('snapshot')], { description: "'layered' or 'snapshot'" }),
    /** An image no sliver uses is removed from the node after this long, seconds. */
    image_gc_grace_seconds: Type.Integer({ minimum: 0, description: 'a whole number of seconds' }),
    /** The memory watchdog (watchdog.ts); fields missing from settings.json take their defaults. */
    watchdog: WatchdogSchema,
    /** The warm pool (warm-pool.ts): this many spare slivers of this image kept built and running,
     * handed out to new slivers of slices with that image. */
    warm_pool_image: Nullable(Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' }), 'an image name, or null for no warm pool'),
    warm_pool_size: Type.Integer({ minimum: 0, maximum: 1000, description: 'a whole number from 0 to 1000' }),
    /** The ssh front door (frontdoor/): 'auto' takes port 22 on the node's address when it is free
     * there, else 2222; a number takes that port; 'off' runs none. */
    front_door_port: Type.Union([Type.Literal('auto'), Type.Literal('off'), Type.Integer({ minimum: 1, maximum: 65_535 })], {
      description: "'auto', 'off' or a TCP port from 1 to 65535",
    }),
  },
  Strict,
);

export type AgentSettings = Static<typeof AgentSettingsSchema> & { watchdog: WatchdogSettings };

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
    sliver_roots: 'layered',
    front_door_port: 'auto',
    warm_pool_image: null,
    warm_pool_size: 0,
    watchdog: { ...defaultWatchdogSettings },
  };
}

/** Settings from settings.json and the flags over the defaults, checked, and written back. */
export function loadSettings(stateDir: string, overrides: SettingsOverrides = {}): AgentSettings {
  const file = join(stateDir, 'settings.json');
  const where = `in ${file} or the run flags`;
  let saved: SettingsOverrides = {};
  if (existsSync(file)) {
    try {
      saved = JSON.parse(readFileSync(file, 'utf8')) as SettingsOverrides;
    } catch (err) {
      throw new Error(`${file} is not JSON (${err instanceof Error ? err.message : String(err)}): fix or delete it`, { cause: err });
    }
    if (typeof saved !== 'object' || saved === null || Array.isArray(saved)) throw new Error(`${file} must hold a JSON object of settings`);
  }
  const defined = <T extends object>(o: T | undefined): Partial<T> => Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
  const base = defaultSettings(stateDir);
  const s = {
    ...base,
    ...saved,
    ...defined(overrides),
    watchdog: { ...base.watchdog, ...saved.watchdog, ...defined(overrides.watchdog) },
  } as AgentSettings;
  const problem = settingsProblem(s);
  if (problem) throw new Error(`${problem} (${where})`);
  atomicWrite(file, JSON.stringify(s, null, 2) + '\n', 0o600);
  return s;
}

/** The first bad setting, named as settings.json spells it, or null when all are good. */
export function settingsProblem(s: unknown): string | null {
  const first = Value.Errors(AgentSettingsSchema, s).First();
  if (first) {
    const name = first.path.slice(1).replaceAll('/', '.');
    const top = first.path.split('/').slice(1);
    // An object property that is not in the schema: Value reports it at its own path.
    const known = schemaAt(AgentSettingsSchema, top);
    if (!known) return `unknown setting ${name}`;
    return `setting ${name} must be ${known.description ?? first.message}, not ${JSON.stringify(first.value)}`;
  }
  const settings = s as AgentSettings;
  try {
    parseSubnet(settings.sliver_subnet);
  } catch (err) {
    return `setting sliver_subnet: ${err instanceof Error ? err.message : String(err)}`;
  }
  try {
    validateWatchdogSettings(settings.watchdog);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return null;
}

/** The schema of the property at path (a union's member path ends at the union). */
function schemaAt(schema: TSchema, path: string[]): TSchema | null {
  let at: TSchema = schema;
  for (const key of path) {
    const props = (at as { properties?: Record<string, TSchema> }).properties;
    if (!props) return at;
    const next = props[key];
    if (!next) return null;
    at = next;
  }
  return at;
}
