#!/usr/bin/env bash
# bench/run.sh — times kfd-audit against the bare checksum tools, side by side, in
# three scenes, each command run in turn with its peers (A B C A B C ...):
#
#   bench/run.sh [--cold] [--quick] [--scenes LIST] [RUNS]
#
#   RUNS       runs of each command (default 5; 1 with --quick)
#   --cold     the page cache is dropped before every run (root only)
#   --quick    small scenes that take seconds (what CI runs to check that this script
#              works): a generated 300-file tree instead of the corpus, two small
#              packages every Debian has instead of ROCm, 2,000 files instead of
#              100,000, the debug binary (`cargo build`) instead of a release build
#   --scenes   a comma-separated subset of: tree,rocm,big (default: all three)
#
# Scenes:
#   tree  the 6.12 corpus tree (../shared/corpus/make-corpus.sh builds it into
#         $KFD_CORPUS, default /tmp/kfd-corpus, if it is not there):
#           kfd-audit     kfd-audit --root CORPUS scan -q --tree <dpkg-owned tree>
#                         (hash every file, rules, backups, DKMS state: the whole audit)
#           kfd-audit-1x  the same, one MD5 stream per file (KFD_AUDIT_MD5_LANES=off)
#           kfd-incident  the same tree after the incident's change (mutation U01 on
#                         kfd_crat.c with .bak, ~ and .patched backups, made by
#                         ../shared/corpus/backups.sh on a hard-link copy): the rules
#                         run on the changed file and the backups get their verdicts
#           md5sum        md5sum -c --quiet over dpkg's md5sums (coreutils, one core)
#           debsums       debsums -s --root=CORPUS amdgpu-dkms (if installed)
#           rg            rg for the rule literals over the same tree (if installed)
#   rocm  Debian's ROCm libraries as installed packages ($KFD_BENCH_ROCM_PACKAGES,
#         default librocsparse0 libhsa-runtime64-1 libamdhip64-5; librocsparse0 alone
#         is one 1.3 GB library). Installed with apt-get when missing and run as root,
#         otherwise the scene is skipped and says why:
#           kfd-audit     kfd-audit scan -q --sections rocm --rocm-packages <them>
#                         (files unchanged since an earlier run are not read again:
#                         src/io/digest_cache.rs)
#           kfd-audit-rehash  the same with KFD_AUDIT_DIGEST_CACHE=off: every file
#                         hashed, as on a first run or after a change
#           debsums       debsums -s <them>
#   big   a generated tree of 100,000 small files with dpkg md5sums
#         (bench/make-big-tree.sh), for the memory a large tree costs:
#           kfd-audit     kfd-audit --root R scan -q --tree <it>
#           md5sum        md5sum -c --quiet over its md5sums
#
# Each scene prints, per command, the median wall time, CPU time (user + sys) and
# peak RSS, and kfd-audit's wall time as a fraction of each. Peak RSS and CPU time
# need GNU time (/usr/bin/time); without it (only allowed with --quick) those
# columns say n/a. Not a test: nothing here asserts a time. On a machine busy with
# other work the wall times wander; the CPU times much less.
set -euo pipefail
cd "$(dirname "$0")/.."
COLD=0
QUICK=0
SCENES=tree,rocm,big
RUNS=
while [ $# -gt 0 ]; do
  case $1 in
    --cold) COLD=1 ;;
    --quick) QUICK=1 ;;
    --scenes)
      shift
      SCENES=${1:?--scenes needs a list: tree,rocm,big}
      ;;
    --scenes=*) SCENES=${1#--scenes=} ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *[!0-9]* | '')
      echo "bench/run.sh: unknown argument '$1' (see bench/run.sh --help)" >&2
      exit 2
      ;;
    *) RUNS=$1 ;;
  esac
  shift
done
RUNS=${RUNS:-$([ "$QUICK" = 1 ] && echo 1 || echo 5)}
wants() { [[ ",$SCENES," == *",$1,"* ]]; }

GNU_TIME=0
[ -x /usr/bin/time ] && GNU_TIME=1
if [ "$GNU_TIME" = 0 ] && [ "$QUICK" = 0 ]; then
  echo "bench/run.sh: needs GNU time for CPU time and peak RSS: apt-get install time" >&2
  exit 2
fi
if [ "$COLD" = 1 ] && ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  echo "bench/run.sh: --cold needs root (it writes /proc/sys/vm/drop_caches)" >&2
  exit 2
fi

if [ -n "${KFD_AUDIT_BIN:-}" ]; then
  BIN=$KFD_AUDIT_BIN
elif [ "$QUICK" = 1 ]; then
  cargo build --quiet
  BIN=$PWD/target/debug/kfd-audit
