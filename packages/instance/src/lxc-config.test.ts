// The LXC config renderer, the cgroup layout parser and spec validation: pure functions, no host.
import { describe, expect, it } from 'vitest';
import type { InstanceSpec } from './driver.js';
import {
  DENIED_BTRFS_IOCTLS,
  LXC_DEFAULT_SECCOMP_RULES,
  containerName,
  idFromContainerName,
  missingLimits,
  parseCgroupLayout,
  resourceLimits,
  parseMemoryStat,
  renderConfig,
  renderSeccompPolicy,
  residentBytes,
  sharesToWeight,
  validateInstanceSpec,
  type CgroupLayout,
  type LxcHostFacts,
} from './index.js';

const ID = '0b7e6c1e-3f4a-4c55-9a0e-2d1f7c9b8a01';
const spec: InstanceSpec = {
  id: ID,
  hostname: 'princeton_codeen',
  rootfs: '/pool/slivers/0b7e6c1e',
  memoryMb: 256,
  cpuShares: 512,
  pids: 200,
  idmapBase: 1_000_000,
  net: { link: 'pl0b7e6c1ep', address: '10.200.0.2/30', gateway: '10.200.0.1' },
};
const hybrid: CgroupLayout = { mode: 'hybrid', memory: 'v1', cpu: 'v1', pids: 'v1', freezer: 'v1', devices: 'v1' };
const unified: CgroupLayout = { mode: 'unified', memory: 'v2', cpu: 'v2', pids: 'v2', freezer: 'v2', devices: 'v2' };
const facts: LxcHostFacts = { cgroups: hybrid, seccompProfile: '/var/lib/planetlite/lxc/planetlite.seccomp', apparmor: false };
const opts = { lxcPath: '/var/lib/planetlite/lxc' };

/** key → values, in order, ignoring comments. */
function keys(config: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of config.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-z0-9_.]+) = (.*)$/.exec(line);
    expect(m, `malformed line ${JSON.stringify(line)}`).not.toBeNull();
    const [, k = '', v = ''] = m ?? [];
    out.set(k, [...(out.get(k) ?? []), v]);
  }
  return out;
}

