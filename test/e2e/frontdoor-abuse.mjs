// Run by frontdoor.test.ts inside the experimenter's namespace: hurts a front door the ways the
// internet does, and prints what came of it as one JSON line. Arguments: the front door's address,
// the address to send junk and half-open connections from, a key that is no member's, how many
// failed logins to try (from the namespace's main address) and how many at once.
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

const require = createRequire(new URL('../../apps/agent/package.json', import.meta.url));
const { Client } = require('ssh2');
const [host, junkFrom, keyFile, attemptsText, parallelText] = process.argv.slice(2);
const key = readFileSync(keyFile);

/** Opens a connection from junkFrom, writes what it is given, and resolves when it is closed. */
function raw(write, { keepOpen = false } = {}) {
  return new Promise((resolve) => {
    const s = connect({ host, port: 22, localAddress: junkFrom }, () => {
      if (write) s.write(write);
      if (!keepOpen) setTimeout(() => s.end(), 200);
    });
    s.on('error', () => {});
    s.on('close', () => resolve(s));
    if (keepOpen) resolve(s);
  });
}

// Half-open: connected, never a byte; they stay while everything else goes on.
const halfOpen = await Promise.all(Array.from({ length: 40 }, () => raw(null, { keepOpen: true })));
const junk = [
  ...Array.from({ length: 20 }, () => randomBytes(4096)),
  ...Array.from({ length: 20 }, () => Buffer.concat([Buffer.from('SSH-2.0-junk\r\n'), randomBytes(2048)])),
  ...Array.from({ length: 20 }, () => Buffer.from('SSH-2.0-truncated')),
  ...Array.from({ length: 20 }, () => Buffer.from('SSH-2.0-OpenSSH_9.2\r\n\x00\x00\x01\x00\x05\x14')),
];
await Promise.all(junk.map((j) => raw(j)));

const outcome = { refused: 0, dropped: 0, other: 0 };
let next = 0;
const attempts = Number(attemptsText);
async function worker() {
  while (next < attempts) {
    next++;
    const result = await new Promise((resolve) => {
      const c = new Client();
      c.on('ready', () => {
        c.end();
        resolve('other');
      });
      c.on('error', (err) => resolve(err.level === 'client-authentication' ? 'refused' : 'dropped'));
      c.on('close', () => resolve('dropped'));
      c.connect({ host, port: 22, username: 'fdoor_one', privateKey: key, readyTimeout: 60_000 });
    });
    outcome[result]++;
  }
}
await Promise.all(Array.from({ length: Number(parallelText) }, worker));
for (const s of halfOpen) s.destroy();
process.stdout.write(JSON.stringify(outcome) + '\n');
