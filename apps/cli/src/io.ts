// The streams and environment a CLI run talks to, so tests can run it in-process.
export interface OutStream {
  write(chunk: string): unknown;
  isTTY?: boolean | undefined;
}

export type InStream = NodeJS.ReadableStream & { isTTY?: boolean | undefined };

export interface Io {
  stdout: OutStream;
  stderr: OutStream;
  env: Record<string, string | undefined>;
  /** Absent: there is nothing to read (a password must come from a flag or the environment). */
  stdin?: InStream | undefined;
}

export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, stdin: process.stdin };
}