describe('renderConfig', () => {
  it('renders an unprivileged sliver on a hybrid (v1 controllers) host', () => {
    const text = renderConfig(spec, facts, opts);
    const k = keys(text);
    const one = (key: string): string | undefined => {
      expect(k.get(key), key).toHaveLength(1);
      return k.get(key)?.[0];
    };
    expect(one('lxc.uts.name')).toBe('princeton_codeen');
    expect(one('lxc.rootfs.path')).toBe('dir:/pool/slivers/0b7e6c1e');
    expect(one('lxc.rootfs.options')).toBe('idmap=container');
    expect(k.get('lxc.idmap')).toEqual(['u 0 1000000 65536', 'g 0 1000000 65536']);
    expect(one('lxc.init.cmd')).toBe('/sbin/init');
    expect(one('lxc.mount.auto')).toBe('proc:mixed sys:ro cgroup:mixed:force');
    expect(one('lxc.autodev')).toBe('1');
    expect(one('lxc.tty.max')).toBe('0');
    const drops = one('lxc.cap.drop')?.split(' ');
    for (const cap of ['sys_module', 'sys_boot', 'mknod', 'sys_time', 'sys_rawio', 'mac_admin', 'mac_override']) expect(drops).toContain(cap);
    expect(drops).not.toContain('sys_admin');
    expect(one('lxc.seccomp.profile')).toBe('/var/lib/planetlite/lxc/planetlite.seccomp');
    expect(one('lxc.apparmor.profile')).toBe('unconfined');
    expect(one('lxc.cgroup.memory.limit_in_bytes')).toBe(String(256 * 1024 * 1024));
    expect(one('lxc.cgroup.cpu.shares')).toBe('512');
    expect(one('lxc.cgroup.cpu.cfs_quota_us')).toBe('-1'); // no hard cap unless asked
    expect(one('lxc.cgroup.pids.max')).toBe('200');
    expect(one('lxc.cgroup.devices.deny')).toBe('a');
    expect(k.get('lxc.cgroup.devices.allow')).toContain('c 1:3 rwm');
    expect([...k.keys()].some((key) => key.startsWith('lxc.cgroup2.'))).toBe(false);
    expect(one('lxc.net.0.type')).toBe('phys');
    expect(one('lxc.net.0.link')).toBe('pl0b7e6c1ep');
    expect(one('lxc.net.0.name')).toBe('eth0');
    expect(one('lxc.net.0.flags')).toBe('up');
    expect(one('lxc.net.0.ipv4.address')).toBe('10.200.0.2/30');
    expect(one('lxc.net.0.ipv4.gateway')).toBe('10.200.0.1');
    expect(one('lxc.log.file')).toBe(`/var/lib/planetlite/lxc/sl-${ID}/lxc.log`);
    expect(one('lxc.console.logfile')).toBe(`/var/lib/planetlite/lxc/sl-${ID}/console.log`);
    // Deterministic: the same inputs give the same bytes (define() compares before writing).
    expect(renderConfig(spec, facts, opts)).toBe(text);
  });

  it('mounts a layered root (files already in the sliver\'s host ids) as it is, with the same id maps', () => {
    const k = keys(renderConfig({ ...spec, rootfs: '/pool/slivers/0b7e6c1e/rootfs', rootfsShifted: true }, facts, opts));
    expect(k.get('lxc.rootfs.path')).toEqual(['dir:/pool/slivers/0b7e6c1e/rootfs']);
    expect(k.has('lxc.rootfs.options')).toBe(false);
    expect(k.get('lxc.idmap')).toEqual(['u 0 1000000 65536', 'g 0 1000000 65536']);
  });

  it('uses cgroup2 keys on a unified host, and LXC apparmor when the kernel has it', () => {
    const k = keys(renderConfig(spec, { cgroups: unified, seccompProfile: null, apparmor: true }, opts));
    expect(k.get('lxc.cgroup2.memory.max')).toEqual([String(256 * 1024 * 1024)]);
    expect(k.get('lxc.cgroup2.cpu.weight')).toEqual([String(sharesToWeight(512))]);
    expect(k.get('lxc.cgroup2.pids.max')).toEqual(['200']);
    expect(k.get('lxc.cgroup2.devices.deny')).toEqual(['a']);
    expect([...k.keys()].some((key) => key.startsWith('lxc.cgroup.'))).toBe(false);
    expect(k.has('lxc.seccomp.profile')).toBe(false);
    expect(k.get('lxc.apparmor.profile')).toEqual(['generated']);
  });

  it('leaves out what the host lacks, and gives a loopback-only sliver no interface', () => {
    const bare: CgroupLayout = { mode: 'legacy', memory: null, cpu: 'v1', pids: null, freezer: null, devices: null };
    const text = renderConfig({ ...spec, net: null }, { ...facts, cgroups: bare }, opts);
    const k = keys(text);
    expect(k.has('lxc.cgroup.memory.limit_in_bytes')).toBe(false);
    expect(k.has('lxc.cgroup.pids.max')).toBe(false);
    expect(text).toContain('# no memory controller on this host');
    expect(k.get('lxc.net.0.type')).toEqual(['empty']);
    expect(k.has('lxc.net.0.link')).toBe(false);
  });

  it('renders a privileged sliver without idmaps and with more capabilities dropped', () => {
    const k = keys(renderConfig({ ...spec, idmapBase: null }, facts, opts));
    expect(k.has('lxc.idmap')).toBe(false);
    expect(k.has('lxc.rootfs.options')).toBe(false);
    const drops = k.get('lxc.cap.drop')?.[0]?.split(' ');
    expect(drops).toContain('sys_admin');
    expect(drops).toContain('mknod');
  });

  it('maps cpu shares to v2 weights like runc does', () => {
    expect(sharesToWeight(2)).toBe(1);
    expect(sharesToWeight(1024)).toBe(39);
    expect(sharesToWeight(262144)).toBe(10000);
  });
});

