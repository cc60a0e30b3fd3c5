#!/usr/bin/env bash
# bench/run.sh — times a full-tree audit against the bare checksum tools, side by side.
#
#   bench/run.sh [RUNS]          RUNS runs of each (default 7), alternating, warm cache
#   bench/run.sh --cold [RUNS]   the page cache is dropped before every run (root only)
#
# Builds the corpus with ../shared/corpus/make-corpus.sh if $KFD_CORPUS (default
# /tmp/kfd-corpus) has none, builds kfd-audit in release mode, then times, in turn:
#   kfd-audit     kfd-audit --root CORPUS scan -q --tree <dpkg-owned tree>
#                 (hash every file, rules, backups, DKMS state: the whole audit)
#   kfd-audit-1x  the same, one MD5 stream per file (KFD_AUDIT_MD5_LANES=off), to
#                 show what hashing sixteen files at a time per core buys
#   kfd-incident  the same tree after the incident's change (mutation U01 on
#                 kfd_crat.c, with .bak, ~ and .patched backups, made by
#                 ../shared/corpus/backups.sh on a hard-link copy): the rules run on
#                 the changed file and the backups get their verdicts
#   md5sum        md5sum -c --quiet over dpkg's md5sums, from the root (coreutils, one core)
#   debsums       debsums -s --root=CORPUS amdgpu-dkms (if debsums is installed)
#   rg            rg for the rule literals over the same tree (if rg is installed)
# and prints each median wall time and CPU time (user + sys), kfd-audit's wall time
# as a fraction of each, and kfd-audit's peak RSS. Needs GNU time (/usr/bin/time).
# Not a test: nothing here asserts a time. On a machine busy with other work the
# wall times wander; the CPU times much less.
set -euo pipefail
cd "$(dirname "$0")/.."
COLD=0
if [ "${1:-}" = --cold ]; then
  COLD=1
  shift
fi
RUNS=${1:-7}
CORPUS=${KFD_CORPUS:-/tmp/kfd-corpus}
TREE=usr/src/amdgpu-6.12.117-debian
MD5SUMS=var/lib/dpkg/info/amdgpu-dkms.md5sums

[ -x /usr/bin/time ] || { echo "bench/run.sh: needs GNU time: apt-get install time" >&2; exit 2; }
if [ "$COLD" = 1 ] && ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  echo "bench/run.sh: --cold needs root (it writes /proc/sys/vm/drop_caches)" >&2
  exit 2
fi
if [ ! -f "$CORPUS/$TREE/dkms.conf" ]; then
  ../shared/corpus/make-corpus.sh "$CORPUS"
fi
cargo build --release --quiet
BIN=$PWD/target/release/kfd-audit

work=$(mktemp -d)
tmp=$work/time
trap 'rm -rf "$work"' EXIT
# The incident: a hard-link copy of the corpus (cheap; the corpus itself must stay
# clean), the changed file un-shared before the mutation touches it.
incident=$work/root
cp -al "$CORPUS" "$incident"
for f in amd/amdkfd/kfd_crat.c; do
  cp -p "$incident/$TREE/$f" "$incident/$TREE/$f.new" && mv "$incident/$TREE/$f.new" "$incident/$TREE/$f"
done
if ! ../shared/corpus/backups.sh setup "$incident/$TREE" U01 mixed >"$tmp" 2>&1; then
  echo "bench/run.sh: could not set up the incident tree:" >&2
  cat "$tmp" >&2
  exit 2
fi

declare -A CMDS
CMDS[kfd-audit]="$BIN --root $CORPUS scan -q --tree $CORPUS/$TREE"
CMDS[kfd-audit-1x]="KFD_AUDIT_MD5_LANES=off ${CMDS[kfd-audit]}"
CMDS[kfd-incident]="$BIN --root $incident scan -q --tree $incident/$TREE"
CMDS[md5sum]="cd $CORPUS && md5sum -c --quiet $MD5SUMS"
ORDER=(kfd-audit kfd-audit-1x kfd-incident md5sum)
if command -v debsums >/dev/null; then
  CMDS[debsums]="debsums -s --root=$CORPUS amdgpu-dkms"
  ORDER+=(debsums)
fi
if command -v rg >/dev/null; then
  # Identifiers the built-in rules look for (memory flags, gfx target, device ids,
  # safety checks); rg searches every file for all of them in one pass.
  words=(HSA_MEM_FLAGS_HOT_PLUGGABLE HSA_MEM_FLAGS_NON_VOLATILE gfx_target_version
    HSA_CAP_ 0x731F noretry amdgpu_noretry CRAT_MEM_FLAGS_ sched_policy
    KFD_GC_VERSION cwsr_enable)
  CMDS[rg]="rg -c -F$(printf ' -e %s' "${words[@]}") $CORPUS/$TREE"
  ORDER+=(rg)
fi

declare -A WALL CPU
# Every command must work before it is timed (a failing tool would time nothing).
for name in "${ORDER[@]}"; do
  rc=0
  bash -c "${CMDS[$name]}" >/dev/null 2>"$tmp" || rc=$?
  # kfd-audit exits 1 when it finds something, rg when it finds nothing.
  if [ "$rc" -gt 1 ]; then
    echo "bench/run.sh: '$name' failed (exit $rc): $(head -c 300 "$tmp")" >&2
    exit 2
  fi
done
peak=0
for ((i = 0; i < RUNS; i++)); do
  for name in "${ORDER[@]}"; do
    if [ "$COLD" = 1 ]; then sync && echo 3 >/proc/sys/vm/drop_caches; fi
    start=$EPOCHREALTIME
    /usr/bin/time -f '%U %S %M' -o "$tmp" bash -c "${CMDS[$name]}" >/dev/null 2>&1 || true
    end=$EPOCHREALTIME
    # GNU time puts "Command exited with non-zero status N" first when it does.
    read -r user sys kb < <(tail -n 1 "$tmp")
    WALL[$name]+="$(awk "BEGIN {print $end - $start}") "
    CPU[$name]+="$(awk "BEGIN {print $user + $sys}") "
    case $name in kfd-audit | kfd-incident) [ "$kb" -le "$peak" ] || peak=$kb ;; esac
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
files=$(find "$CORPUS/$TREE" -type f | wc -l)
bytes=$(du -sb --apparent-size "$CORPUS/$TREE" | cut -f1)
printf 'tree: %s (%s files, %s MB), %s runs each, alternating, %s cache\n' \
  "$TREE" "$files" "$((bytes / 1000000))" "$RUNS" "$([ "$COLD" = 1 ] && echo cold || echo warm)"
printf 'machine: %s cores, %s, load average %s\n' "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(cut -d' ' -f1-3 /proc/loadavg)"
base=$(echo "${WALL[kfd-audit]}" | median)
printf '%-13s %10s %10s %16s\n' command wall_s cpu_s kfd-audit/this
for name in "${ORDER[@]}"; do
  w=$(echo "${WALL[$name]}" | median)
  c=$(echo "${CPU[$name]}" | median)
  printf '%-13s %10.3f %10.2f %16.2f\n' "$name" "$w" "$c" "$(awk "BEGIN {print $base / $w}")"
done
printf 'kfd-audit peak RSS (clean and incident runs): %.1f MB\n' "$(awk "BEGIN {print $peak / 1024}")"
