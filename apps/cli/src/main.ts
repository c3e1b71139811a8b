// Entry point of the planetlite binary.
import { runCli } from './cli.js';

// A closed pipe (planetlite events | head) is a normal way to stop reading, not a crash.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
});

try {
  process.exitCode = await runCli(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`planetlite: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
