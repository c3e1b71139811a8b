// image ls|show|push|build: root filesystem archives slivers are built from; push uploads one
// (admin), build runs a recipe of infra/images and can push the result.
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { IMAGE_ARCH_PATTERN, IMAGE_NAME_PATTERN, IMAGE_VERSION_PATTERN, SLICE_KINDS, type Image } from '@planetlite/api';
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
    .action(async (file: string, opts: PushOptions) => {
      ctx.emit(await pushImage(ctx, file, opts), imageRecord);
    });

  image
    .command('build')
    .description(`build an image from a recipe in infra/images (${recipes().join(', ') || 'none found'}); --push uploads it (admin)`)
    .argument('<recipe>', 'recipe name: infra/images/RECIPE/build.sh')
    .option('--out <file>', 'archive to write (default ./RECIPE.tar, or .tar.zst for debian12)')
    .option('--push', 'upload it as an image afterwards, as image push does')
    .option('--name <name>', 'with --push: image name (default the recipe name)')
    .option('--kinds <kinds>', `with --push: sliver kinds it serves (${SLICE_KINDS.join(',')})`, kindsOption, 'lxc')
    .option('--image-version <version>', 'with --push: version label kept with the image')
    .option('--arch <arch>', 'with --push: architecture of the root filesystem', 'x86_64')
    .addHelpText('after', `
Recipes run as root on this machine (debian12 uses debootstrap and takes minutes); their output
streams to stderr. Recipes are looked up in ${RECIPES_DIR} (PLANETLITE_IMAGE_RECIPES overrides).`)
    .action(async (recipe: string, opts: PushOptions & { out?: string; push?: boolean }) => {
      const script = join(recipesDir(), recipe, 'build.sh');
      if (!/^[a-z0-9][a-z0-9._-]*$/.test(recipe) || !existsSync(script))
        throw new CliError(`no image recipe '${recipe}': the recipes are ${recipes().join(', ') || `none (no ${recipesDir()})`}`);
      const out = resolve(opts.out ?? `${recipe}${recipe === 'debian12' ? '.tar.zst' : '.tar'}`);
      const started = Date.now();
      const code = await new Promise<number>((done, fail) => {
        const child = spawn('bash', [script, out], { stdio: ['ignore', ctx.json ? 'ignore' : 'inherit', 'inherit'] });
        child.on('error', fail);
        child.on('exit', (c, signal) => done(c ?? (signal ? 128 : 1)));
      });
      if (code !== 0) throw new CliError(`recipe ${recipe} failed (exit ${code}); its messages are above`);
      const { size } = await stat(out);
      if (!opts.push) {
        ctx.emit({ recipe, file: out, size, seconds: Math.round((Date.now() - started) / 100) / 10 }, (r) => `built ${r.file} (${r.size} bytes) from recipe ${r.recipe} in ${r.seconds} s\nnext: planetlite image push ${r.file} --name ${recipe}`);
        return;
      }
      ctx.emit(await pushImage(ctx, out, { ...opts, name: opts.name ?? recipe }), imageRecord);
    });
}

interface PushOptions {
  name: string;
  kinds: string;
  imageVersion?: string;
  arch: string;
}

/** The recipes' directory: the repository's infra/images beside this CLI, unless overridden. */
const RECIPES_DIR = fileURLToPath(new URL('../../../../infra/images/', import.meta.url));

function recipesDir(): string {
  return process.env.PLANETLITE_IMAGE_RECIPES || RECIPES_DIR;
}

function recipes(): string[] {
  const dir = recipesDir();
  return existsSync(dir) ? readdirSync(dir).filter((d) => existsSync(join(dir, d, 'build.sh'))).sort() : [];
}

/** Checks the manifest, hashes the archive, then uploads it (progress bars on a terminal). */
async function pushImage(ctx: Context, file: string, opts: PushOptions): Promise<Image> {
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
  return out;
}