describe('seccomp policy', () => {
  /** The requests as linux/btrfs.h defines them: printed by a C program that includes the header
   * (linux-libc-dev 6.1), not computed the way seccomp.ts computes them. */
  const FROM_HEADER: Record<string, number> = {
    BTRFS_IOC_SNAP_CREATE: 0x50009401,
    BTRFS_IOC_SUBVOL_CREATE: 0x5000940e,
    BTRFS_IOC_SNAP_DESTROY: 0x5000940f,
    BTRFS_IOC_DEFAULT_SUBVOL: 0x40089413,
    BTRFS_IOC_SNAP_CREATE_V2: 0x50009417,
    BTRFS_IOC_SUBVOL_CREATE_V2: 0x50009418,
    BTRFS_IOC_SUBVOL_SETFLAGS: 0x4008941a,
    BTRFS_IOC_SET_RECEIVED_SUBVOL: 0xc0c89425,
    BTRFS_IOC_SET_RECEIVED_SUBVOL_32: 0xc0c09425, // fs/btrfs/ioctl.c, packed 32-bit layout
    BTRFS_IOC_QUOTA_CTL: 0xc0109428,
    BTRFS_IOC_QGROUP_ASSIGN: 0x40189429,
    BTRFS_IOC_QGROUP_CREATE: 0x4010942a,
    BTRFS_IOC_QGROUP_LIMIT: 0x8030942b,
    BTRFS_IOC_QUOTA_RESCAN: 0x4040942c,
    BTRFS_IOC_SNAP_DESTROY_V2: 0x5000943f,
  };

  it('denies every btrfs subvolume, snapshot and quota request, with the numbers of linux/btrfs.h', () => {
    expect(Object.fromEntries(DENIED_BTRFS_IOCTLS.map((i) => [i.name, i.request]))).toEqual(FROM_HEADER);
  });

  it("is LXC's default policy plus one masked ioctl rule per request, in lines LXC 5.0 parses", () => {
    const text = renderSeccompPolicy();
    expect(renderSeccompPolicy()).toBe(text); // deterministic: check() compares before writing
    const lines = text.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.slice(0, 2)).toEqual(['2', 'denylist']); // version, then policy type: nothing before
    expect(lines).not.toContain('');
    const rules = lines.slice(2).filter((l) => !l.startsWith('#'));
    expect(rules.slice(0, 2)).toEqual(['reject_force_umount', '[all]']);
    expect(rules.slice(2, 2 + LXC_DEFAULT_SECCOMP_RULES.length)).toEqual([...LXC_DEFAULT_SECCOMP_RULES]);
    const ioctls = rules.slice(2 + LXC_DEFAULT_SECCOMP_RULES.length);
    // Low 32 bits only: a plain SCMP_CMP_EQ on the 64-bit register is bypassed by setting bit 32.
    expect(ioctls).toEqual(Object.values(FROM_HEADER).map((n) => `ioctl errno 1 [1,0x${n.toString(16).padStart(8, '0')},SCMP_CMP_MASKED_EQ,0xffffffff]`));
    // Each rule is named in the comment line above it (comments on a rule line break LXC's parser).
    for (const { name, request } of DENIED_BTRFS_IOCTLS) {
      const i = lines.findIndex((l) => l.startsWith(`# ${name} = `));
      expect(lines[i + 1], name).toContain(`[1,0x${request.toString(16).padStart(8, '0')},`);
    }
  });
});

