#!/usr/bin/env bash
# Builds the three images of docker/Dockerfile without an image registry and checks what a cluster
# relies on. Nothing is pulled: make-offline-base-image.sh assembles the Node base from Debian's archive
# and the npm registry. That base also replaces the CUDA base of worker-cuda, so worker-cuda is built
# without CUDA libraries and only inspected, never run on a GPU. Containers run with --network none.
#
# Usage: scripts/check-images.sh          (as root; CI runs it from .ci/run)
# Installs docker.io and debootstrap with apt-get when they are missing, and starts a Docker engine
# (dockerd --bridge=none) for the run when none responds, stopping it again at the end. The images it
# builds are removed at the end, unless KEEP_IMAGES=1 keeps them for a look with docker run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "check-images: needs root, to install packages, start dockerd and run debootstrap." >&2
  exit 1
fi

work="$(mktemp -d)"
docker_cli=docker
dockerd_pid=""
containers=()
images=()
cleanup() {
  for container in "${containers[@]}"; do "$docker_cli" rm -f -v "$container" >/dev/null 2>&1 || true; done
  # Every run imports a new base, so nothing built here is reused: remove it unless KEEP_IMAGES=1.
  if [ "${KEEP_IMAGES:-0}" != 1 ] && [ "${#images[@]}" -gt 0 ]; then
    "$docker_cli" image rm "${images[@]}" >/dev/null 2>&1 || true
    "$docker_cli" image prune --force >/dev/null 2>&1 || true
    # The build cache is only cleared in an engine this script started, whose cache contains nothing else.
    if [ -n "$dockerd_pid" ]; then "$docker_cli" builder prune --force >/dev/null 2>&1 || true; fi
  fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    # dockerd stops its containers and containerd before it exits, which can take several seconds.
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "check-images: installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
# Debian's client has BuildKit built in, while a newer docker CLI without the buildx plugin refuses it.
docker_cli="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER="$docker_cli"

if ! "$docker_cli" info >/dev/null 2>&1; then
  echo "check-images: starting dockerd"
  # No bridge and no iptables rules: containers get only loopback, and builds use the host's network.
  dockerd --bridge=none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 30); do "$docker_cli" info >/dev/null 2>&1 && break; sleep 1; done
  if ! "$docker_cli" info >/dev/null 2>&1; then
    tail -n 20 "$work/dockerd.log" >&2
    echo "check-images: dockerd did not start within 30 s." >&2
    exit 1
  fi
fi

passed=0
pass() {
  passed=$((passed + 1))
  echo "ok - $1"
}
fail() {
  echo "not ok - $1" >&2
  exit 1
}
seconds() { echo $(($(date +%s) - started)); }
started=$(date +%s)

base=spillway-offline/node:24-bookworm-slim
images+=("$base")
bash scripts/make-offline-base-image.sh "$base"
echo "check-images: base image after $(seconds) s"

version="$(node -p 'require("./package.json").version')"
llama_version="$(node -p 'require("./package-lock.json").packages["node_modules/node-llama-cpp"].version')"
# Node's official binary trusts only its bundled CAs, so the host's bundle is passed to add the CAs the
# host trusts, such as a TLS-intercepting proxy's.
ca_file=/etc/ssl/certs/ca-certificates.crt
if [ -s "$ca_file" ]; then export NPM_CA_FILE="$ca_file"; fi
images+=("spillway-check/spillway/controller:$version" "spillway-check/spillway/worker:$version" "spillway-check/spillway/worker-cuda:$version")
IMAGE_PREFIX=spillway-check/ NODE_IMAGE="$base" CUDA_IMAGE="$base" DOCKER_BUILD_ARGS="--network host --progress plain" \
  bash scripts/build-images.sh controller worker worker-cuda >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  fail "docker build of controller, worker and worker-cuda"
}
pass "controller, worker and worker-cuda build ($(seconds) s so far)"

controller="spillway-check/spillway/controller:$version"
worker="spillway-check/spillway/worker:$version"
worker_cuda="spillway-check/spillway/worker-cuda:$version"

for image in "$controller" "$worker" "$worker_cuda"; do
  user="$("$docker_cli" image inspect --format '{{.Config.User}}' "$image")"
  [ "$user" = "10001:10001" ] || fail "$image runs as 10001:10001, not '$user'"
  label="$("$docker_cli" image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")"
  [ "$label" = "$version" ] || fail "$image is labelled version $version, not '$label'"
  # The same form as the pod spec: command spillway, arguments after it, read-only root, no network.
  "$docker_cli" run --rm --network none --read-only --cap-drop ALL "$image" --help >"$work/help.txt" 2>&1 \
    || fail "spillway --help runs in $image"
  grep -q "Usage: spillway <command>" "$work/help.txt" || fail "spillway --help prints the usage in $image"
