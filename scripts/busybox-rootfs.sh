#!/usr/bin/env bash
# Build a busybox root filesystem in DIR from Debian's busybox-static, the
# same way hoist-testutil's busybox_rootfs() does: the binary, one link per
# applet, /bin/sh, minimal /etc/passwd and /etc/group.
set -euo pipefail
dir=${1:?usage: busybox-rootfs.sh DIR}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "error: $busybox is missing: install Debian's busybox-static" >&2; exit 1; }
mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/app,var,proc,sys,dev}
chmod 1777 "$dir/tmp"
chmod 700 "$dir/root"
install -m 755 "$busybox" "$dir/bin/busybox"
"$busybox" --list-full | while read -r applet; do
    [ -n "$applet" ] && [ "$applet" != bin/busybox ] || continue
    [ -e "$dir/$applet" ] || [ -L "$dir/$applet" ] && continue
    mkdir -p "$(dirname "$dir/$applet")"
    ln -s /bin/busybox "$dir/$applet"
done
[ -L "$dir/bin/sh" ] || ln -s /bin/busybox "$dir/bin/sh"
cat > "$dir/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
PASSWD
cat > "$dir/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
wheel:x:10:app
nogroup:x:65534:
app:x:1000:
GROUP