describe('spec validation', () => {
  it.each([
    [{ id: 'not-a-uuid' }, /id/],
    [{ id: ID.toUpperCase() }, /id/],
    [{ hostname: 'a\nlxc.cap.drop =' }, /hostname/],
    [{ hostname: '' }, /hostname/],
    [{ rootfs: 'relative/dir' }, /rootfs/],
    [{ rootfs: '/x\nlxc.include = /etc/passwd' }, /rootfs/],
    [{ rootfs: '/' }, /rootfs/],
    [{ memoryMb: 0 }, /memoryMb/],
    [{ memoryMb: 1.5 }, /memoryMb/],
    [{ cpuShares: 1 }, /cpuShares/],
    [{ pids: -1 }, /pids/],
    [{ idmapBase: 0 }, /idmapBase/],
    [{ idmapBase: 2 ** 32 - 10 }, /idmapBase/],
    [{ net: { link: 'way-too-long-ifname', address: '10.0.0.2/30', gateway: '10.0.0.1' } }, /net\.link/],
    [{ net: { link: 'veth0', address: '10.0.0.2', gateway: '10.0.0.1' } }, /net\.address/],
    [{ net: { link: 'veth0', address: '10.0.0.2/33', gateway: '10.0.0.1' } }, /net\.address/],
    [{ net: { link: 'veth0', address: '10.0.0.2/30', gateway: 'gw' } }, /net\.gateway/],
  ] as Array<[Partial<InstanceSpec>, RegExp]>)('refuses %j', (patch, field) => {
    expect(() => validateInstanceSpec({ ...spec, ...patch })).toThrow(field);
    expect(() => renderConfig({ ...spec, ...patch }, facts, opts)).toThrow(field);
  });

  it('names containers deterministically and recognises only its own', () => {
    expect(containerName(ID)).toBe(`sl-${ID}`);
    expect(idFromContainerName(`sl-${ID}`)).toBe(ID);
    expect(idFromContainerName('sl-x')).toBeNull();
    expect(idFromContainerName(ID)).toBeNull();
  });
});

describe('cgroup layout', () => {
  const hybridMounts = [
    '/dev/vda / ext4 rw,relatime 0 0',
    'tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0',
    'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0',
    'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
    'cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0',
    'cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0',
    'cgroup /sys/fs/cgroup/devices cgroup rw,relatime,devices 0 0',
    'cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0',
    'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
  ].join('\n');

  it('puts controllers on v1 on a hybrid host (this project\'s machines)', () => {
    expect(parseCgroupLayout(hybridMounts, 'hugetlb\n')).toEqual(hybrid);
  });

  it('takes a controller from v2 only when the v2 root offers it', () => {
    const noMemoryV1 = hybridMounts.replace(/.*memory.*\n/, '');
    expect(parseCgroupLayout(noMemoryV1, 'memory hugetlb').memory).toBe('v2');
    expect(parseCgroupLayout(noMemoryV1, 'hugetlb').memory).toBeNull();
  });

  it('recognises a unified host, where freezing and device rules are built in', () => {
    expect(parseCgroupLayout('cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0', 'cpuset cpu io memory pids')).toEqual(unified);
  });

  it('names the limits a layout cannot enforce: all three where no hierarchy is visible (`ip netns exec` remounts /sys)', () => {
    expect(missingLimits(parseCgroupLayout(hybridMounts, 'hugetlb\n'))).toEqual([]);
    const hidden = hybridMounts.split('\n').filter((l) => !/cgroup/.test(l)).join('\n');
    expect(missingLimits(parseCgroupLayout(hidden, null))).toEqual(['memory', 'cpu', 'pids']);
    expect(missingLimits(parseCgroupLayout(hybridMounts.replace(/.*pids.*\n/, ''), 'hugetlb'))).toEqual(['pids']);
  });

  it('says which controller holds each limit, so a live value is read where it lives', () => {
    const limits = resourceLimits({ memoryMb: 64, cpuShares: 512, cpuCapPercent: 50, pids: 128 }, parseCgroupLayout(hybridMounts, 'hugetlb'));
    expect(limits.map((l) => `${l.controller}:${l.file}=${l.value}`)).toEqual([
      'memory:memory.limit_in_bytes=67108864', 'cpu:cpu.shares=512', 'cpu:cpu.cfs_period_us=100000', 'cpu:cpu.cfs_quota_us=50000', 'pids:pids.max=128',
    ]);
  });

  it('reads resident memory from memory.stat', () => {
    const v1 = parseMemoryStat('cache 16384\nrss 1331200\nmapped_file 0\ntotal_rss 1400000\ntotal_mapped_file 8192\n');
    expect(residentBytes(v1, 'v1')).toBe(1_408_192);
    expect(residentBytes(parseMemoryStat('anon 2000000\nfile 900000\nfile_mapped 4096\n'), 'v2')).toBe(2_004_096);
    expect(residentBytes(parseMemoryStat(''), 'v2')).toBeNull();
  });
});