else
  cargo build --release --quiet
  BIN=$PWD/target/release/kfd-audit
fi

work=$(mktemp -d)
tmp=$work/time
trap 'rm -rf "$work"' EXIT

printf 'machine: %s cores, %s, load average %s; %s runs each, alternating, %s cache%s\n' \
  "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$RUNS" "$([ "$COLD" = 1 ] && echo cold || echo warm)" \
  "$([ "$QUICK" = 1 ] && echo ', quick scenes' || true)"

median() { tr ' ' '\n' | awk NF | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# scene TITLE NAME... : times CMDS[NAME] for each NAME, RUNS rounds in turn, and
# prints the table; the first NAME is kfd-audit, whose wall time the ratios divide.
declare -A CMDS
scene() {
  local title=$1
  shift
  local names=("$@") name rc max i start end user sys kb w c p
  local -A wall=() cpu=() peak=()
  # Every command must work before it is timed (a failing tool would time nothing).
  for name in "${names[@]}"; do
    rc=0
    bash -c "${CMDS[$name]}" >/dev/null 2>"$tmp" || rc=$?
    # kfd-audit exits 1 when it finds something, rg when it finds nothing, debsums 2
    # when a file differs from its md5 (a finding, not a failure to run).
    max=1
    [[ $name == debsums* ]] && max=2
    if [ "$rc" -gt "$max" ]; then
      echo "bench/run.sh: '$name' failed (exit $rc): $(head -c 300 "$tmp")" >&2
      exit 2
    fi
  done
  for ((i = 0; i < RUNS; i++)); do
    for name in "${names[@]}"; do
      if [ "$COLD" = 1 ]; then sync && echo 3 >/proc/sys/vm/drop_caches; fi
      start=$EPOCHREALTIME
      if [ "$GNU_TIME" = 1 ]; then
        /usr/bin/time -f '%U %S %M' -o "$tmp" bash -c "${CMDS[$name]}" >/dev/null 2>&1 || true
      else
        bash -c "${CMDS[$name]}" >/dev/null 2>&1 || true
      fi
      end=$EPOCHREALTIME
      wall[$name]+="$(awk "BEGIN {print $end - $start}") "
      if [ "$GNU_TIME" = 1 ]; then
        # GNU time puts "Command exited with non-zero status N" first when it does.
        read -r user sys kb < <(tail -n 1 "$tmp")
        cpu[$name]+="$(awk "BEGIN {print $user + $sys}") "
        peak[$name]+="$kb "
      fi
    done
  done
  local base
  base=$(echo "${wall[${names[0]}]}" | median)
  printf '\n%s\n' "$title"
  printf '  %-13s %9s %9s %11s %15s\n' command wall_s cpu_s peak_MiB kfd-audit/this
  for name in "${names[@]}"; do
    w=$(echo "${wall[$name]}" | median)
    c=$(echo "${cpu[$name]:-}" | median)
    p=$(echo "${peak[$name]:-}" | tr ' ' '\n' | sort -g | tail -n 1)
    printf '  %-13s %9.3f %9s %11s %15.2f\n' "$name" "$w" \
      "$([ "$c" = n/a ] && echo n/a || printf '%.2f' "$c")" \
      "$([ -z "$p" ] && echo n/a || awk "BEGIN {printf \"%.1f\", $p / 1024}")" \
      "$(awk "BEGIN {print $base / $w}")"
  done
}

# ------------------------------------------------------------------ tree
if wants tree; then
  if [ "$QUICK" = 1 ]; then
    # A small generated tree stands for the corpus (which takes minutes to build).
    bench/make-big-tree.sh "$work/small" 300
    root=$work/small
    TREE=usr/src/amdgpu-9.9.9-big
  else
    root=${KFD_CORPUS:-/tmp/kfd-corpus}
    TREE=usr/src/amdgpu-6.12.117-debian
    if [ ! -f "$root/$TREE/dkms.conf" ]; then
      ../shared/corpus/make-corpus.sh "$root"
    fi
  fi
  MD5SUMS=var/lib/dpkg/info/amdgpu-dkms.md5sums
  names=(kfd-audit kfd-audit-1x)
  CMDS[kfd-audit]="$BIN --root $root scan -q --tree $root/$TREE"
  CMDS[kfd-audit-1x]="KFD_AUDIT_MD5_LANES=off ${CMDS[kfd-audit]}"
  if [ "$QUICK" = 0 ]; then
    # The incident: a hard-link copy of the corpus (cheap; the corpus itself must stay
    # clean), the changed file un-shared before the mutation touches it.
    incident=$work/root
    cp -al "$root" "$incident"
    f=$incident/$TREE/amd/amdkfd/kfd_crat.c
    cp -p "$f" "$f.new" && mv "$f.new" "$f"
    if ! ../shared/corpus/backups.sh setup "$incident/$TREE" U01 mixed >"$tmp" 2>&1; then
      echo "bench/run.sh: could not set up the incident tree:" >&2
      cat "$tmp" >&2
      exit 2
    fi
    CMDS[kfd-incident]="$BIN --root $incident scan -q --tree $incident/$TREE"
    names+=(kfd-incident)
  fi
  CMDS[md5sum]="cd $root && md5sum -c --quiet $MD5SUMS"
  names+=(md5sum)
  if command -v debsums >/dev/null && [ "$QUICK" = 0 ]; then
    CMDS[debsums]="debsums -s --root=$root amdgpu-dkms"
    names+=(debsums)
  fi
  if command -v rg >/dev/null && [ "$QUICK" = 0 ]; then
    # Identifiers the built-in rules look for (memory flags, gfx target, device ids,
    # safety checks); rg searches every file for all of them in one pass.
    words=(HSA_MEM_FLAGS_HOT_PLUGGABLE HSA_MEM_FLAGS_NON_VOLATILE gfx_target_version
      HSA_CAP_ 0x731F noretry amdgpu_noretry CRAT_MEM_FLAGS_ sched_policy
      KFD_GC_VERSION cwsr_enable)
    CMDS[rg]="rg -c -F$(printf ' -e %s' "${words[@]}") $root/$TREE"
    names+=(rg)
  fi
  files=$(find "$root/$TREE" -type f | wc -l)
  bytes=$(du -sb --apparent-size "$root/$TREE" | cut -f1)
  scene "tree: $TREE ($files files, $((bytes / 1000000)) MB)" "${names[@]}"
fi

# ------------------------------------------------------------------ rocm
if wants rocm; then
  if [ "$QUICK" = 1 ]; then
    # Two small packages every Debian system has, so that the scene runs anywhere.
    read -r -a pkgs <<<"${KFD_BENCH_ROCM_PACKAGES:-dpkg coreutils}"
  else
    read -r -a pkgs <<<"${KFD_BENCH_ROCM_PACKAGES:-librocsparse0 libhsa-runtime64-1 libamdhip64-5}"
  fi
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  skip=
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$QUICK" = 0 ] && [ "$(id -u)" -eq 0 ]; then
      echo "bench/run.sh: installing ${missing[*]} for the rocm scene (apt-get install)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$tmp" 2>&1 ||
        skip="apt-get install ${missing[*]} failed: $(tail -n 2 "$tmp" | tr '\n' ' ')"
    else
      skip="${missing[*]} not installed (run as root to have them installed, or apt-get install them)"
    fi
  fi
  if [ -z "$skip" ] && ! command -v debsums >/dev/null; then
    skip="debsums is not installed (apt-get install debsums), the peer it is compared with"
  fi
  if [ -n "$skip" ]; then
    printf '\nrocm: skipped: %s\n' "$skip"
  else
    list=$(IFS=,; echo "${pkgs[*]}")
    CMDS[kfd-audit]="$BIN scan -q --sections rocm --rocm-packages $list"
    # Every file hashed again: what the first run (or a run after a change) costs.
    CMDS[kfd-audit-rehash]="KFD_AUDIT_DIGEST_CACHE=off $BIN scan -q --sections rocm --rocm-packages $list"
    CMDS[debsums]="debsums -s ${pkgs[*]}"
    files=0 bytes=0
    for p in "${pkgs[@]}"; do
      sums=
      for s in /var/lib/dpkg/info/"$p".md5sums /var/lib/dpkg/info/"$p":*.md5sums; do
        [ -f "$s" ] && sums=$s && break
      done
      [ -n "$sums" ] || continue
      files=$((files + $(wc -l <"$sums")))
      bytes=$((bytes + $(sed 's/^[0-9a-f]*  /\//' "$sums" | tr '\n' '\0' | du -cb --apparent-size --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)))
    done
    scene "rocm: ${pkgs[*]} ($files files, $((bytes / 1000000)) MB)" kfd-audit kfd-audit-rehash debsums
  fi
fi

# ------------------------------------------------------------------ big
if wants big; then
  n=$([ "$QUICK" = 1 ] && echo 2000 || echo 100000)
  big=$work/big
  bench/make-big-tree.sh "$big" "$n"
  CMDS[kfd-audit]="$BIN --root $big scan -q --tree $big/usr/src/amdgpu-9.9.9-big"
  CMDS[md5sum]="cd $big && md5sum -c --quiet var/lib/dpkg/info/amdgpu-dkms.md5sums"
  scene "big: a generated tree of $n files with dpkg md5sums" kfd-audit md5sum
fi
