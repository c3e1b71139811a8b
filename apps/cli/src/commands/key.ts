// key add|ls|rm: the ssh public keys that open every sliver of a user's slices.
import type { Command } from 'commander';
import type { Context } from '../context.js';
import { resolveKeyArgument } from '../keys.js';
import { resolveUserId } from '../resolve.js';
import { keyRecord, keyTable } from '../render.js';

const USER_OPTION = ['--user <user>', 'whose keys: user id, email, or "me"', 'me'] as const;

export function registerKey(program: Command, ctx: Context): void {
  const key = program
    .command('key')
    .description('ssh public keys: every member\'s keys are installed in the slice\'s slivers')
    .addHelpText('after', `
Examples:
  planetlite key add ~/.ssh/id_ed25519.pub
  planetlite key add "ssh-ed25519 AAAAC3Nza... alice@laptop"
  planetlite key ls
  planetlite key rm 3f6c2a1e-...`);

  key
    .command('add')
    .description('add an OpenSSH public key')
    .argument('<file_or_keyline>', 'a .pub file, or the key line itself')
    .option(...USER_OPTION)
    .action(async (arg: string, opts: { user: string }) => {
      const line = await resolveKeyArgument(arg);
      const client = await ctx.client();
      const added = await client.addKey(await resolveUserId(client, opts.user), line);
      ctx.emit(added, keyRecord);
    });

  key
    .command('ls')
    .alias('list')
    .description('list keys')
    .option(...USER_OPTION)
    .action(async (opts: { user: string }) => {
      const client = await ctx.client();
      ctx.emit(await client.listKeys(await resolveUserId(client, opts.user)), keyTable);
    });

  key
    .command('rm')
    .alias('remove')
    .description('remove a key')
    .argument('<key_id>', 'the key id from "planetlite key ls"')
    .option(...USER_OPTION)
    .action(async (keyId: string, opts: { user: string }) => {
      const client = await ctx.client();
      await client.deleteKey(await resolveUserId(client, opts.user), keyId);
      if (!ctx.json) ctx.out(`removed key ${keyId}`);
    });
}
