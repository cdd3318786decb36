#!/usr/bin/env bash
# A release package for one target: dist/edgecascade-VERSION-TARGET.tar.gz holding the stripped
# binary, the models the default cascade.toml names (with their manifests and class names),
# boards/, the demo photos, cascade.toml, the systemd units and udev rules of deploy/ and a
# short README. Unpacked anywhere, `./edgecascade classify photos` runs from that folder alone.
#
#   scripts/dist.sh aarch64-unknown-linux-gnu            # Pi 4/5 on 64-bit Pi OS, Jetson
#   scripts/dist.sh armv7-unknown-linux-gnueabihf        # Pi on 32-bit Pi OS
#   scripts/dist.sh x86_64-unknown-linux-gnu             # a PC as the host
#   scripts/dist.sh aarch64-unknown-linux-gnu --check    # then classify the photos from the
#                                                        # unpacked package (qemu off the board)
#
# Options:
#   --profile P   cargo profile to build (default: release, what users should ship; `dev`
#                 reuses a `cargo test --target TARGET` build, as CI does: same code, its
#                 dependencies at opt-level 3 but edgecascade itself at opt-level 1)
#   --no-build    package the binary already built for TARGET and profile; fail if there is none
#   --check       unpack the tarball into a temporary folder and run `edgecascade classify`
#                 on the shipped photos from there, through scripts/target-runner (qemu-user
#                 when TARGET is not this machine's architecture); fails unless every photo
#                 gets its labelled class
# The profile can also be given as EDGECASCADE_DIST_PROFILE. Cross targets need Debian's
# cross toolchain (gcc-aarch64-linux-gnu libc6-dev-arm64-cross, or gcc-arm-linux-gnueabihf
# libc6-dev-armhf-cross) and `rustup target add TARGET`; --check on them needs qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
target= profile=${EDGECASCADE_DIST_PROFILE:-release} build=1 check=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) [[ $# -ge 2 ]] || usage; profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --no-build) build=0; shift ;;
    --check) check=1; shift ;;
    -h | --help) usage ;;
    -*) echo "dist.sh: unknown option $1" >&2; usage ;;
    *) [[ -z "$target" ]] || usage; target=$1; shift ;;
  esac
done
[[ -n "$target" ]] || usage

case "$target" in
  aarch64-unknown-linux-gnu) tools=aarch64-linux-gnu- arch=aarch64 ;;
  armv7-unknown-linux-gnueabihf) tools=arm-linux-gnueabihf- arch=arm ;;
  x86_64-unknown-linux-gnu) tools= arch=x86_64 ;;
  *) echo "dist.sh: no packaging rules for target '$target' (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, x86_64-unknown-linux-gnu)" >&2; exit 2 ;;
esac
# The same tools on the board itself: Debian names its native binutils with the triple too.
strip="${tools}strip"
command -v "$strip" >/dev/null || { echo "dist.sh: $strip not found (install Debian's binutils for $target)" >&2; exit 1; }

# Cargo puts the dev profile's output in debug/, every other profile in a folder of its name.
case "$profile" in dev) outdir=debug ;; *) outdir=$profile ;; esac
target_dir=$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-${CARGO_TARGET_DIR:-$root/target}}
bin="$target_dir/$target/$outdir/edgecascade"

if [[ $build == 1 ]]; then
  echo "dist.sh: cargo build --profile $profile --target $target --bin edgecascade" >&2
  cargo build --locked --profile "$profile" --target "$target" --bin edgecascade
fi
[[ -x "$bin" ]] || { echo "dist.sh: no binary at $bin (build it, or drop --no-build)" >&2; exit 1; }

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
name="edgecascade-$version-$target"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/$name"
mkdir -p "$pkg/models" "$pkg/deploy"

# The binary, stripped with the target's own strip (symbols and debug information out).
"$strip" -o "$pkg/edgecascade" "$bin"

# The models the default cascade names: each manifest, its ONNX file and class names
# (manifest paths are relative to the manifest; the config's relative to the config).
cp cascade.toml "$pkg/"
models=$(sed -n 's/^model *= *"\(.*\)".*/\1/p' cascade.toml)
[[ -n "$models" ]] || { echo "dist.sh: cascade.toml names no model" >&2; exit 1; }
for manifest in $models; do
  case "$manifest" in models/*.toml) ;; *) echo "dist.sh: $manifest is not under models/" >&2; exit 1 ;; esac
  cp "$manifest" "$pkg/models/"
  for key in onnx classes; do
    file=$(sed -n "s/^$key *= *\"\(.*\)\".*/\1/p" "$manifest")
    [[ -n "$file" && -f "models/$file" ]] || { echo "dist.sh: $manifest: no $key file models/$file" >&2; exit 1; }
    cp "models/$file" "$pkg/models/"
  done
done
cp models/README.md "$pkg/models/"

cp -r boards photos "$pkg/"
cp deploy/*.service deploy/*.rules "$pkg/deploy/"
cp deploy/README.md "$pkg/README.md"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo " (uncommitted changes)" || true)
# The newest C library version the binary asks for: the board's glibc must be at least that.
glibc=$("${tools}objdump" -T "$pkg/edgecascade" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' \
  | sort -Vu | tail -1 || true)
printf 'edgecascade %s\ntarget %s\nprofile %s\ncommit %s%s\nneeds glibc %s or newer\n' \
  "$version" "$target" "$profile" "$commit" "$dirty" "${glibc:-(unknown)}" >"$pkg/BUILD"

mkdir -p dist
tarball="dist/$name.tar.gz"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"
echo "dist.sh: wrote $tarball ($(du -h "$tarball" | cut -f1))" >&2

if [[ $check == 1 ]]; then
  # From the unpacked package alone: its binary, its cascade.toml and models, its photos.
  tmp="$stage/check"
  mkdir "$tmp"
  tar -C "$tmp" -xzf "$tarball"
  cd "$tmp/$name"
  echo "dist.sh: check: $target binary classifying the shipped photos in $(pwd)" >&2
  out=$("$root/scripts/target-runner" "$arch" ./edgecascade classify --json photos)
  echo "$out"
  # Every photo must get the class photos/labels.csv gives it (the cascade's answers, as
  # tests/cli.rs checks on x86).
  bad=0 n=0
  while IFS=, read -r file label; do
    [[ "$file" == file ]] && continue
    n=$((n + 1))
    if ! grep -F "\"photos/$file\"" <<<"$out" | grep -Eq "\"class\":$label[,}]"; then
      echo "dist.sh: check: $file did not get class $label" >&2
      bad=$((bad + 1))
    fi
  done <photos/labels.csv
  [[ $n -gt 0 && $bad == 0 ]] || { echo "dist.sh: check failed ($bad of $n photos)" >&2; exit 1; }
  echo "dist.sh: check passed: $n of $n photos answered with their labelled class" >&2
fi
