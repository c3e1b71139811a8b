// image ls|show|push: root filesystem archives slivers are built from; push uploads one (admin).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { IMAGE_ARCH_PATTERN, IMAGE_NAME_PATTERN, IMAGE_VERSION_PATTERN, SLICE_KINDS } from '@planetlite/api';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { imageRecord, imageTable } from '../render.js';

/** Byte progress of one pass over the file: a bar on a terminal, nothing otherwise or with --json. */
interface Progress {
  update(bytes: number): void;
  stop(): void;
}

function progress(ctx: Context, label: string, total: number): Progress {
  const stderr = ctx.io.stderr;
  if (ctx.json || !stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: stderr as NodeJS.WritableStream,
      format: `${label} [{bar}] {percentage}% | {value_h}/{total_h} | {speed} | eta {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  bar.start(total, 0, { value_h: mib(0), total_h: mib(total), speed: '-' });
  return {
    update(bytes) {
      const secs = (Date.now() - started) / 1000;
      bar.update(bytes, { value_h: mib(bytes), total_h: mib(total), speed: secs > 0 ? `${mib(bytes / secs)}/s` : '-' });
    },
    stop() {
      bar.stop();
    },
  };
}

function kindsOption(value: string): string {
  const kinds = value.split(',').map((k) => k.trim());
  for (const k of kinds) {
    if (!(SLICE_KINDS as readonly string[]).includes(k)) throw new CliError(`--kinds takes a comma-separated list of ${SLICE_KINDS.join(', ')}, got '${value}'`);
  }
  return [...new Set(kinds)].join(',');
}

function check(flag: string, value: string | undefined, pattern: string): void {
  if (value !== undefined && !new RegExp(pattern).test(value)) throw new CliError(`${flag} must match ${pattern}, got '${value}'`);
}

export function registerImage(program: Command, ctx: Context): void {
  const image = program
    .command('image')
    .description('images: root filesystems slivers are built from')
    .addHelpText('after', '\nImages are immutable: to publish a new version, push it under a new name (debian12-2026.11).');

  image
    .command('ls')
    .alias('list')
    .description('list images')
    .action(async () => {
      ctx.emit(await (await ctx.client()).listImages(), imageTable);
    });

  image
    .command('show')
    .description('show an image: manifest, sha256, magnet link and web seed')
    .argument('<name>', 'image name')
    .action(async (name: string) => {
      ctx.emit(await (await ctx.client()).getImage(name), imageRecord);
    });

  image
    .command('push')
    .description('upload a root filesystem archive (tar, .gz, .xz, .zst) as a new image (admin)')
    .argument('<file>', 'the archive')
    .requiredOption('--name <name>', 'image name; a new version needs a new name, e.g. debian12-2026.11')
    .option('--kinds <kinds>', `sliver kinds it serves, comma-separated (${SLICE_KINDS.join(',')})`, kindsOption, 'lxc')
    // Not --version: commander takes that as the program's own, wherever it stands.
    .option('--image-version <version>', 'version label kept with the image')
    .option('--arch <arch>', 'architecture of the root filesystem', 'x86_64')
    .action(async (file: string, opts: { name: string; kinds: string; imageVersion?: string; arch: string }) => {
      check('--name', opts.name, IMAGE_NAME_PATTERN);
      check('--image-version', opts.imageVersion, IMAGE_VERSION_PATTERN);
      check('--arch', opts.arch, IMAGE_ARCH_PATTERN);
      const st = await stat(file).catch(() => null);
      if (!st?.isFile()) throw new CliError(`${file} is not a readable file`);
      const client = await ctx.client();

      // The checksum first (one streaming pass), so the registry can refuse a corrupted upload.
      const hashing = progress(ctx, 'sha256', st.size);
      const hash = createHash('sha256');
      let read = 0;
      for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        read += chunk.length;
        hashing.update(read);
      }
      hashing.stop();
      const sha256 = hash.digest('hex');

      const sending = progress(ctx, 'upload', st.size);
      // No request timeout: a large archive takes as long as it takes; Ctrl-C ends it.
      const abort = new AbortController();
      const out = await client
        .uploadImage(
          { name: opts.name, kinds: opts.kinds, arch: opts.arch, ...(opts.imageVersion ? { version: opts.imageVersion } : {}) },
          createReadStream(file, { highWaterMark: 1 << 20 }),
          { size: st.size, sha256, onProgress: (n) => sending.update(n), signal: abort.signal },
        )
        .finally(() => sending.stop());
      ctx.emit(out, imageRecord);
    });
}
