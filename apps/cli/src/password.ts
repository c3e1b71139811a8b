// Where a password comes from: a flag, the environment, piped stdin, or a prompt without echo.
import { CliError } from './errors.js';
import type { InStream, OutStream } from './io.js';

const MAX_PIPED = 64 * 1024;

/** The first line of everything piped on stdin. */
export async function readPipedPassword(stdin: InStream): Promise<string> {
  let text = '';
  for await (const chunk of stdin) {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (text.length > MAX_PIPED) break;
  }
  return text.split(/\r?\n/)[0] ?? '';
}

/** Reads a line from a terminal in raw mode so the password is not echoed. */
export function promptHidden(prompt: string, stdin: NodeJS.ReadStream, stderr: OutStream): Promise<string> {
  stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let typed = '';
    const finish = () => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write('\n');
    };
    const onData = (data: Buffer | string) => {
      for (const ch of data.toString()) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          finish();
          resolve(typed);
          return;
        }
        if (ch === '\u0003') {
          finish();
          reject(new CliError('interrupted'));
          return;
        }
        if (ch === '\u007f' || ch === '\b') typed = typed.slice(0, -1);
        else typed += ch;
      }
    };
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}

export interface PasswordSources {
  flag?: string | undefined;
  env?: string | undefined;
  envName: string;
  stdin?: InStream | undefined;
  stderr: OutStream;
  prompt: string;
}

export async function obtainPassword(src: PasswordSources): Promise<string> {
  if (src.flag !== undefined) return src.flag;
  if (src.env) return src.env;
  const stdin = src.stdin;
  if (stdin && stdin.isTTY && typeof (stdin as NodeJS.ReadStream).setRawMode === 'function') {
    return promptHidden(src.prompt, stdin as NodeJS.ReadStream, src.stderr);
  }
  if (stdin) {
    const piped = await readPipedPassword(stdin);
    if (piped) return piped;
  }
  throw new CliError(`no password: pass --password, set ${src.envName}, or pipe it on stdin`);
}
