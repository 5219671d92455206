#!/usr/bin/env bash
# Builds Spillway's container images from docker/Dockerfile, one per target:
#   controller -> spillway/controller, worker -> spillway/worker, worker-cuda -> spillway/worker-cuda
# tagged with the version in package.json.
#
# Usage: scripts/build-images.sh [TARGET...]        (default: controller worker worker-cuda)
# Environment:
#   IMAGE_PREFIX   put before each name, such as registry.example.com/ (default: none)
#   IMAGE_TAG      the tag (default: the version in package.json)
#   NODE_IMAGE     the Node base image (default: the Dockerfile's node:24-bookworm-slim)
#   CUDA_IMAGE     the CUDA base of worker-cuda (default: the Dockerfile's nvidia/cuda image)
#   NPM_CA_FILE    a PEM file of extra CAs that npm in the build must trust, such as a TLS-intercepting
#                  proxy's; passed as the build secret npm_ca (default: none)
#   DOCKER         the Docker CLI (default: docker)
#   DOCKER_BUILD_ARGS  more arguments for each `docker build`, such as "--push" or "--network host"
set -euo pipefail
cd "$(dirname "$0")/.."

docker_cli="${DOCKER:-docker}"
tag="${IMAGE_TAG:-$(node -p 'require("./package.json").version')}"
prefix="${IMAGE_PREFIX:-}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then targets=(controller worker worker-cuda); fi

common=(--file docker/Dockerfile --build-arg "VERSION=$tag" --build-arg "REVISION=$revision")
if [ -n "${NODE_IMAGE:-}" ]; then common+=(--build-arg "NODE_IMAGE=$NODE_IMAGE"); fi
if [ -n "${CUDA_IMAGE:-}" ]; then common+=(--build-arg "CUDA_IMAGE=$CUDA_IMAGE"); fi
if [ -n "${NPM_CA_FILE:-}" ]; then common+=(--secret "id=npm_ca,src=$NPM_CA_FILE"); fi
read -r -a extra <<<"${DOCKER_BUILD_ARGS:-}"

for target in "${targets[@]}"; do
  case "$target" in
    controller | worker | worker-cuda) ;;
    *)
      echo "build-images: unknown target '$target'. Expected controller, worker or worker-cuda." >&2
      exit 2
      ;;
  esac
  image="${prefix}spillway/$target:$tag"
  echo "build-images: $image"
  # The secret mount in the Dockerfile needs BuildKit, which DOCKER_BUILDKIT=1 turns on for older engines.
  DOCKER_BUILDKIT=1 "$docker_cli" build "${common[@]}" "${extra[@]}" --target "$target" --tag "$image" .
done
