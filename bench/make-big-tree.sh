#!/usr/bin/env bash
# bench/make-big-tree.sh ROOT [FILES]
#
# Lays out a synthetic system root with one large DKMS tree owned by dpkg, to measure
# how kfd-audit's memory grows with the number of files:
#   ROOT/usr/src/amdgpu-9.9.9-big/dkms.conf
#   ROOT/usr/src/amdgpu-9.9.9-big/amd/<dir>/<sub>/<name>.c   FILES small source files
#       (default 100000; paths as long as the driver's own, 60 to 90 characters)
#   ROOT/var/lib/dpkg/info/amdgpu-dkms.md5sums                 dpkg's md5 of each file
# ROOT must not exist or be a directory this script made (it holds .kfd-big-tree).
# The files are small (about 600 bytes): what is measured is the cost per file, not
# the hashing.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 ROOT [FILES]" >&2; exit 2; }
root=$1
files=${2:-100000}
if [ -e "$root" ] && [ ! -e "$root/.kfd-big-tree" ]; then
  echo "make-big-tree: $root exists and was not made by this script; name a new directory" >&2
  exit 2
fi
rm -rf "$root"
mkdir -p "$root"
touch "$root/.kfd-big-tree"
perl -e '
use strict; use warnings; use Digest::MD5 qw(md5_hex); use File::Path qw(make_path);
my ($root, $n) = @ARGV;
my $tree = "usr/src/amdgpu-9.9.9-big";
make_path("$root/$tree", "$root/var/lib/dpkg/info");
open(my $c, ">", "$root/$tree/dkms.conf") or die "dkms.conf: $!";
print $c "PACKAGE_NAME=\"amdgpu\"\nPACKAGE_VERSION=\"9.9.9-big\"\nBUILT_MODULE_NAME[0]=\"amdgpu\"\n";
close $c;
open(my $m, ">", "$root/var/lib/dpkg/info/amdgpu-dkms.md5sums") or die "md5sums: $!";
my @top = qw(amdgpu amdkfd display/dc/dml2/dml21/src/dml2_core pm/swsmu/smu13 include/asic_reg);
for my $i (0 .. $n - 1) {
  my $dir = sprintf("amd/%s/block_%03d", $top[$i % @top], int($i / 1000));
  my $rel = sprintf("%s/generated_register_helper_%06d.c", $dir, $i);
  make_path("$root/$tree/$dir") unless -d "$root/$tree/$dir";
  my $body = sprintf("/* SPDX-License-Identifier: MIT */\n#include \"amdgpu.h\"\n\nint helper_%06d(struct amdgpu_device *adev)\n{\n\treturn adev->id + %d;\n}\n", $i, $i) x 4;
  open(my $f, ">", "$root/$tree/$rel") or die "$rel: $!";
  print $f $body;
  close $f;
  print $m md5_hex($body), "  $tree/$rel\n";
}
my $conf = do { local $/; open(my $h, "<", "$root/$tree/dkms.conf") or die; <$h> };
print $m md5_hex($conf), "  $tree/dkms.conf\n";
close $m;
' "$root" "$files"
