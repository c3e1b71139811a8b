// The front door's own process, started by the agent (inside the node's network namespace on a
// testbed): listens, takes the table of slivers over IPC, sends logins and log lines back. The
// agent's stop (or death) closes the IPC channel, and this process ends with it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FrontDoorServer, type FrontDoorEntry } from './server.js';
import { frontDoorDir } from './keys.js';

export type ToFrontDoor = { type: 'table'; slivers: FrontDoorEntry[] };
export type FromFrontDoor =
  | { type: 'log'; level: 'info' | 'warn' | 'debug'; fields: object; msg: string }
  | { type: 'listening'; port: number; why: string }
  | { type: 'failed'; error: string }
  | { type: 'login'; event: import('./server.js').LoginEvent };

/** The port 'auto' falls back to when 22 is taken on the node's address. */
export const FALLBACK_PORT = 2222;

const send = (m: FromFrontDoor) => process.send?.(m);
const [stateDir, address, portSetting] = process.argv.slice(2) as [string, string, string];
const dir = frontDoorDir(stateDir);
const logAt = (level: 'info' | 'warn' | 'debug') => (fields: object, msg: string) => send({ type: 'log', level, fields, msg });
const server = new FrontDoorServer({
  hostKey: readFileSync(join(dir, 'host_ed25519'), 'utf8'),
  clientKey: readFileSync(join(dir, 'client_ed25519'), 'utf8'),
  log: { info: logAt('info'), warn: logAt('warn'), debug: logAt('debug') },
  onLogin: (event) => send({ type: 'login', event }),
});
process.on('message', (m: ToFrontDoor) => {
  if (m.type === 'table') server.setTable(m.slivers);
});
process.on('disconnect', () => void server.close().finally(() => process.exit(0)));

async function listen(): Promise<{ port: number; why: string }> {
  if (portSetting !== 'auto') return { port: await server.listen(Number(portSetting), address), why: `front_door_port is ${portSetting}` };
  try {
    return { port: await server.listen(22, address), why: 'front_door_port is auto and port 22 was free on this address' };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EADDRINUSE' && code !== 'EACCES') throw err;
    const port = await server.listen(FALLBACK_PORT, address);
    return { port, why: `front_door_port is auto and port 22 is taken on this address (${code}: the node's own sshd?); set front_door_port to 22 after moving it` };
  }
}

listen().then(
  (at) => send({ type: 'listening', ...at }),
  (err: unknown) => {
    send({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  },
);
