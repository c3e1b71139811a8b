// The CLI end to end against a real registry (in-process, embedded PGlite in memory).
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlanetLiteClient, type EnrollmentToken, type Event, type Image, type Node, type Site, type Slice, type Sliver, type SliverConsole, type SshKey, type UsageHistory, type User } from '@planetlite/api';
// Deliberately a static import: if the registry is not built this file fails loudly instead of skipping.
import { startRegistry } from '@planetlite/registry';
import { runCli } from './cli.js';
import type { Io } from './io.js';

const run = promisify(execFile);
const ADMIN_EMAIL = 'admin@planetlite.test';
const ADMIN_PASSWORD = 'admin-password-123';

let registry: { url: string; ca: string | null; caPin: string | null; close(): Promise<void> };
let dir: string;
let adminConfig: string;
let piConfig: string;
let piPassword = '';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], opts: { config?: string; env?: Record<string, string>; stdin?: string; tty?: boolean; stdinTty?: boolean } = {}): Promise<Result> {
  let stdout = '';
  let stderr = '';
  const io: Io = {
    stdout: { write: (s: string) => (stdout += s), isTTY: opts.tty },
    stderr: { write: (s: string) => (stderr += s) },
    env: { HOME: dir, PLANETLITE_CONFIG: opts.config ?? join(dir, 'none.json'), ...opts.env },
    stdin: opts.stdin === undefined ? undefined : Object.assign(Readable.from([opts.stdin]), opts.stdinTty ? { isTTY: true } : {}),
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

/** Runs and expects success; the message on failure shows what the CLI said. */
async function ok(args: string[], opts: Parameters<typeof cli>[1] = {}): Promise<string> {
  const r = await cli(args, opts);
  expect(r, `planetlite ${args.join(' ')}`).toMatchObject({ code: 0, stderr: '' });
  return r.stdout;
}

async function okJson<T>(args: string[], opts: Parameters<typeof cli>[1] = {}): Promise<T> {
  return JSON.parse(await ok(['--json', ...args], opts)) as T;
}

/** One "planetlite: ..." line, exit 1, nothing on stdout, and no stack trace. */
function expectOneLineError(r: Result, text: string | RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr.endsWith('\n')).toBe(true);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^planetlite: /);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  if (typeof text === 'string') expect(r.stderr).toContain(text);
  else expect(r.stderr).toMatch(text);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'planetlite-cli-e2e-'));
  adminConfig = join(dir, 'admin', 'config.json');
  piConfig = join(dir, 'pi', 'config.json');
  registry = await startRegistry({ listen: '127.0.0.1:0', adminEmail: ADMIN_EMAIL, adminPassword: ADMIN_PASSWORD, logLevel: 'warn' });
}, 120_000);

