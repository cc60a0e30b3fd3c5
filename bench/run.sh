#!/usr/bin/env bash
# bench/run.sh — times a full-tree audit against the bare checksum tools, side by side.
#
#   bench/run.sh [RUNS]         (default 7 runs of each, alternating, warm cache)
#
# Builds the corpus with ../shared/corpus/make-corpus.sh if $KFD_CORPUS (default
# /tmp/kfd-corpus) has none, builds kfd-audit in release mode, then times, in turn:
#   kfd-audit   kfd-audit --root CORPUS scan --tree <dpkg-owned tree>   (hash + rules + backups)
#   md5sum      md5sum -c --quiet over dpkg's md5sums, from the root (coreutils, one core)
#   debsums     debsums -s --root=CORPUS amdgpu-dkms (if debsums is installed)
#   rg          rg for the rule literals over the same tree (if rg is installed)
# and prints each median wall time, the ratios to kfd-audit, and kfd-audit's peak RSS.
# Not a test: nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
CORPUS=${KFD_CORPUS:-/tmp/kfd-corpus}
TREE=usr/src/amdgpu-6.12.117-debian

if [ ! -f "$CORPUS/$TREE/dkms.conf" ]; then
  ../shared/corpus/make-corpus.sh "$CORPUS"
fi
cargo build --release --quiet
BIN=$PWD/target/release/kfd-audit

declare -A CMDS
CMDS[kfd-audit]="$BIN --root $CORPUS scan -q --tree $CORPUS/$TREE"
CMDS[md5sum]="cd $CORPUS && md5sum -c --quiet var/lib/dpkg/info/amdgpu-dkms.md5sums"
ORDER=(kfd-audit md5sum)
if command -v debsums >/dev/null; then
  CMDS[debsums]="debsums -s --root=$CORPUS amdgpu-dkms"
  ORDER+=(debsums)
fi
if command -v rg >/dev/null; then
  CMDS[rg]="rg -c -F -e HSA_MEM_FLAGS_HOT_PLUGGABLE -e gfx_target_version -e HSA_CAP_ -e 0x731F -e noretry $CORPUS/$TREE"
  ORDER+=(rg)
fi

declare -A TIMES
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
# One warm-up run of each so every tool sees the same page cache.
for name in "${ORDER[@]}"; do bash -c "${CMDS[$name]}" >/dev/null 2>&1 || true; done
peak=0
for ((i = 0; i < RUNS; i++)); do
  for name in "${ORDER[@]}"; do
    /usr/bin/time -f '%e %M' -o "$tmp" bash -c "${CMDS[$name]}" >/dev/null 2>&1 || true
    read -r secs kb <"$tmp"
    TIMES[$name]+="$secs "
    if [ "$name" = kfd-audit ] && [ "$kb" -gt "$peak" ]; then peak=$kb; fi
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
files=$(wc -l <"$CORPUS/var/lib/dpkg/info/amdgpu-dkms.md5sums")
bytes=$(du -sb --apparent-size "$CORPUS/$TREE" | cut -f1)
printf 'tree: %s (%s files, %s MB), %s runs each, warm cache, %s cores\n' \
  "$TREE" "$files" "$((bytes / 1000000))" "$RUNS" "$(nproc)"
base=$(echo "${TIMES[kfd-audit]}" | median)
printf '%-10s %10s %18s\n' tool median_s "kfd-audit/tool"
for name in "${ORDER[@]}"; do
  m=$(echo "${TIMES[$name]}" | median)
  printf '%-10s %10.3f %18.2f\n' "$name" "$m" "$(echo "$base / $m" | bc -l)"
done
printf 'kfd-audit peak RSS: %.1f MB\n' "$(echo "$peak / 1024" | bc -l)"
