// Other firewalls on the node. nftables runs every base chain of a hook, so a forward chain with
// `policy drop` in another table (Docker sets iptables' FORWARD to DROP; hardened hosts do it in
// nftables) drops slivers' forwarded traffic whatever the agent's own table accepts: ssh to a
// sliver and its outbound traffic die there. The agent does not edit another owner's rules; it
// says at start which chain drops, and the rules that let slivers' links through.
import { tryRun } from '@planetlite/host';

/** Host ends of slivers' links (veth and tap) all start with this (packages/network). */
const SLIVER_LINKS = 'plh';

export interface ForwardDrop {
  /** e.g. `ip filter FORWARD`, `inet hostfw forward`, or `iptables-legacy FORWARD`. */
  chain: string;
  /** Commands that let slivers' links through. */
  fix: string;
}

interface NftChain {
  family: string;
  table: string;
  name: string;
  hook?: string;
  policy?: string;
}

const inNs = (netns: string | null, argv: string[]): [string, string[]] => (netns ? ['nsenter', [`--net=/run/netns/${netns}`, ...argv]] : [argv[0]!, argv.slice(1)]);

/** Forward-hook chains with policy drop other than the agent's own, in the node's namespace. */
export async function forwardDrops(netns: string | null): Promise<ForwardDrop[]> {
  const out: ForwardDrop[] = [];
  const listed = await tryRun(...inNs(netns, ['nft', '-j', 'list', 'chains']));
  const chains = ((JSON.parse(listed?.stdout || '{"nftables":[]}') as { nftables: Array<{ chain?: NftChain }> }).nftables).flatMap((e) => (e.chain ? [e.chain] : []));
  for (const c of chains) {
    if (c.hook !== 'forward' || c.policy !== 'drop' || (c.family === 'inet' && c.table === 'planetlite')) continue;
    // Docker rewrites FORWARD when it restarts; DOCKER-USER is the chain it leaves to the admin.
    const docker = c.family === 'ip' && c.table === 'filter' && chains.some((d) => d.family === 'ip' && d.table === 'filter' && d.name === 'DOCKER-USER');
    const fix = docker
      ? `iptables -I DOCKER-USER -i ${SLIVER_LINKS}+ -j ACCEPT; iptables -I DOCKER-USER -o ${SLIVER_LINKS}+ -j ACCEPT`
      : `nft insert rule ${c.family} ${c.table} ${c.name} iifname "${SLIVER_LINKS}*" accept; nft insert rule ${c.family} ${c.table} ${c.name} oifname "${SLIVER_LINKS}*" accept`;
    out.push({ chain: `${c.family} ${c.table} ${c.name}`, fix });
  }
  // iptables-legacy keeps its rules outside nftables, where `nft` does not see them.
  const legacy = await tryRun(...inNs(netns, ['iptables-legacy', '-S', 'FORWARD']));
  if (legacy && /^-P FORWARD DROP$/m.test(legacy.stdout)) {
    out.push({ chain: 'iptables-legacy FORWARD', fix: `iptables-legacy -I FORWARD -i ${SLIVER_LINKS}+ -j ACCEPT; iptables-legacy -I FORWARD -o ${SLIVER_LINKS}+ -j ACCEPT` });
  }
  return out;
}