afterAll(async () => {
  await registry?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('planetlite against a live registry', () => {
  // These run first: nothing in this process trusts the registry's own CA yet.
  it('shows an unknown CA and refuses it without a terminal or a pin; a wrong pin is refused too', async () => {
    const login = ['--registry', registry.url, 'login', '--email', ADMIN_EMAIL, '--password', ADMIN_PASSWORD];
    const r = await cli(login, { config: join(dir, 'untrusted.json') });
    expectOneLineError(r, `has an unknown CA ${registry.caPin}: check it with the registry's admin, then pass --ca-pin ${registry.caPin}`);
    const wrong = await cli([...login, '--ca-pin', `sha256:${'0'.repeat(64)}`], { config: join(dir, 'untrusted.json') });
    expectOneLineError(wrong, `presents CA ${registry.caPin}, not sha256:${'0'.repeat(64)}: refusing it`);
    const declined = await cli(login, { config: join(dir, 'untrusted.json'), stdin: 'n\n', stdinTty: true });
    expect(declined.stderr).toContain(`has a CA this machine does not know:\n  ${registry.caPin}\n`);
    expect(declined.stderr).toMatch(/planetlite: not trusted: nothing was saved\n$/);
    await expect(stat(join(dir, 'untrusted.json'))).rejects.toThrow();
  });

  it('trusts a CA the user accepts at the prompt, and remembers it', async () => {
    const config = join(dir, 'prompted.json');
    const r = await cli(['--registry', registry.url, 'login', '--email', ADMIN_EMAIL, '--password', ADMIN_PASSWORD], { config, stdin: 'yes\n', stdinTty: true });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`logged in to ${registry.url} (CA ${registry.caPin}) as ${ADMIN_EMAIL}`);
    const saved = JSON.parse(await readFile(config, 'utf8')) as { known_registries: Record<string, { ca_pin: string }> };
    expect(saved.known_registries[new URL(registry.url).origin]?.ca_pin).toBe(registry.caPin);
  });

  it('logs the admin in with --ca-pin and saves the token with mode 0600', async () => {
    const out = await ok(['--registry', registry.url, 'login', '--email', ADMIN_EMAIL, '--password', ADMIN_PASSWORD, '--ca-pin', registry.caPin!], { config: adminConfig });
    expect(out).toContain(`logged in to ${registry.url} (CA ${registry.caPin}) as ${ADMIN_EMAIL}`);
    expect((await stat(adminConfig)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(await readFile(adminConfig, 'utf8')) as Record<string, string>;
    expect(saved).toMatchObject({ registry: registry.url, email: ADMIN_EMAIL });
    expect(saved.token).toBeTruthy();
    expect(Date.parse(saved.expires_at ?? '')).toBeGreaterThan(Date.now());

    const me = await okJson<User>(['whoami'], { config: adminConfig });
    expect(me.email).toBe(ADMIN_EMAIL);
    expect(me.roles).toContain('admin');
  });

  it('rejects a wrong password with the API error code', async () => {
    const r = await cli(['--registry', registry.url, 'login', '--email', ADMIN_EMAIL], { config: join(dir, 'bad.json'), env: { PLANETLITE_PASSWORD: 'wrong-password' } });
    expectOneLineError(r, 'email or password is wrong (invalid_credentials)');
  });

  it('creates and lists a site', async () => {
    const site = await okJson<Site>(['site', 'create', 'princeton', '--name', 'Princeton University', '--max-slices', '1', '--max-slivers', '5'], { config: adminConfig });
    expect(site).toMatchObject({ login_base: 'princeton', name: 'Princeton University', max_slices: 1, max_slivers: 5, enabled: true });
    const table = await ok(['site', 'ls'], { config: adminConfig });
    const lines = table.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^LOGIN_BASE\s+NAME\s+MAX_SLICES\s+MAX_SLIVERS\s+ENABLED$/);
    expect(lines.some((l) => /^princeton\s+Princeton University\s+1\s+5\s+yes$/.test(l))).toBe(true);
    expect(await ok(['site', 'show', 'princeton'], { config: adminConfig })).toMatch(/^login_base:\s+princeton$/m);
    const updated = await okJson<Site>(['site', 'update', 'princeton', '--max-slivers', '6'], { config: adminConfig });
    expect(updated.max_slivers).toBe(6);
  });

  it('creates a pi with a generated password, who then logs in with it on stdin', async () => {
    const out = await ok(['user', 'create', '--email', 'pi@princeton.edu', '--name', 'Pat Investigator', '--site', 'princeton', '--role', 'pi', '--role', 'user'], { config: adminConfig });
    expect(out).toMatch(/^roles:\s+pi, user$/m);
    const m = /^password:\s+(\S+) \(generated/m.exec(out);
    expect(m, out).not.toBeNull();
    piPassword = m![1]!;

    const users = await okJson<User[]>(['user', 'ls', '--site', 'princeton'], { config: adminConfig });
    expect(users.map((u) => u.email)).toContain('pi@princeton.edu');

    const login = await ok(['--registry', registry.url, 'login', '--email', 'pi@princeton.edu', '--ca-pin', registry.caPin!], { config: piConfig, stdin: `${piPassword}\n` });
    expect(login).toContain('as pi@princeton.edu');
    const me = await okJson<User>(['user', 'me'], { config: piConfig });
    expect(me).toMatchObject({ email: 'pi@princeton.edu', site: 'princeton' });
  });

  it('adds, lists and removes a real ed25519 key', async () => {
    const keyPath = join(dir, 'key');
    await run('ssh-keygen', ['-t', 'ed25519', '-N', '', '-C', 'pi@laptop', '-f', keyPath, '-q']);
    const { stdout: fp } = await run('ssh-keygen', ['-l', '-f', `${keyPath}.pub`]);
    const fingerprint = fp.split(' ')[1];

    // The private half is refused locally with a pointer to the .pub.
    expectOneLineError(await cli(['key', 'add', keyPath], { config: piConfig }), 'is a private key');

    const added = await okJson<SshKey>(['key', 'add', `${keyPath}.pub`], { config: piConfig });
    expect(added).toMatchObject({ type: 'ssh-ed25519', fingerprint });

    const dup = await cli(['key', 'add', (await readFile(`${keyPath}.pub`, 'utf8')).trim()], { config: piConfig });
    expectOneLineError(dup, /\(already_exists\)$/m);

    const keys = await okJson<SshKey[]>(['key', 'ls'], { config: piConfig });
    expect(keys.map((k) => k.id)).toEqual([added.id]);
    expect(await ok(['key', 'ls'], { config: piConfig })).toContain(fingerprint);

    // The admin sees the same keys by email.
    expect((await okJson<SshKey[]>(['key', 'ls', '--user', 'pi@princeton.edu'], { config: adminConfig })).length).toBe(1);

    expect(await ok(['key', 'rm', added.id], { config: piConfig })).toContain(`removed key ${added.id}`);
    expect(await okJson<SshKey[]>(['key', 'ls'], { config: piConfig })).toEqual([]);
    await ok(['key', 'add', `${keyPath}.pub`], { config: piConfig });
  });

  it('creates, shows, lists and renews a slice', async () => {
    await ok(['slice', 'create', 'princeton_codeen', '--description', 'CoDeeN content distribution', '--url', 'https://codeen.example/', '--memory-mb', '256'], { config: piConfig });
    const slice = await okJson<Slice>(['slice', 'show', 'princeton_codeen'], { config: piConfig });
    expect(slice).toMatchObject({
      name: 'princeton_codeen',
      site: 'princeton',
      description: 'CoDeeN content distribution',
      url: 'https://codeen.example/',
      kind: 'lxc',
      state: 'active',
    });
    expect(slice.image).toEqual(expect.any(String));
    expect(slice.resources.memory_mb).toBe(256);
    expect(slice.members.map((m) => m.email)).toEqual(['pi@princeton.edu']);
    expect(Date.parse(slice.expires_at)).toBeGreaterThan(Date.now());

    const human = await ok(['slice', 'show', 'princeton_codeen'], { config: piConfig });
    expect(human).toMatch(/^expires_at:\s+\S+ \(in \d+ days?\)$/m);

    const table = (await ok(['slice', 'ls'], { config: piConfig })).trimEnd().split('\n');
    expect(table[0]).toMatch(/^NAME\s+SITE\s+KIND\s+IMAGE\s+MEMBERS\s+EXPIRES_AT$/);
    expect(table.some((l) => /^princeton_codeen\s+princeton\s+lxc\s+\S+\s+1\s+\S+$/.test(l))).toBe(true);

    const before = Date.now();
    const renewed = await okJson<Slice>(['slice', 'renew', 'princeton_codeen', '--days', '30'], { config: piConfig });
    const expires = Date.parse(renewed.expires_at);
    expect(expires).toBeGreaterThanOrEqual(before + 30 * 86_400_000 - 5_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 30 * 86_400_000 + 5_000);

    const at = '2031-01-01T00:00:00Z';
    const tooFar = await cli(['slice', 'renew', 'princeton_codeen', '--expires-at', at], { config: piConfig });
    expectOneLineError(tooFar, /\(renewal_refused\)$/m);

    const updated = await okJson<Slice>(['slice', 'update', 'princeton_codeen', '--url', 'https://codeen.example/v2'], { config: piConfig });
    expect(updated.url).toBe('https://codeen.example/v2');
    expect(updated.description).toBe(renewed.description);
    const nothing = await cli(['slice', 'update', 'princeton_codeen'], { config: piConfig });
    expectOneLineError(nothing, /needs --description, --url, --memory-reset or a resource/);
    const resized = await okJson<Slice>(['slice', 'update', 'princeton_codeen', '--memory-mb', '384', '--cpu-shares', '512'], { config: piConfig });
    expect(resized.resources).toMatchObject({ memory_mb: 384, cpu_shares: 512 });
    const tooSmall = await cli(['slice', 'update', 'princeton_codeen', '--memory-mb', '4'], { config: piConfig });
    expect(tooSmall.code).toBe(2); // a usage error, refused before any request
    expect(tooSmall.stderr).toMatch(/memory-mb/);
    expect((await okJson<Slice>(['slice', 'show', 'princeton_codeen'], { config: piConfig })).resources.memory_mb).toBe(384);
    expect(updated.memory_reset).toBe('restart');
    const restore = await okJson<Slice>(['slice', 'update', 'princeton_codeen', '--memory-reset', 'restore'], { config: piConfig });
    expect(restore.memory_reset).toBe('restore');
    expect((await cli(['slice', 'update', 'princeton_codeen', '--memory-reset', 'reboot'], { config: piConfig })).code).toBe(2);
  });

  it('answers bad input, quotas and permissions with one line and exit 1', async () => {
    const badName = await cli(['slice', 'create', 'Princeton-Codeen', '--description', 'd', '--url', 'u'], { config: piConfig });
    expectOneLineError(badName, /body\.name .*\(invalid_request\)$/m);

    const quota = await cli(['slice', 'create', 'princeton_second', '--description', 'd', '--url', 'u'], { config: piConfig });
    expect(quota.stderr).toBe('planetlite: site princeton may have at most 1 slices (slice_quota_exceeded)\n');
    expect(quota.code).toBe(1);

    const forbidden = await cli(['site', 'create', 'mit', '--name', 'MIT', '--max-slices', '1', '--max-slivers', '1'], { config: piConfig });
    expectOneLineError(forbidden, /\(forbidden\)$/m);

    expectOneLineError(await cli(['slice', 'show', 'princeton_nothere'], { config: piConfig }), /\(not_found\)$/m);
  });

  it('adds and removes slice members by email', async () => {
    const member = await okJson<User>(['user', 'create', '--email', 'bob@princeton.edu', '--name', 'Bob', '--site', 'princeton', '--password', 'bob-password-1'], { config: piConfig });
    expect(member.roles).toEqual(['user']);
    const withBob = await okJson<Slice>(['slice', 'members', 'add', 'princeton_codeen', 'bob@princeton.edu'], { config: piConfig });
    expect(withBob.members.map((m) => m.email).sort()).toEqual(['bob@princeton.edu', 'pi@princeton.edu']);
    const without = await okJson<Slice>(['slice', 'members', 'rm', 'princeton_codeen', 'bob@princeton.edu'], { config: piConfig });
    expect(without.members.map((m) => m.email)).toEqual(['pi@princeton.edu']);
  });

  it('makes an enrollment token, and a sliver on the enrolled node prints its ssh command', async () => {
    const human = await ok(['site', 'token', 'princeton', '--ttl', '600'], { config: piConfig });
    expect(human).toMatch(new RegExp(`planetlite-agent enroll --registry ${registry.url} --token \\S+ --ca-pin ${registry.caPin} --address NODE_ADDRESS --state-dir `));

    const token = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    const enrolled = await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: token.token,
      hostname: 'node1.princeton.edu',
      address: '192.0.2.10',
      capabilities: { lxc: true, kvm: false, kvm_accel: null },
      resources: { cpus: 2, memory_mb: 2048, disk_mb: 20000 },
    });

    const nodes = await ok(['node', 'ls'], { config: piConfig });
    expect(nodes).toContain('node1.princeton.edu');

    // By hostname; no agent runs, so the sliver stays pending.
    const sliver = await okJson<Sliver>(['sliver', 'create', 'princeton_codeen', 'node1.princeton.edu'], { config: piConfig });
    expect(sliver).toMatchObject({ slice: 'princeton_codeen', node_id: enrolled.node_id });
    expect(sliver.ssh.port).toBe(sliver.ports.first);

    const shown = await ok(['sliver', 'show', sliver.id], { config: piConfig });
    expect(shown).toMatch(new RegExp(`^ssh:\\s+ssh -p ${sliver.ssh.port} princeton_codeen@192\\.0\\.2\\.10$`, 'm'));
    expect(await ok(['sliver', 'ls', 'princeton_codeen'], { config: piConfig })).toContain(`ssh -p ${sliver.ssh.port} princeton_codeen@192.0.2.10`);

    const dup = await cli(['sliver', 'create', 'princeton_codeen', enrolled.node_id, '--wait', '--timeout', '1'], { config: piConfig });
    expectOneLineError(dup, /\(\w+\)$/m);

    const deleting = await okJson<Sliver>(['sliver', 'delete', sliver.id], { config: piConfig });
    expect(deleting.state).toBe('deleting');
  });

  it('sliver stats shows the latest usage a node reported and the sampled history', async () => {
    const token = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    const enrolled = await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: token.token,
      hostname: 'node2.princeton.edu',
      address: '192.0.2.11',
      capabilities: { lxc: true, kvm: false, kvm_accel: null },
      resources: { cpus: 2, memory_mb: 2048, disk_mb: 20000 },
    });
    const sliver = await okJson<Sliver>(['sliver', 'create', 'princeton_codeen', 'node2.princeton.edu'], { config: piConfig });
    const node = new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key });
    const usage = { memory_bytes: 64 << 20, disk_bytes: 300 << 20, net_rx_bytes: 2048, net_tx_bytes: 4096 };
    await node.putObservedState(enrolled.node_id, { slivers: [{ id: sliver.id, state: 'running', cpu_seconds: 1.5, ...usage }] });
    // Within the same sampling interval: the latest figures move, the history keeps the first.
    await node.putObservedState(enrolled.node_id, { slivers: [{ id: sliver.id, state: 'running', cpu_seconds: 7.25, ...usage }] });

    const human = await ok(['sliver', 'stats', sliver.id], { config: piConfig });
    expect(human).toMatch(/^cpu:\s+7\.3 s since start$/m);
    expect(human).toMatch(/^disk:\s+300 MiB$/m);
    expect(human).toMatch(/^net_tx:\s+4\.0 KiB since start$/m);
    const table = human.trimEnd().split('\n').slice(human.trimEnd().split('\n').findIndex((l) => l.startsWith('AT ')));
    expect(table[0]).toMatch(/^AT\s+CPU_%\s+MEMORY\s+DISK\s+RX_KBIT\/S\s+TX_KBIT\/S$/);
    expect(table).toHaveLength(2);
    expect(table[1]!.split(/\s{2,}/).slice(1)).toEqual(['-', '64 MiB', '300 MiB', '-', '-']);

    const raw = await okJson<UsageHistory>(['sliver', 'stats', sliver.id, '--since', '24h'], { config: piConfig });
    expect(raw).toMatchObject({ sliver: sliver.id, interval_seconds: 60, truncated: false });
    expect(raw.samples).toEqual([{ at: expect.any(String), cpu_seconds: 1.5, ...usage }]);
    expect(Date.parse(raw.until) - Date.parse(raw.since)).toBeGreaterThan(23.9 * 3600_000);
    // The global --json may come after the command too.
    expect((await okJson<UsageHistory>(['sliver', 'stats', sliver.id], { config: piConfig })).samples).toHaveLength(1);
    expect(JSON.parse(await ok(['sliver', 'stats', sliver.id, '--json', '--since', '30m'], { config: piConfig })).sliver).toBe(sliver.id);

    const after = new Date(Date.parse(raw.samples[0]!.at) + 1).toISOString();
    const later = await ok(['sliver', 'stats', sliver.id, '--since', after], { config: piConfig });
    expect(later).toMatch(/^no usage samples since /m);
    for (const since of ['last week', new Date(Date.now() + 3600_000).toISOString()]) {
      const bad = await cli(['sliver', 'stats', sliver.id, '--since', since], { config: piConfig });
      expect(bad.code, since).toBe(2);
      expect(bad.stderr, since).toMatch(/^planetlite: option '--since <when>' argument .* is invalid\. must (be|not be in the future).* \(add --help for usage\)\n$/);
    }
    expectOneLineError(await cli(['sliver', 'stats', '00000000-0000-4000-8000-000000000000'], { config: piConfig }), /\(not_found\)$/m);
  });

  it('sliver log prints the console log the node uploaded, and says when there is none yet', async () => {
    const token = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    const enrolled = await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: token.token,
      hostname: 'node3.princeton.edu',
      address: '192.0.2.12',
      capabilities: { lxc: true, kvm: true, kvm_accel: 'tcg' },
      resources: { cpus: 2, memory_mb: 2048, disk_mb: 20000 },
    });
    const sliver = await okJson<Sliver>(['sliver', 'create', 'princeton_codeen', 'node3.princeton.edu'], { config: piConfig });

    expectOneLineError(
      await cli(['sliver', 'log', sliver.id], { config: piConfig }),
      `planetlite: no console log for sliver ${sliver.id} yet: the node uploads it once the sliver has started (not_found)`,
    );

    const text = '[    0.000000] Linux version 6.1.0\r\n[\x1b[0;32m  OK  \x1b[0m] Started ssh.service\r\n\x1b[H\x1b[2JDebian GNU/Linux 12 ttyS0\r\n\r\nlogin: ';
    const node = new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key });
    const receipt = await node.putSliverConsole(enrolled.node_id, sliver.id, text);
    expect(receipt).toEqual({ sliver_id: sliver.id, bytes: Buffer.byteLength(text), updated_at: expect.any(String) });

    // Piped: the text as uploaded; on a terminal: no screen clearing, colours kept, CRLF folded.
    expect(await ok(['sliver', 'log', sliver.id], { config: piConfig })).toBe(`${text}\n`);
    expect(await ok(['sliver', 'log', sliver.id], { config: piConfig, tty: true })).toBe(
      '[    0.000000] Linux version 6.1.0\n[\x1b[0;32m  OK  \x1b[0m] Started ssh.service\nDebian GNU/Linux 12 ttyS0\n\nlogin: \x1b[0m\n',
    );
    expect(await ok(['sliver', 'log', sliver.id, '--raw'], { config: piConfig, tty: true })).toBe(`${text}\n`);
    const raw = await okJson<SliverConsole>(['sliver', 'log', sliver.id], { config: piConfig });
    expect(raw).toEqual({ sliver_id: sliver.id, text, updated_at: receipt.updated_at });

    const help = await ok(['sliver', 'log', '--help']);
    expect(help).toMatch(/^Usage: planetlite sliver log \[options\] <id>$/m);
    expect(help).toContain("console log (a VM's serial console)");
    expect(await ok(['sliver', '--help'])).toMatch(/^\s+log \[options\] <id>\s+print the tail of a sliver's console log/m);
    expectOneLineError(await cli(['sliver', 'log', '00000000-0000-4000-8000-000000000000'], { config: piConfig }), /not found \(not_found\)$/m);
    expectOneLineError(await cli(['sliver', 'log', sliver.id], { config: adminConfig, env: { PLANETLITE_TOKEN: enrolled.node_key } }), /\(forbidden\)$/m);
  });

  it('lists images and events', async () => {
    expect(Array.isArray(await okJson<unknown[]>(['image', 'ls'], { config: piConfig }))).toBe(true);
    const events = await okJson<Event[]>(['events', '--slice', 'princeton_codeen'], { config: piConfig });
    expect(events.map((e) => e.type)).toContain('slice.created');
    const table = await ok(['events', '--slice', 'princeton_codeen', '--type', 'slice.created'], { config: piConfig });
    expect(table.split('\n')[0]).toMatch(/^ID\s+AT\s+TYPE\s+SLICE\s+NODE\s+DATA$/);
  });

  it('image push uploads an archive as admin, which image ls and image show then list', async () => {
    const file = join(dir, 'tiny.tar.gz');
    const data = Buffer.concat([Buffer.from([0x1f, 0x8b]), randomBytes(300_000)]);
    await writeFile(file, data);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const img = await okJson<Image>(['image', 'push', file, '--name', 'tiny-2026.11', '--kinds', 'lxc,kvm', '--image-version', '2026.11'], { config: adminConfig });
    expect(img).toMatchObject({ name: 'tiny-2026.11', version: '2026.11', arch: 'x86_64', kinds: ['lxc', 'kvm'], sha256, size: data.length });
    expect(img.magnet).toMatch(/^magnet:\?xt=urn:btih:[0-9a-f]{40}&/);
    expect(img.web_seed).toBe(`${registry.url}/v1/images/tiny-2026.11/archive`);
    expect(Buffer.from(await (await fetch(img.web_seed!)).arrayBuffer()).equals(data)).toBe(true);

    const list = await okJson<Image[]>(['image', 'ls'], { config: piConfig });
    expect(list.find((i) => i.name === 'tiny-2026.11')).toEqual(img);
    const table = (await ok(['image', 'ls'], { config: piConfig })).split('\n');
    expect(table[0]).toMatch(/^NAME\s+VERSION\s+ARCH\s+KINDS\s+SIZE\s+SHA256\s+CREATED_AT$/);
    expect(table.some((l) => /^tiny-2026\.11\s+2026\.11\s+x86_64\s+lxc,kvm\s/.test(l))).toBe(true);
    expect(await ok(['image', 'show', 'tiny-2026.11'], { config: piConfig })).toMatch(new RegExp(`^sha256:\\s+${sha256}$`, 'm'));

    // Immutable: the same name again is refused; only an admin may push.
    expectOneLineError(await cli(['image', 'push', file, '--name', 'tiny-2026.11'], { config: adminConfig }), /\(already_exists\)$/m);
    expectOneLineError(await cli(['image', 'push', file, '--name', 'tiny-pi'], { config: piConfig }), /\(forbidden\)$/m);
    expectOneLineError(await cli(['image', 'push', join(dir, 'missing.tar'), '--name', 'x1'], { config: adminConfig }), 'is not a readable file');
  });

  it('image build runs a recipe of infra/images, and with --push publishes what it built', async () => {
    const out = join(dir, 'built', 'tiny.tar');
    const built = await okJson<{ recipe: string; file: string; size: number }>(['image', 'build', 'tiny', '--out', out], { config: adminConfig });
    expect(built).toMatchObject({ recipe: 'tiny', file: out });
    expect(built.size).toBe((await stat(out)).size);
    const pushed = await okJson<Image>(['image', 'build', 'tiny', '--out', out, '--push', '--name', 'tiny-built', '--kinds', 'lxc,kvm'], { config: adminConfig });
    // --push uploads the archive this build wrote (it replaced the first one at the same path).
    expect(pushed).toMatchObject({ name: 'tiny-built', kinds: ['lxc', 'kvm'], size: (await stat(out)).size });
    expect(pushed.sha256).toBe(createHash('sha256').update(await readFile(out)).digest('hex'));
    expectOneLineError(await cli(['image', 'build', 'nosuch'], { config: adminConfig }), "no image recipe 'nosuch': the recipes are debian12, tiny");
  });

  it('node drain, undrain and decommission (asking first, or --yes), shown in node ls and node show', async () => {
    const token = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    const enrolled = await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: token.token, hostname: 'node9.princeton.edu', address: '192.0.2.19',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 2048, disk_mb: 20000 },
    });
    expect(await ok(['node', 'drain', 'node9.princeton.edu'], { config: piConfig })).toContain('node node9.princeton.edu is draining: it gets no new slivers');
    expect(await ok(['node', 'show', 'node9'], { config: piConfig })).toMatch(/^admin_state:\s+draining$/m);
    expect(await ok(['node', 'ls'], { config: piConfig })).toMatch(/node9\.princeton\.edu .*draining/);
    expectOneLineError(await cli(['sliver', 'create', 'princeton_codeen', 'node9.princeton.edu'], { config: piConfig }), /node node9\.princeton\.edu .* is draining.*\(node_draining\)$/m);
    expect((await okJson<Node>(['node', 'undrain', enrolled.node_id], { config: piConfig })).admin_state).toBe('active');

    // Decommission asks first; without a terminal it wants --yes, and "no" changes nothing.
    expectOneLineError(await cli(['node', 'decommission', 'node9.princeton.edu'], { config: piConfig }), 'run again with --yes to do it');
    const declined = await cli(['node', 'decommission', 'node9.princeton.edu'], { config: piConfig, stdin: 'n\n', stdinTty: true });
    expect(declined.code).toBe(1);
    expect(declined.stderr).toContain('Decommission node node9.princeton.edu? Every sliver on it is torn down and its key revoked. [y/N] ');
    expect((await okJson<Node>(['node', 'show', 'node9'], { config: piConfig })).admin_state).toBe('active');
    const said = await cli(['node', 'decommission', 'node9.princeton.edu'], { config: piConfig, stdin: 'y\n', stdinTty: true });
    expect(said.code).toBe(0);
    // No slivers there: decommissioned at once, key revoked, gone from the list but still shown.
    expect(said.stdout).toContain('node node9.princeton.edu is decommissioned: its key is revoked');
    expect(await ok(['node', 'ls'], { config: piConfig })).not.toContain('node9.princeton.edu');
    expect(await ok(['node', 'ls', '--all'], { config: piConfig })).toMatch(/node9\.princeton\.edu .*decommissioned/);
    const gone = await okJson<Node>(['node', 'decommission', 'node9', '--yes'], { config: piConfig });
    expect(gone).toMatchObject({ id: enrolled.node_id, admin_state: 'decommissioned', key_revoked_at: expect.any(String) });
    const nodeClient = new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key });
    await expect(nodeClient.getNode(enrolled.node_id)).rejects.toMatchObject({ status: 401, code: 'node_key_revoked' });
    expectOneLineError(await cli(['node', 'drain', 'node9'], { config: piConfig }), /is decommissioned; enroll it again to bring it back \(node_decommissioned\)$/m);
  });

  it('node location sets, shows (also --json) and clears where a node stands; bad values are one line', async () => {
    const token = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: token.token, hostname: 'node7.princeton.edu', address: '192.0.2.17',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 2048, disk_mb: 20000 },
    });
    expect(await ok(['node', 'location', 'node7', '--city', 'Princeton, NJ', '--lat', '40.3573', '--lon', '-74.6672'], { config: piConfig }))
      .toBe('node node7.princeton.edu is at Princeton, NJ (40.3573, -74.6672)\n');
    expect(await ok(['node', 'show', 'node7'], { config: piConfig })).toMatch(/^location:\s+Princeton, NJ \(40\.3573, -74\.6672\)$/m);
    expect((await okJson<Node>(['node', 'show', 'node7.princeton.edu'], { config: piConfig })).location).toEqual({ city: 'Princeton, NJ', latitude: 40.3573, longitude: -74.6672 });
    for (const [args, said] of [
      [['--city', 'X', '--lat', '91', '--lon', '0'], /--lat.*must be between -90 and 90/],
      [['--city', 'X', '--lat', '0', '--lon', '-180.5'], /--lon.*must be between -180 and 180/],
      [['--city', 'X', '--lat', 'north', '--lon', '0'], /--lat.*must be a decimal number/],
      [['--city', 'X', '--lat', '1'], /give --city, --lat and --lon together/],
      [['--clear', '--city', 'X'], /either --clear or --city/],
      [['--city', ' ', '--lat', '1', '--lon', '1'], /--city must be 1 to 100 printable characters/],
      [[], /give --city, --lat and --lon together/],
    ] as const) {
      const r = await cli(['node', 'location', 'node7', ...args], { config: piConfig });
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(said);
    }
    expect((await okJson<Node>(['node', 'show', 'node7'], { config: piConfig })).location?.city).toBe('Princeton, NJ');
    expect(await ok(['node', 'location', 'node7', '--clear'], { config: piConfig })).toBe('node node7.princeton.edu has no location now\n');
    expect((await okJson<Node>(['node', 'location', 'node7', '--clear'], { config: piConfig })).location).toBeNull();
    expect(await ok(['node', 'show', 'node7'], { config: piConfig })).toMatch(/^location:\s+-$/m);
  });

  it('node revoke-key ends a node key at once', async () => {
    const token = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    const enrolled = await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: token.token, hostname: 'node8.princeton.edu', address: '192.0.2.18',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 2048, disk_mb: 20000 },
    });
    const nodeClient = new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key });
    await nodeClient.getNode(enrolled.node_id);
    expectOneLineError(await cli(['node', 'revoke-key', 'node8'], { config: piConfig }), 'run again with --yes to do it');
    expect(await ok(['node', 'revoke-key', 'node8', '--yes'], { config: piConfig })).toContain('the key of node node8.princeton.edu is revoked; it must enroll again with a new token (planetlite site token princeton)');
    await expect(nodeClient.getNode(enrolled.node_id)).rejects.toMatchObject({ status: 401, code: 'node_key_revoked' });
  });

  it('says so when not logged in, after logout, or when the registry is unreachable', async () => {
    expectOneLineError(await cli(['slice', 'ls'], { config: join(dir, 'nobody.json') }), 'not logged in: run planetlite login --registry URL --email ...');

    const other = join(dir, 'other', 'config.json');
    await ok(['--registry', registry.url, 'login', '--email', 'pi@princeton.edu', '--password', piPassword], { config: other });
    expect(await ok(['logout'], { config: other })).toContain(`logged out of ${registry.url}`);
    expectOneLineError(await cli(['slice', 'ls'], { config: other }), `not logged in to ${registry.url}: run planetlite login --registry ${registry.url} --email ...`);

    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const port = (srv.address() as { port: number }).port;
    await new Promise((resolve) => srv.close(resolve));
    const down = `http://127.0.0.1:${port}`;
    const r = await cli(['slice', 'ls'], { config: piConfig, env: { PLANETLITE_REGISTRY: down, PLANETLITE_TOKEN: 'anything' } });
    expectOneLineError(r, `cannot reach the registry at ${down} (ECONNREFUSED): is the registry running? set --registry or PLANETLITE_REGISTRY`);

    // A token the registry does not know.
    expectOneLineError(await cli(['--token', 'bogus', 'slice', 'ls'], { config: piConfig }), /\(\w+\): run planetlite login again$/m);
  });

  it('lists and revokes unused enrollment tokens, ends all tokens of a user, and logout ends the token on the registry', async () => {
    const issued = await okJson<EnrollmentToken>(['site', 'token', 'princeton'], { config: piConfig });
    const listed = await okJson<Array<{ id: string }>>(['site', 'tokens', 'princeton'], { config: piConfig });
    expect(listed.map((t) => t.id)).toContain(issued.id);
    expect(await ok(['site', 'token-revoke', 'princeton', issued.id!], { config: piConfig })).toContain(`enrollment token ${issued.id} of site princeton revoked`);
    const enroll = new PlanetLiteClient({ registry: registry.url }).enroll({ token: issued.token, hostname: 'revoked.test', address: '192.0.2.99', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 } });
    await expect(enroll).rejects.toMatchObject({ status: 401 });

    // A second login of the pi, then every token of the pi ended by the admin.
    const spare = join(dir, 'spare', 'config.json');
    await ok(['--registry', registry.url, 'login', '--email', 'pi@princeton.edu', '--password', piPassword], { config: spare });
    const ended = await okJson<{ revoked: number }>(['user', 'revoke-tokens', 'pi@princeton.edu'], { config: adminConfig });
    expect(ended.revoked).toBeGreaterThanOrEqual(2);
    expectOneLineError(await cli(['whoami'], { config: spare }), /\(unauthorized\): run planetlite login again$|\(token_invalid\)/m);
    await ok(['--registry', registry.url, 'login', '--email', 'pi@princeton.edu', '--password', piPassword], { config: piConfig });

    // logout ends the token itself: a copy of it is refused afterwards.
    await ok(['--registry', registry.url, 'login', '--email', 'pi@princeton.edu', '--password', piPassword], { config: spare });
    const token = (JSON.parse(await readFile(spare, 'utf8')) as { token: string }).token;
    expect(await ok(['logout'], { config: spare })).toContain('logged out of');
    await expect(new PlanetLiteClient({ registry: registry.url, token }).me()).rejects.toMatchObject({ status: 401 });
  });

  it('refuses loudly a registry whose certificate the trusted CA did not sign (changed, or an impostor)', async () => {
    const impostor = await startRegistry({ listen: '127.0.0.1:0', adminEmail: ADMIN_EMAIL, adminPassword: ADMIN_PASSWORD, logLevel: 'warn' });
    try {
      const origin = new URL(impostor.url).origin;
      const config = join(dir, 'changed', 'config.json');
      const known = { [origin]: { ca_pin: registry.caPin!, ca: registry.ca!, trusted_at: new Date().toISOString() } };
      await mkdir(join(dir, 'changed'), { recursive: true });
      await writeFile(config, JSON.stringify({ registry: impostor.url, token: 'plu_whatever', known_registries: known }));
      const r = await cli(['slice', 'ls'], { config });
      expectOneLineError(r, `REGISTRY CERTIFICATE CHANGED: ${origin} presents a certificate that the CA you trusted (${registry.caPin}) did not sign`);
      expect(r.stderr).toContain(`its CA now is ${impostor.caPin}`);
      const login = await cli(['login', '--email', ADMIN_EMAIL, '--password', ADMIN_PASSWORD], { config });
      expectOneLineError(login, 'REGISTRY CERTIFICATE CHANGED');
      // Nothing was sent or saved: the config still holds the old pin and the old token.
      expect(JSON.parse(await readFile(config, 'utf8'))).toMatchObject({ token: 'plu_whatever', known_registries: known });
    } finally {
      await impostor.close();
    }
  });
});
