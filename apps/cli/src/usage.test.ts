// Every command and subcommand given wrong arguments (missing, extra, unknown options, options
// without their value, values that make no sense) says what is wrong in one line on stderr and
// exits non-zero, without a stack trace. The commands are walked from the command tree itself,
// so a new one is covered when it is added. The registry is a closed port: a command that gets
// past its arguments fails there, also in one line.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command, Option } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram, runCli } from './cli.js';
import type { Io } from './io.js';

let dir: string;
let registry: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'planetlite-usage-'));
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  registry = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
  await new Promise((resolve) => srv.close(resolve));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: Io = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: { HOME: dir, PLANETLITE_CONFIG: join(dir, 'config.json'), PLANETLITE_REGISTRY: registry, PLANETLITE_TOKEN: 'token', PLANETLITE_PASSWORD: 'pw' },
    stdin: undefined,
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

interface Leaf { path: string[]; cmd: Command }
function leaves(cmd: Command, path: string[] = []): Leaf[] {
  const subs = cmd.commands as Command[];
  if (subs.length === 0) return [{ path, cmd }];
  return subs.flatMap((c) => leaves(c, [...path, c.name()]));
}

const { program } = buildProgram({ stdout: { write: () => true }, stderr: { write: () => true }, env: {} });
const all = leaves(program);

/** Arguments that satisfy the command's shape: its positionals and its mandatory options. */
function shape(cmd: Command, opts: { positionals?: boolean } = {}): string[] {
  const args = opts.positionals === false ? [] : cmd.registeredArguments.filter((a) => a.required).map(() => 'x');
  for (const o of cmd.options as Option[]) if (o.mandatory) args.push(o.long!, ...(o.required || o.optional ? ['1'] : []));
  return args;
}

function expectOneLine(r: { code: number; stderr: string }, what: string): void {
  expect(r.code, `${what}: exit code`).not.toBe(0);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, `${what}: ${JSON.stringify(r.stderr)}`).toHaveLength(1);
  expect(lines[0], what).toMatch(/^planetlite: \S/);
  expect(r.stderr, what).not.toMatch(/\n\s+at |Error: .*\n/);
}

describe('every command given wrong arguments', () => {
  it('walks the whole command tree', () => {
    expect(all.length).toBeGreaterThan(30);
  });

  it.each(all.map((l) => [l.path.join(' '), l] as const))('%s', async (name, { path, cmd }) => {
    const required = cmd.registeredArguments.filter((a) => a.required);
    const variadic = cmd.registeredArguments.some((a) => a.variadic);
    if (required.length > 0) expectOneLine(await run([...path, ...shape(cmd, { positionals: false })]), `${name} without its arguments`);
    if (!variadic) {
      const full = [...cmd.registeredArguments.map(() => 'x'), ...shape(cmd, { positionals: false })];
      expectOneLine(await run([...path, ...full, 'surplus']), `${name} with an extra argument`);
    }
    expectOneLine(await run([...path, ...shape(cmd), '--no-such-option']), `${name} with an unknown option`);
    for (const o of cmd.options as Option[]) {
      if (!o.required) continue; // a flag, or a value that may be left out
      const others = shape(cmd).filter((_, i, a) => a[i] !== o.long && a[i - 1] !== o.long);
      expectOneLine(await run([...path, ...others, o.long!]), `${name} ${o.long} without its value`);
      for (const bad of ['', '-1', 'not a value', '9'.repeat(40), '../../etc/passwd']) {
        const r = await run([...path, ...others, o.long!, bad]);
        if (r.code !== 0) expectOneLine(r, `${name} ${o.long} ${JSON.stringify(bad)}`);
        else expect(r.stderr, `${name} ${o.long} ${JSON.stringify(bad)}`).toBe('');
      }
    }
  });
});