done
pass "every image runs spillway as user 10001 on a read-only root, labelled $version"

"$docker_cli" run --rm --network none --read-only --cap-drop ALL "$controller" controller --help >"$work/controller.txt" 2>&1 \
  || fail "spillway controller --help runs in the controller image"
grep -q "Usage: spillway controller" "$work/controller.txt" || fail "the controller image runs spillway controller"
owner="$("$docker_cli" run --rm --network none --entrypoint stat "$controller" -c %u /var/lib/spillway)"
[ "$owner" = 10001 ] || fail "/var/lib/spillway belongs to 10001, not '$owner'"
pass "controller image runs spillway controller and owns its state directory"

# Waits until a container's HEALTHCHECK passes. --health-interval at `docker run` only shortens the
# wait: the check that runs is the image's own HEALTHCHECK command.
wait_healthy() {
  local health=""
  for _ in $(seq 1 60); do
    health="$("$docker_cli" inspect --format '{{.State.Health.Status}}' "$1")"
    [ "$health" = healthy ] && return 0
    [ "$("$docker_cli" inspect --format '{{.State.Running}}' "$1")" = true ] || break
    sleep 1
  done
  "$docker_cli" logs "$1" 2>&1 | tail -n 20 >&2
  fail "$1 becomes healthy (status '$health')"
}
# Sends GET to a URL inside a container and prints the status and body. Fails unless the status is 2xx.
get_in() {
  "$docker_cli" exec "$1" node -e 'fetch(process.argv[1]).then(async (response) => {
    console.log(response.status, await response.text());
    process.exit(response.ok ? 0 : 1);
  }, (error) => { console.error(error.message); process.exit(1); });' "$2"
}

# The controller, in its image with --network none, against the tests' fake Kubernetes API server on the
# container's loopback. It reconciles one ModelPool, whose worker Deployment the worker checks below run.
controller_name="spillway-check-controller-$$"
containers+=("$controller_name")
"$docker_cli" run --detach --name "$controller_name" --network none --read-only --cap-drop ALL \
  --security-opt no-new-privileges --health-interval 2s --tmpfs /tmp --volume /var/lib/spillway \
  --volume "$PWD/test/support/fake-kube:/app/test/support/fake-kube:ro" \
  --volume "$PWD/scripts/check-images-controller.ts:/app/scripts/check-images-controller.ts:ro" \
  --entrypoint node "$controller" --import tsx scripts/check-images-controller.ts >/dev/null
wait_healthy "$controller_name"
get_in "$controller_name" http://127.0.0.1:8080/healthz >"$work/out.txt" || fail "the gateway's /healthz returns 200: $(cat "$work/out.txt")"
get_in "$controller_name" http://127.0.0.1:8080/v1/models >"$work/out.txt" || fail "the gateway's /v1/models returns 200: $(cat "$work/out.txt")"
grep -q '"id":"npc"' "$work/out.txt" || fail "the gateway lists the ModelPool npc: $(cat "$work/out.txt")"
pass "controller image becomes healthy and its gateway lists the ModelPool"

for _ in $(seq 1 60); do
  "$docker_cli" logs "$controller_name" 2>/dev/null | sed -n 's/^deployment: //p' >"$work/deployment.json"
  [ -s "$work/deployment.json" ] && break
  sleep 1
done
[ -s "$work/deployment.json" ] || fail "the controller creates the worker Deployment npc-worker"
"$docker_cli" stop --time 40 "$controller_name" >/dev/null
exit_code="$("$docker_cli" inspect --format '{{.State.ExitCode}}' "$controller_name")"
[ "$exit_code" = 0 ] || fail "the controller exits 0 after SIGTERM, not $exit_code"
pass "controller creates the worker Deployment and exits 0 on SIGTERM"

# The pod the controller asked for, taken apart for docker run: the worker container's command and
# arguments, the init container's script, and the probe paths.
pod_field() {
  node -e 'const pod = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")).spec.template.spec;
const worker = pod.containers[0];
const fields = {
  command: JSON.stringify(worker.command),
  args: worker.args.join("\0"),
  init: pod.initContainers?.[0]?.command?.[2] ?? "",
  liveness: worker.livenessProbe.httpGet.path,
  readiness: worker.readinessProbe.httpGet.path,
};
process.stdout.write(fields[process.argv[2]]);' "$work/deployment.json" "$1"
}
entrypoint="$("$docker_cli" image inspect --format '{{json .Config.Entrypoint}}' "$worker")"
[ "$(pod_field command)" = "$entrypoint" ] || fail "the worker pod's command $(pod_field command) is the image's entry point $entrypoint"
mapfile -d '' -t worker_args < <(pod_field args)

