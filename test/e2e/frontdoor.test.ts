// End to end: the node's ssh front door. OpenSSH (ssh, scp, sftp) in the experimenter's namespace
// logs in as `SLICE@NODE` with no port and lands in the slice's sliver on that node, through a
// real agent, LXC slivers and a real registry (stopped near the end: logins go on).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { runCli } from '@planetlite/cli';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let config: string;
/** The same options with no identity: for keys given with -i. */
let bare: string;
const ONE = 'fdoor_one';
const TWO = 'fdoor_two';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** An OpenSSH tool run in the experimenter's namespace; never throws on a non-zero exit. */
function tool(name: 'ssh' | 'scp' | 'sftp', args: string[], input?: string, cfg = config): Promise<Ran> {
  return new Promise((resolve) => {
    const child = execFile('ip', ['netns', 'exec', node.net, name, '-F', cfg, ...args], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

const ssh = (user: string, ...args: string[]) => tool('ssh', [`${user}@${node.publicAddress}`, ...args]);
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

beforeAll(async () => {
  node = await startOneNode({ site: 'fdoor', octets: [30, 10], sliverSubnet: (o) => `10.${160 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  // -F is handed on to the jump host's ssh (-J), so the identity and options reach it too.
  config = join(node.dir, 'ssh_config');
  const options = ['  IdentitiesOnly yes', '  StrictHostKeyChecking no', '  UserKnownHostsFile /dev/null', '  BatchMode yes', '  ConnectTimeout 10', '  LogLevel ERROR', ''];
  writeFileSync(config, ['Host *', `  IdentityFile ${node.key}`, ...options].join('\n'));
  bare = join(node.dir, 'ssh_config_bare');
  writeFileSync(bare, ['Host *', ...options].join('\n'));
  await node.runningSliver(ONE);
}, 300_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

describe('the front door', () => {
  it('listens on port 22 of the node, free in its namespace', () => {
    expect(node.agent!.frontDoor!.port).toBe(22);
  });

  it('runs a command in the sliver as the slice user and passes its exit status on', async () => {
    // The front door has the table once the pass that built the sliver has ended.
    await until('a front-door login', async () => (await ssh(ONE, 'true')).code === 0, 30_000);
    const r = await ssh(ONE, 'cat /etc/slicename; id -u; echo oops >&2; exit 3');
    expect(r).toMatchObject({ code: 3, stdout: `${ONE}\n1000\n`, stderr: 'oops\n' });
  });

  it('speaks AES with OpenSSH, and refuses a client that offers only chacha20-poly1305', async () => {
    const r = await tool('ssh', ['-v', `${ONE}@${node.publicAddress}`, 'true']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/kex: client->server cipher: aes128-(ctr|gcm@openssh\.com) /);
    expect((await tool('ssh', ['-c', 'aes128-gcm@openssh.com', `${ONE}@${node.publicAddress}`, 'true'])).code).toBe(0);
    const chacha = await tool('ssh', ['-o', 'LogLevel=INFO', '-c', 'chacha20-poly1305@openssh.com', `${ONE}@${node.publicAddress}`, 'true']);
    expect(chacha.code).toBe(255);
    expect(chacha.stderr).toContain('no matching cipher found');
  });

  it('lets root+SLICE in as the sliver\'s root', async () => {
    expect((await ssh(`root+${ONE}`, 'id -u; cat /etc/slicename')).stdout).toBe(`0\n${ONE}\n`);
  });

  it('gives an interactive shell with a pty', async () => {
    const r = await tool('ssh', ['-tt', `${ONE}@${node.publicAddress}`], 'tty; echo "sum=$((6*7))"; exit 5\n');
    expect(r.code).toBe(5);
    expect(r.stdout).toMatch(/\/dev\/pts\/\d+/);
    expect(r.stdout).toContain('sum=42');
  });

  it('forwards the user\'s agent when asked (-A), and only then', async () => {
    const withAgent = (flag: string) =>
      new Promise<string>((resolve) =>
        execFile('ip', ['netns', 'exec', node.net, 'ssh-agent', 'sh', '-c', `ssh-add -q ${node.key} && ssh -F ${config} ${flag} ${ONE}@${node.publicAddress} 'test -S "$SSH_AUTH_SOCK" && echo forwarded || echo none'`], { encoding: 'utf8', timeout: 60_000 }, (_e, out) => resolve(out.trim())),
      );
    expect(await withAgent('-A')).toBe('forwarded');
    expect(await withAgent('-a')).toBe('none');
  });

  it('copies files both ways with scp and sftp', async () => {
    const up = join(node.dir, 'up.bin');
    writeFileSync(up, randomBytes(3 * 1024 * 1024));
    expect((await tool('scp', [up, `${ONE}@${node.publicAddress}:/tmp/up.bin`])).code).toBe(0);
    expect((await ssh(ONE, 'sha256sum /tmp/up.bin')).stdout.split(' ')[0]).toBe(sha(up));
    const down = join(node.dir, 'down.bin');
    expect((await tool('scp', [`${ONE}@${node.publicAddress}:/tmp/up.bin`, down])).code).toBe(0);
    expect(sha(down)).toBe(sha(up));

    const back = join(node.dir, 'sftp.bin');
    const r = await tool('sftp', ['-b', '-', `${ONE}@${node.publicAddress}`], `put ${up} /tmp/sftp.bin\nget /tmp/sftp.bin ${back}\nls -l /tmp/sftp.bin\n`);
    expect(r.code).toBe(0);
    expect(sha(back)).toBe(sha(up));
  });

  describe('forwards ports to services inside the sliver', () => {
    let forward: ChildProcess | null = null;
    afterAll(() => {
      forward?.kill();
    });

    it('-W and -L reach a server on the sliver\'s own localhost', async () => {
      await ssh(ONE, 'mkdir -p /tmp/www && echo inside-the-sliver > /tmp/www/index.html && busybox httpd -p 127.0.0.1:8080 -h /tmp/www');
      const w = await tool('ssh', ['-W', '127.0.0.1:8080', `${ONE}@${node.publicAddress}`], 'GET / HTTP/1.0\r\n\r\n');
      expect(w.stdout).toContain('inside-the-sliver');

      forward = spawn('ip', ['netns', 'exec', node.net, 'ssh', '-F', config, '-N', '-o', 'ExitOnForwardFailure=yes', '-L', '127.0.0.1:18080:127.0.0.1:8080', `${ONE}@${node.publicAddress}`], { stdio: 'ignore' });
      const page = await until('the -L forward', async () => {
        const r = await new Promise<string>((resolve) => execFile('ip', ['netns', 'exec', node.net, 'busybox', 'wget', '-qO-', 'http://127.0.0.1:18080/'], { encoding: 'utf8' }, (_e, out) => resolve(out)));
        return r.includes('inside-the-sliver') ? r : null;
      }, 20_000);
      expect(page).toContain('inside-the-sliver');
    });

    it('-J uses the front door as a jump host into the sliver\'s own sshd', async () => {
      const r = await tool('ssh', ['-J', `${ONE}@${node.publicAddress}`, `${ONE}@127.0.0.1`, 'cat /etc/slicename']);
      expect(r).toMatchObject({ code: 0, stdout: `${ONE}\n` });
    });
  });

  it('refuses a key that is no member\'s, an unknown slice and a slice with no sliver here, alike', async () => {
    const stranger = join(node.dir, 'stranger');
    await new Promise((r) => execFile('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger], r));
    const strangerOnly = await tool('ssh', ['-i', stranger, `${ONE}@${node.publicAddress}`, 'true'], undefined, bare);
    // Beside a member's key, a stranger's does no harm.
    const both = await tool('ssh', ['-i', stranger, `${ONE}@${node.publicAddress}`, 'true']);
    const unknown = await ssh('fdoor_nosuch', 'true');
    await node.admin.createSlice({ name: 'fdoor_empty', description: 'no sliver', url: 'https://example.org', image: 'tiny' });
    const noSliver = await ssh('fdoor_empty', 'true');
    const plainRoot = await ssh('root', 'true');
    // One message for all, save the login name ssh puts before it.
    expect([strangerOnly, unknown, noSliver, plainRoot].map((r) => [r.code, r.stderr.replace(/^\S+@\S+: /, '').trim()])).toEqual(Array(4).fill([255, 'Permission denied (publickey).']));
    expect(both.code).toBe(0);
  });

  it('lands each slice in its own sliver on the same node', async () => {
    await node.runningSliver(TWO);
    await until('the second slice through the front door', async () => (await ssh(TWO, 'true')).code === 0, 30_000);
    expect((await ssh(TWO, 'cat /etc/slicename')).stdout).toBe(`${TWO}\n`);
    expect((await ssh(ONE, 'cat /etc/slicename')).stdout).toBe(`${ONE}\n`);
  });

  it('gives every login its own node connection to its own sliver, keeps one ahead, and none to a deleted sliver', async () => {
    // $SSH_CONNECTION in the sliver: the node's end (address, port) and the sliver's address.
    const where = async (user: string) => {
      const r = await ssh(user, 'cat /etc/slicename; echo $SSH_CONNECTION');
      const [slice, conn] = r.stdout.trim().split('\n');
      const [, port, address] = (conn ?? '').split(' ');
      return { slice, port, address };
    };
    // Logins of two slices (and root) at once, each twice: spares are being taken and made meanwhile.
    const users = [ONE, TWO, `root+${ONE}`, ONE, TWO, `root+${ONE}`];
    const seen = await Promise.all(users.map(where));
    expect(seen.map((s) => s.slice)).toEqual(users.map((u) => u.replace('root+', '')));
    const addressOf = (slice: string) => new Set(seen.filter((s) => s.slice === slice).map((s) => s.address));
    const [one, two] = [addressOf(ONE), addressOf(TWO)];
    expect([one.size, two.size]).toEqual([1, 1]);
    expect([...one][0]).not.toBe([...two][0]);
    // No two logins shared the node's connection into a sliver.
    expect(new Set(seen.map((s) => s.port)).size).toBe(users.length);

    /** The front door's connections to a sliver's sshd, seen from the node. */
    const kept = (address: string) =>
      new Promise<number>((resolve) =>
        execFile('ip', ['netns', 'exec', node.ns, 'ss', '-Htn', 'state', 'established', 'dst', `${address}:22`], { encoding: 'utf8' }, (_e, out) => resolve(out.trim() ? out.trim().split('\n').length : 0)),
      );
    // One login into each sliver waits ahead of the next user (all logins above have ended).
    await until('one spare login per sliver and account', async () => ((await kept([...one][0]!)) === 2 && (await kept([...two][0]!)) === 1) || null, 20_000);

    const sliver = (await node.admin.listSlivers(TWO))[0]!;
    await node.admin.deleteSliver(sliver.id);
    await until('the spare into the deleted sliver closed', async () => (await kept([...two][0]!)) === 0 || null, 60_000);
    await until('the deleted sliver refused', async () => (await ssh(TWO, 'true')).code === 255 || null, 60_000);
    expect((await where(ONE)).slice).toBe(ONE);
  }, 180_000);

  it('lets a member\'s new key in within seconds of its being added', async () => {
    const added = join(node.dir, 'added');
    await new Promise((r) => execFile('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', added], r));
    const withAdded = () => tool('ssh', ['-i', added, `${ONE}@${node.publicAddress}`, 'cat /etc/slicename'], undefined, bare);
    expect((await withAdded()).code).toBe(255);
    await node.admin.addKey((await node.admin.me()).id, readFileSync(`${added}.pub`, 'utf8'));
    const r = await until('the new key to work', async () => {
      const x = await withAdded();
      return x.code === 0 ? x : null;
    }, 20_000);
    expect(r.stdout).toBe(`${ONE}\n`);
  });

  it('takes junk, truncated handshakes, half-open connections and thousands of failed logins without hurting anyone else', async () => {
    const base = node.publicAddress.replace(/\.1$/, '');
    // The experimenter gets two more addresses: one for a good user, one for junk.
    for (const a of [3, 4]) await new Promise((r) => execFile('ip', ['-n', node.net, 'addr', 'add', `${base}.${a}/24`, 'dev', `pv${node.tag}b`], r));
    const pid = node.agent!.frontDoor!.pid;
    const stranger = join(node.dir, 'stranger-abuse');
    await new Promise((r) => execFile('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger], r));
    // A session that was open before goes on throughout.
    const before = ssh(ONE, 'sleep 6; echo still-here');
    const abuse = new Promise<string>((resolve, reject) =>
      execFile('ip', ['netns', 'exec', node.net, process.execPath, join(import.meta.dirname, 'frontdoor-abuse.mjs'), node.publicAddress, `${base}.4`, stranger, '2000', '32'], { encoding: 'utf8', timeout: 300_000 }, (err, out) => (err ? reject(err) : resolve(out))),
    );
    await new Promise((r) => setTimeout(r, 2000));
    // Mid-abuse, a member from another address logs in as usual.
    const during = await tool('ssh', ['-b', `${base}.3`, `${ONE}@${node.publicAddress}`, 'cat /etc/slicename']);
    expect(during).toMatchObject({ code: 0, stdout: `${ONE}\n` });
    expect(await before).toMatchObject({ code: 0, stdout: 'still-here\n' });
    const outcome = JSON.parse(await abuse) as { refused: number; dropped: number; other: number };
    // Every attempt ended: refused (slowed down) or dropped (too many at once from one address).
    expect(outcome.refused + outcome.dropped).toBe(2000);
    expect(outcome.other).toBe(0);
    expect(outcome.refused).toBeGreaterThan(0);
    expect(outcome.dropped).toBeGreaterThan(0);
    expect(node.agent!.frontDoor!.pid).toBe(pid);
    expect((await ssh(ONE, 'cat /etc/slicename')).stdout).toBe(`${ONE}\n`);
  }, 300_000);

  describe('published by the registry', () => {
    /** planetlite in this process, its ssh run in the experimenter's namespace. */
    async function planetlite(args: string[], ssh: string): Promise<Ran> {
      let stdout = '';
      let stderr = '';
      const env = { HOME: node.dir, PLANETLITE_CONFIG: join(node.dir, 'cli', 'config.json'), PLANETLITE_REGISTRY: node.registry.url, PLANETLITE_TOKEN: node.admin.token!, PLANETLITE_SSH: ssh };
      const code = await runCli(args, { stdout: { write: (t: string) => (stdout += t) }, stderr: { write: (t: string) => (stderr += t) }, env, stdin: Readable.from([]) });
      return { code, stdout, stderr };
    }
    const viaNet = () => `ip netns exec ${node.net} ssh -i ${node.key} -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR`;

    it("GET /v1/nodes/{id} carries the front door's port and host key fingerprint", async () => {
      const door = await until('the front door in the node record', async () => (await node.admin.getNode(node.nodeId)).front_door, 20_000);
      const pub = join(node.stateDir, 'front-door', 'host_ed25519.pub');
      const printed = await new Promise<string>((resolve) => execFile('ssh-keygen', ['-l', '-f', pub], { encoding: 'utf8' }, (_e, out) => resolve(out)));
      expect(door).toEqual({ port: 22, host_key: readFileSync(pub, 'utf8').split(' ').slice(0, 2).join(' '), fingerprint: printed.split(' ')[1] });
    });

    it('planetlite ssh pins the host key and logs in through the front door', async () => {
      const r = await planetlite(['ssh', ONE, '--', 'cat /etc/slicename; exit 4'], viaNet());
      expect(r).toMatchObject({ code: 4, stdout: `${ONE}\n`, stderr: '' });
      // ssh checked the host key strictly against the line written from the registry.
      const known = readFileSync(join(node.dir, 'cli', 'known_hosts'), 'utf8');
      expect(known).toBe(`${node.publicAddress} ${(await node.admin.getNode(node.nodeId)).front_door!.host_key}\n`);
      expect((await planetlite(['ssh', ONE, node.publicAddress, '--root', '--', 'id -u'], viaNet())).stdout).toBe('0\n');
    });

    it('records every login as a sliver.login event the slice sees', async () => {
      const sliver = (await node.admin.listSlivers(ONE))[0]!;
      const fp = (await new Promise<string>((resolve) => execFile('ssh-keygen', ['-l', '-f', `${node.key}.pub`], { encoding: 'utf8' }, (_e, out) => resolve(out)))).split(' ')[1];
      const root = await until('a root login event', async () => (await node.admin.listEvents({ slice: ONE, type: 'sliver.login' })).find((e) => e.data.user === 'root') ?? null, 20_000);
      expect(root).toMatchObject({ sliver: sliver.id, data: { slice: ONE, sliver: sliver.id, user: 'root', key_fingerprint: fp, source: node.publicAddress.replace(/\.1$/, '.2'), how: 'front-door' } });
    });

    it('planetlite ssh --port-forward goes through the forwarded port; a wrong node is one line', async () => {
      const r = await planetlite(['ssh', ONE, '--port-forward', '--', 'cat /etc/slicename'], `${viaNet()} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null`);
      expect(r).toMatchObject({ code: 0, stdout: `${ONE}\n` });
      const plan = JSON.parse((await planetlite(['--json', 'ssh', ONE, '--port-forward', '--print'], 'ssh')).stdout) as { how: string; argv: string[] };
      const sliver = (await node.admin.listSlivers(ONE))[0]!;
      expect(plan).toMatchObject({ how: 'port-forward', argv: ['ssh', '-p', String(sliver.ports.first), `${ONE}@${node.publicAddress}`] });
      const wrong = await planetlite(['ssh', ONE, 'no-such-node'], 'ssh');
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/^planetlite: slice fdoor_one has no sliver on node no-such-node; it has slivers on: \S+\n$/);
    });
  });

  it('keeps letting members in while the registry is down', async () => {
    await node.registry.close();
    const r = await ssh(ONE, 'cat /etc/slicename');
    expect(r).toMatchObject({ code: 0, stdout: `${ONE}\n` });
  });
});
