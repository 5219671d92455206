#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the exact llama.cpp source that node-llama-cpp ships, so the
# worker benchmark compares both servers on the same inference code.
#
# Usage: scripts/build-llama-server.sh
#   SPILLWAY_LLAMA_CPP_DIR  where to clone and build (default: .cache/llama.cpp in the repository)
#   BUILD_JOBS              parallel compile jobs (default: the number of CPU cores)
#
# Progress goes to stderr, and on success the binary's path is the only line on stdout. A second run
# with the binary already built prints its path and exits at once.
set -euo pipefail

repository_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$repository_root/node_modules/node-llama-cpp/llama/gitRelease.bundle"
source_dir="${SPILLWAY_LLAMA_CPP_DIR:-$repository_root/.cache/llama.cpp}"
binary="$source_dir/build/bin/llama-server"
jobs="${BUILD_JOBS:-$(nproc)}"

log() {
  printf 'build-llama-server: %s\n' "$*" >&2
}

fail() {
  log "error: $*"
  exit 1
}

[[ -f "$bundle" ]] || fail "llama.cpp bundle not found at $bundle. Run 'npm install' first."
for tool in git cmake c++; do
  command -v "$tool" >/dev/null || fail "'$tool' is required but not installed (Debian: apt-get install git cmake g++)."
done
bundle_commit="$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" { print $1 }')"
[[ -n "$bundle_commit" ]] || fail "could not read the commit of $bundle."

if [[ -d "$source_dir/.git" ]]; then
  checkout_commit="$(git -C "$source_dir" rev-parse HEAD)"
  if [[ "$checkout_commit" != "$bundle_commit" ]]; then
    fail "$source_dir is at commit $checkout_commit, but node-llama-cpp now ships $bundle_commit. Remove $source_dir and run again."
  fi
fi

if [[ -x "$binary" ]]; then
  log "already built from commit $bundle_commit"
  printf '%s\n' "$binary"
  exit 0
fi

started=$SECONDS

if [[ ! -d "$source_dir/.git" ]]; then
  [[ ! -e "$source_dir" ]] || fail "$source_dir exists but is not a git checkout. Remove it and run again."
  log "cloning the llama.cpp bundle into $source_dir"
  mkdir -p "$(dirname "$source_dir")"
  # Clone next to the target and rename, so an interrupted clone never looks like a finished one.
  partial="$source_dir.partial.$$"
  trap 'rm -rf "$partial"' EXIT
  git -c advice.detachedHead=false clone --quiet "$bundle" "$partial"
  mv "$partial" "$source_dir"
  trap - EXIT
fi
log "llama.cpp commit $bundle_commit"

log "configuring (CPU only, static, no web UI)"
cmake -S "$source_dir" -B "$source_dir/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  >&2

log "compiling llama-server with $jobs jobs (several minutes on a small machine)"
cmake --build "$source_dir/build" --config Release -j "$jobs" --target llama-server >&2

[[ -x "$binary" ]] || fail "the build finished, but $binary is missing."
log "built in $((SECONDS - started)) s"
printf '%s\n' "$binary"
