#!/usr/bin/env bash
# deb-member-memory.sh - peak memory of reading ONE member out of a ~100 MB package
# archive, the way `kfd-audit diff` reads the clean copy of a modified file.
#
#   bench/deb-member-memory.sh [KFD_AUDIT_BINARY] [COMPRESSION...]
#
# Builds in a temp dir under /tmp a fake root whose apt cache holds a ~100 MB .deb
# (incompressible blobs sorted before the wanted member, so the whole data.tar
# stream must be decompressed to reach it), dpkg's status and md5sums for it, and
# a modified kfd_crat.c; then runs `kfd-audit diff` under `/usr/bin/time -v` and
# prints the peak resident set size, and the space used on disk before and after
# (nothing is extracted). Compressions default to: xz zstd gzip; a level may follow
# a colon (xz:9 makes a 64 MiB xz dictionary, the most any dpkg-deb level uses).
set -euo pipefail
BIN=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/kfd-audit}
shift || true
COMPRESSIONS=${*:-xz zstd gzip}
[ -x "$BIN" ] || { echo "no kfd-audit binary at $BIN (cargo build first)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/kfd-bench-deb.XXXXXX)
trap 'rm -rf -- "$WORK"' EXIT
PKG=amdgpu-dkms
VER=1:6.8.5-2009582.24.04
TREE=usr/src/amdgpu-6.8.5-2009582.24.04

stage=$WORK/stage
mkdir -p "$stage/DEBIAN" "$stage/$TREE/aa-blobs" "$stage/$TREE/amd/amdkfd"
for i in $(seq -w 1 25); do
  head -c $((4 * 1024 * 1024)) /dev/urandom > "$stage/$TREE/aa-blobs/blob$i.bin"
done
{
  echo '// SPDX-License-Identifier: GPL-2.0 OR MIT'
  for i in $(seq 1 2000); do echo "static int kfd_bench_line_$i(void) { return $i; }"; done
} > "$stage/$TREE/amd/amdkfd/kfd_crat.c"
printf 'PACKAGE_NAME="amdgpu"\nPACKAGE_VERSION="6.8.5-2009582.24.04"\n' > "$stage/$TREE/dkms.conf"
cat > "$stage/DEBIAN/control" <<CTL
Package: $PKG
Version: $VER
Architecture: all
Maintainer: kfd-audit bench <bench@example.invalid>
Description: memory benchmark package
CTL
(cd "$stage" && find usr -type f | sort | xargs md5sum) > "$WORK/md5sums"
cp "$WORK/md5sums" "$stage/DEBIAN/md5sums"

root=$WORK/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/cache/apt/archives" "$root/$TREE/amd/amdkfd"
cp "$WORK/md5sums" "$root/var/lib/dpkg/info/$PKG.md5sums"
printf 'Package: %s\nStatus: install ok installed\nArchitecture: all\nVersion: %s\n\n' "$PKG" "$VER" > "$root/var/lib/dpkg/status"
cp "$stage/$TREE/dkms.conf" "$root/$TREE/"
sed 's/return 1000;/return 0x731F;/' "$stage/$TREE/amd/amdkfd/kfd_crat.c" > "$root/$TREE/amd/amdkfd/kfd_crat.c"

for spec in $COMPRESSIONS; do
  z=${spec%%:*}
  level=()
  [ "$spec" = "$z" ] || level=("-z${spec#*:}")
  deb=$root/var/cache/apt/archives/${PKG}_${VER/:/%3a}_all.deb
  rm -f "$root"/var/cache/apt/archives/*.deb
  dpkg-deb "-Z$z" "${level[@]}" --root-owner-group --build "$stage" "$deb" >/dev/null
  size=$(stat -c %s "$deb")
  before=$(du -sk "$root" | cut -f1)
  /usr/bin/time -v "$BIN" --root "$root" diff amd/amdkfd/kfd_crat.c > "$WORK/diff.out" 2> "$WORK/time.out" || true
  grep -q '^-static int kfd_bench_line_1000(void) { return 1000; }' "$WORK/diff.out" && grep -q '^+static int kfd_bench_line_1000(void) { return 0x731F; }' "$WORK/diff.out" && ok=ok || ok=FAILED
  [ "$ok" = ok ] || { echo "unexpected diff output:"; head "$WORK/diff.out"; cat "$WORK/time.out"; }
  after=$(du -sk "$root" | cut -f1)
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.out")
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.out")
  printf 'data.tar %-6s archive %6.1f MB  peak RSS %6.1f MB  wall %s  diff %s  root on disk %d KB -> %d KB\n' \
    "$spec" "$(echo "$size / 1000000" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$wall" "$ok" "$before" "$after"
done
