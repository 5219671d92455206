/**
 * Runs `spillway controller` inside the controller image against the tests' fake Kubernetes API server,
 * for scripts/check-images.sh. The fake server (test/support/fake-kube, a model of the API, not a
 * cluster) listens on the container's loopback, so the container needs no network. This script creates
 * one ModelPool and starts the controller as a child process, as the image's entry point would. It then
 * prints the worker Deployment the controller creates as one line, `deployment: <JSON>`, so that the
 * check can run the worker image with the pod spec the controller wrote.
 *
 * Usage (in the image, with test/support/fake-kube and this file mounted under /app):
 *   node --import tsx scripts/check-images-controller.ts
 * Needs a writable /tmp for the kubeconfig. Stops the controller and the server on SIGTERM.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";

import { FakeKubeApiServer } from "../test/support/fake-kube/index.ts";

const namespace = "games";
const pool = "npc";
const kubeconfigPath = "/tmp/kubeconfig";
const deploymentTimeoutMs = 60_000;

const fake = await FakeKubeApiServer.start();
writeFileSync(kubeconfigPath, fake.kubeConfig().exportConfig());
fake.store.create("modelpools.spillway.dev", {
  apiVersion: "spillway.dev/v1alpha1",
  kind: "ModelPool",
  metadata: { name: pool, namespace },
  spec: {
    // An hf: URI, so the Deployment gets the init container that downloads it into the model cache.
    variants: [{ quant: "Q8_0", model: "hf:example/tiny-GGUF:Q8_0" }],
    replicas: { min: 1, max: 1 },
    slotsPerReplica: 1,
    contextSize: 512,
    threadsPerReplica: 1,
    image: "spillway/worker:0.1.0",
  },
});

const controller = spawn(
  process.execPath,
  ["/app/bin/spillway.js", "controller", "--kubeconfig", kubeconfigPath, "--namespace", namespace, "--state-dir", "/var/lib/spillway"],
  { stdio: "inherit" },
);
let exiting = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    exiting = true;
    controller.kill(signal);
  });
}
controller.once("exit", (code, signal) => {
  void fake.stop().finally(() => {
    process.exitCode = exiting && code === 0 ? 0 : (code ?? (signal === null ? 1 : 128));
  });
});

const deadline = Date.now() + deploymentTimeoutMs;
let deployment = fake.store.get("deployments.apps", namespace, `${pool}-worker`);
while (deployment === undefined && Date.now() < deadline && controller.exitCode === null) {
  await delay(200);
  deployment = fake.store.get("deployments.apps", namespace, `${pool}-worker`);
}
if (deployment === undefined) {
  process.stderr.write(`check-images-controller: no Deployment ${pool}-worker within ${deploymentTimeoutMs / 1000} s.\n`);
  controller.kill("SIGTERM");
} else {
  process.stdout.write(`deployment: ${JSON.stringify(deployment)}\n`);
}