# The model cache as the init container leaves it: a tiny real model where the pod expects the variant.
mkdir -p "$work/models/npc"
node bin/spillway.js tiny-model --out "$work/models/npc/Q8_0.gguf" >/dev/null
chmod -R a+rX "$work/models"

# The init container's own script finds the file and skips the download. The download branch runs
# `npx --no-install node-llama-cpp pull`, which needs a network, so its command is checked with --help.
"$docker_cli" run --rm --network none --read-only --cap-drop ALL --env HF_ENDPOINT=http://127.0.0.1:9 \
  --volume "$work/models:/models" --entrypoint sh "$worker" -c "$(pod_field init)" >"$work/out.txt" 2>&1 \
  || fail "the init container's script runs in the worker image: $(cat "$work/out.txt")"
grep -q "cached /models/npc/Q8_0.gguf" "$work/out.txt" || fail "the init container finds the cached model: $(cat "$work/out.txt")"
"$docker_cli" run --rm --network none --read-only --cap-drop ALL --entrypoint sh "$worker" \
  -c 'set -e; npx --no-install node-llama-cpp pull --help >/dev/null; npx --no-install node-llama-cpp --version' \
  >"$work/out.txt" 2>&1 || fail "npx --no-install node-llama-cpp pull runs in the worker image: $(cat "$work/out.txt")"
grep -qx "$llama_version" "$work/out.txt" || fail "npx finds node-llama-cpp $llama_version: $(cat "$work/out.txt")"
pass "init container script runs in the worker image, and npx finds node-llama-cpp $llama_version"

worker_name="spillway-check-worker-$$"
containers+=("$worker_name")
"$docker_cli" run --detach --name "$worker_name" --network none --read-only --cap-drop ALL \
  --security-opt no-new-privileges --health-interval 2s --volume "$work/models:/models:ro" \
  "$worker" "${worker_args[@]}" >/dev/null
wait_healthy "$worker_name"
get_in "$worker_name" "http://127.0.0.1:8000$(pod_field liveness)" >"$work/out.txt" || fail "the liveness probe's path returns 200: $(cat "$work/out.txt")"
pass "worker runs the controller's pod arguments, and HEALTHCHECK and liveness path return 200"

ready=1
for _ in $(seq 1 30); do
  if get_in "$worker_name" "http://127.0.0.1:8000$(pod_field readiness)" >"$work/out.txt" 2>&1; then ready=0; break; fi
  sleep 1
done
[ "$ready" -eq 0 ] || fail "the readiness probe's path returns 200 once the model is loaded: $(cat "$work/out.txt")"
"$docker_cli" exec "$worker_name" node -e 'fetch("http://127.0.0.1:8000/v1/chat/completions", {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ model: "npc", messages: [{ role: "user", content: "Name a quest." }], max_tokens: 8 }),
}).then(async (response) => {
  const body = await response.json();
  console.log(response.status, JSON.stringify(body.usage ?? body));
  process.exit(response.status === 200 && body.usage.completion_tokens > 0 ? 0 : 1);
}, (error) => { console.error(error.message); process.exit(1); });' >"$work/out.txt" 2>&1 \
  || fail "a chat completion succeeds in the worker: $(cat "$work/out.txt")"
pass "worker is ready and POST /v1/chat/completions returns tokens: $(cat "$work/out.txt")"

"$docker_cli" stop --time 40 "$worker_name" >/dev/null
exit_code="$("$docker_cli" inspect --format '{{.State.ExitCode}}' "$worker_name")"
[ "$exit_code" = 0 ] || fail "the worker exits 0 after SIGTERM, not $exit_code"
pass "worker drains and exits 0 on SIGTERM"

# worker-cuda on the stand-in base: its CUDA binary must be the one node-llama-cpp loads, and the only
# libraries it lacks must be those the CUDA runtime image (libcudart, libcublas) and the driver
# (libcuda) provide.
missing="$("$docker_cli" run --rm --network none --entrypoint sh "$worker_cuda" -c \
  'cd node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda && ldd libggml-cuda.so llama-addon.node' \
  | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')"
[ "$missing" = "libcublas.so.13 libcuda.so.1 libcudart.so.13 " ] \
  || fail "worker-cuda's CUDA binary lacks only libcublas.so.13, libcuda.so.1 and libcudart.so.13, not '$missing'"
cuda_version="$("$docker_cli" run --rm --network none --entrypoint node "$worker_cuda" \
  -p 'require("./node_modules/@node-llama-cpp/linux-x64-cuda/package.json").version')"
[ "$cuda_version" = "$llama_version" ] || fail "worker-cuda has @node-llama-cpp/linux-x64-cuda $llama_version, not $cuda_version"
pass "worker-cuda holds @node-llama-cpp/linux-x64-cuda $cuda_version, lacking only the CUDA runtime and driver libraries"

echo "check-images: all $passed checks passed in $(seconds) s"
