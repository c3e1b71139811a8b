// CPU profiles for the benchmarks: of another Node process (SIGUSR1 opens its inspector, then
// the Profiler domain over its WebSocket) or of the benchmark's own (node:inspector), saved as
// .cpuprofile (Chrome DevTools opens them) and summed up as the functions that took the most
// time, alone and with what they called.
import { Session } from 'node:inspector/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

/** Starts profiling process pid (a Node process of this user); stop() returns its profile. */
export async function profileProcess(pid: number, port = 9229): Promise<{ stop: () => Promise<CpuProfile> }> {
  process.kill(pid, 'SIGUSR1');
  let url: string | undefined;
  for (let i = 0; i < 50 && !url; i++) {
    await new Promise((r) => setTimeout(r, 100));
    url = await fetch(`http://127.0.0.1:${port}/json/list`).then(async (r) => ((await r.json()) as Array<{ webSocketDebuggerUrl: string }>)[0]?.webSocketDebuggerUrl, () => undefined);
  }
  if (!url) throw new Error(`process ${pid} opened no inspector on port ${port}`);
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let next = 1;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (m) => {
    const msg = JSON.parse(String(m.data)) as { id?: number; result?: unknown };
    if (msg.id !== undefined) waiting.get(msg.id)?.(msg.result);
  };
  const call = (method: string, params: object = {}) => new Promise<unknown>((resolve) => {
    const id = next++;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
  await call('Profiler.enable');
  await call('Profiler.setSamplingInterval', { interval: 500 });
  await call('Profiler.start');
  return {
    stop: async () => {
      const { profile } = (await call('Profiler.stop')) as { profile: CpuProfile };
      ws.close();
      return profile;
    },
  };
}

/** Profiles this process until stop(). */
export async function profileSelf(): Promise<{ stop: () => Promise<CpuProfile> }> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 500 });
  await session.post('Profiler.start');
  return {
    stop: async () => {
      const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
      session.disconnect();
      return profile;
    },
  };
}

/** Writes the profile and returns the top functions by self and by total time, as text. */
export function saveProfile(file: string, profile: CpuProfile, top = 15): string {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(profile));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const total = profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) || 1;
  const ms = (profile.endTime - profile.startTime) / 1000;
  const name = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(packages|apps|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  // Each function counts once per stack for its total, however deep it recurs.
  const walk = (id: number, onStack: Set<string>): number => {
    const n = byId.get(id)!;
    const key = name(n);
    self.set(key, (self.get(key) ?? 0) + (n.hitCount ?? 0));
    const inner = new Set(onStack).add(key);
    let hits = n.hitCount ?? 0;
    for (const c of n.children ?? []) hits += walk(c, inner);
    if (!onStack.has(key)) incl.set(key, (incl.get(key) ?? 0) + hits);
    return hits;
  };
  walk(profile.nodes[0]!.id, new Set());
  const rows = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, h]) => `  ${((h / total) * 100).toFixed(1).padStart(5)} %  ${((h / total) * ms).toFixed(0).padStart(6)} ms  ${k}`);
  return [`${file} (${ms.toFixed(0)} ms)`, ' self:', ...rows(self), ' total:', ...rows(incl)].join('\n');
}
