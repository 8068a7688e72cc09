#!/usr/bin/env bash
# Make a local stand-in for python:3.11-slim, for machines that reach Debian's packages but no container registry
# (`make base-image`; `make images` runs it when the base image is missing and cannot be pulled).
#
#   bash scripts/base-image.sh            build it unless CONTAINER_TOOL already has BASE_IMAGE
#   FORCE=1 bash scripts/base-image.sh    build it again
#
# What it is: Debian bookworm's minimal base (`debootstrap --variant=minbase`, the same set debian:bookworm-slim
# starts from), Debian's CPython 3.11, and a virtual environment at /usr/local, so that `python`, `python3` and
# `pip` are /usr/local/bin's and `pip install` writes to /usr/local/lib/python3.11/site-packages, as in the
# official image. Nothing else is added: no compiler, no libgomp (the Dockerfiles install what they need). It
# trusts this machine's CA bundle (copied in, with a pip.conf naming it) so that a build's `pip install` reaches
# the package index the way this machine does. Imported under the official name, so the Dockerfiles are unchanged.
#
# Needs root, debootstrap and docker or podman (CONTAINER_TOOL, as scripts/images.sh picks it). About 200 MB.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim}"
SUITE="${DEBIAN_SUITE:-bookworm}"
# The first Debian mirror apt is configured with (deb822 or one-line format), else Debian's own.
default_mirror() {
  local uri
  uri="$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
  [[ -n "$uri" ]] || uri="$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\/debian\)[[:space:]].*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)"
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(default_mirror)}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# shellcheck source=scripts/container-tool.sh
source "$ROOT/scripts/container-tool.sh"
TOOL="$(container_tool)"

if [[ "${FORCE:-0}" != "1" ]] && "$TOOL" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base-image.sh: $TOOL already has $BASE_IMAGE (FORCE=1 rebuilds it)"
  exit 0
fi
for need in debootstrap chroot tar; do
  command -v "$need" >/dev/null || { echo "base-image.sh: $need is missing (apt-get install debootstrap)" >&2; exit 1; }
done
[[ "$(id -u)" == "0" ]] || { echo "base-image.sh: debootstrap needs root" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/base-image.XXXXXX")"
ROOTFS="$WORK/rootfs"
cleanup() {
  # debootstrap mounts /proc and /sys inside the root while it works; never leave one behind.
  local m
  awk -v r="$ROOTFS" '$2 ~ "^"r {print $2}' /proc/mounts | sort -r | while IFS= read -r m; do umount -l "$m" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start=$SECONDS
echo "base-image.sh: debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase --include=python3.11,ca-certificates,netbase,tzdata \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -n 30 "$WORK/debootstrap.log" >&2
  exit 1
}
# python3.11-venv (ensurepip) fails to configure inside debootstrap's first pass; apt installs it cleanly after.
chroot "$ROOTFS" apt-get install -y -qq --no-install-recommends python3.11-venv >"$WORK/apt.log" 2>&1 || {
  tail -n 30 "$WORK/apt.log" >&2
  exit 1
}
# The official image's layout: python and pip on /usr/local/bin, packages in /usr/local/lib/python3.11.
chroot "$ROOTFS" /usr/bin/python3.11 -m venv --without-pip /usr/local
chroot "$ROOTFS" /usr/local/bin/python -m ensurepip --default-pip >/dev/null
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOTFS/etc/pip.conf"
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/usr/local/bin/[Aa]ctivate* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*

tar -C "$ROOTFS" --numeric-owner -c . | "$TOOL" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$BASE_IMAGE" >/dev/null
FLAGS=()
while IFS= read -r flag; do FLAGS+=("$flag"); done < <(container_flags "$TOOL")
echo "base-image.sh: $BASE_IMAGE made in $((SECONDS - start))s ($("$TOOL" run --rm "${FLAGS[@]}" "$BASE_IMAGE" python --version))"
