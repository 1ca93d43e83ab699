#!/bin/sh
# Builds revostack-demo/busybox:1 from this machine's static busybox: no registry needed.
set -eu
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "no busybox: apt-get install busybox-static" >&2; exit 1; }
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/site" "$ROOT/etc"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in sh httpd wget nc sleep echo cat ls env true; do ln -s busybox "$ROOT/bin/$applet"; done
echo "root:x:0:0:root:/:/bin/sh" > "$ROOT/etc/passwd"
tar -C "$ROOT" -c . | docker import - revostack-demo/busybox:1
echo "built revostack-demo/busybox:1"
