#!/usr/bin/env bash
# Builds the tiny test image: a root filesystem tarball made from the host's own busybox-static
# and OpenSSH server (and iperf3 when the host has it), enough to boot under LXC and answer ssh.
# Usage: build.sh OUT.tar
# Idempotent: the tree is assembled in a temp dir and the tarball renamed over OUT.tar at the end.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT.tar" >&2
  exit 2
fi
out=$1

for tool in busybox /usr/sbin/sshd /usr/bin/ssh-keygen ldd tar; do
  if ! command -v "$tool" >/dev/null; then
    echo "build.sh: $tool is missing (apt-get install busybox-static openssh-server)" >&2
    exit 1
  fi
done
busybox_bin=$(command -v busybox)
if ldd "$busybox_bin" >/dev/null 2>&1; then
  echo "build.sh: $busybox_bin is dynamically linked; install busybox-static" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "${TMPDIR:-/tmp}/tiny-image.XXXXXX")
# The tarball is written next to OUT, so the final rename is atomic.
partial=$(mktemp "$out.partial.XXXXXX")
trap 'rm -rf "$work" "$partial"' EXIT
root=$work/rootfs

# Debian's merged-/usr layout: /bin, /sbin, /lib and /lib64 are relative links into usr/.
mkdir -p "$root"/usr/{bin,sbin,lib,lib64}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
mkdir -p "$root"/{dev,proc,sys,run/sshd,var/empty,var/log,tmp,root/.ssh,etc/ssh,etc/init.d,home}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root" "$root/root/.ssh"

# busybox and its applet links, relative so they resolve inside and outside the container.
# One perl process makes all ~270 links (perl-base is Essential in Debian); a fork per link
# would double the build time.
install -m 0755 "$busybox_bin" "$root/usr/bin/busybox"
"$busybox_bin" --list-full | perl -e '
  my $root = shift;
  while (my $applet = <STDIN>) {
    chomp $applet;
    my ($dir, $name) = $applet =~ m{^(?:usr/)?(s?bin)/([^/]+)$} or next;
    next if $name eq "busybox";
    my $link = "$root/usr/$dir/$name";
    next if -e $link || -l $link;
    symlink($dir eq "bin" ? "busybox" : "../bin/busybox", $link) or die "symlink $link: $!\n";
  }' "$root"

# sshd, ssh-keygen and every shared library they load, the ELF loader included (ldd prints it
# as an absolute path). cp --parents puts each at the same path in the image (through the
# image's lib -> usr/lib links); -L stores the file itself under its soname, not the host's link.
# iperf3 too when the host has it (scripts/setup.sh installs it): tests measure a sliver's rate
# caps from inside the sliver.
bins=(/usr/sbin/sshd /usr/bin/ssh-keygen)
if [[ -x /usr/bin/iperf3 ]]; then
  bins+=(/usr/bin/iperf3)
fi
for bin in "${bins[@]}"; do
  install -m 0755 "$bin" "$root$bin"
done
mapfile -t libs < <(ldd "${bins[@]}" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
cp -L --parents -t "$root" "${libs[@]}"

# Minimal /etc: root, sshd's privilege-separation user, files-only name service.
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534:sshd privsep:/run/sshd:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
# "*" is no password but not a locked account, so key logins work with UsePAM no.
printf 'root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' > "$root/etc/shadow"
chmod 0600 "$root/etc/shadow"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
printf '/bin/sh\n/bin/ash\n' > "$root/etc/shells"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
printf 'tiny\n' > "$root/etc/hostname"
cat > "$root/etc/ssh/sshd_config" <<'SSHD'
# Tiny test image: key logins only; host key generated at first boot.
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
Subsystem sftp internal-sftp
SSHD

# Init: busybox init (/sbin/init, LXC's default lxc.init.cmd). LXC already mounts /proc, /sys,
# /dev and the cgroups, so rcS mounts nothing; it only makes this sliver's own host key (never
# shipped in the image). sshd -e logs to the console, which LXC writes to its console log. On
# lxc-stop's SIGPWR busybox init halts: TERM to everything, then KILL a second later.
cat > "$root/etc/inittab" <<'INITTAB'
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/sshd -D -e
INITTAB
cat > "$root/etc/init.d/rcS" <<'RCS'
#!/bin/sh
# First boot of a sliver: its own sshd host key. Everything else is already in place.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mkdir -p /run/sshd /var/empty
chmod 0755 /run/sshd
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
  ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
RCS
chmod 0755 "$root/etc/init.d/rcS"

tar --create --file "$partial" --directory "$root" --owner=0 --group=0 --numeric-owner --sort=name .
chmod 0644 "$partial"
mv -f "$partial" "$out"
