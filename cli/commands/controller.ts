import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { KubeConfig } from "@kubernetes/client-node";

import { ConfigError, loadConfig } from "../../controller/config/load.ts";
import { configSchema, type SpillwayConfig } from "../../controller/config/schema.ts";
import { startClusterController } from "../../controller/kubernetes/cluster.ts";
import { defaultLeaseName } from "../../controller/kubernetes/controller.ts";
import { StartupError } from "../../controller/startup-error.ts";
import { createLogger } from "../logger.ts";
import { UsageError } from "../options.ts";
import { stopOnSignals } from "../shutdown.ts";

const help = `Usage: spillway controller [options]

Runs Spillway in a Kubernetes namespace. Every instance serves the OpenAI-compatible gateway for the
namespace's ModelPools and routes to their ready worker pods. One instance, elected through a Lease,
also reconciles each ModelPool into a worker Deployment and Service, scales the Deployments and steps
pods along the quantization ladder. Run two for availability.

Options:
  --config <file>        Gateway, auth, routing and overflow settings in the spillway.yaml format,
                         without pools: each pool is a ModelPool (default: the schema's defaults)
  --state-dir <dir>      Where metered usage and the planner's state are kept across restarts
                         (default: in memory only)
  --worker-admin-secret <name>  Secret whose admin-key entry the worker pods get as their admin key;
                         the controller reads the same key from the variable auth.adminKeyEnv names
                         (default SPILLWAY_ADMIN_KEY). Without it the ladder cannot step.
  --namespace <ns>       Namespace of the ModelPools and the Lease (default: the pod's own namespace,
                         else the kubeconfig context's, else default)
  --kubeconfig <file>    Kubeconfig to use (default: in-cluster service account, else KUBECONFIG or
                         ~/.kube/config)
  --lease-name <name>    Name of the leader election Lease (default ${defaultLeaseName})
  --identity <id>        This instance's name in the Lease (default: the host name, which is the pod name)
  --help                 Show this help
`;

const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

export async function runControllerCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      config: { type: "string" },
      "state-dir": { type: "string" },
      "worker-admin-secret": { type: "string" },
      namespace: { type: "string" },
      kubeconfig: { type: "string" },
      "lease-name": { type: "string", default: defaultLeaseName },
      identity: { type: "string", default: os.hostname() },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return;
  }
  if (values.identity.trim() === "") throw new UsageError("--identity must not be empty.");

  let config: SpillwayConfig;
  try {
    config = values.config === undefined ? configSchema.parse({}) : loadConfig(values.config, process.env, {}, { requirePools: false });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`spillway controller: ${error.message}\n`);
    process.exitCode = 1;
    return;
  }
  const adminSecret = values["worker-admin-secret"];
  const adminKey = process.env[config.auth.adminKeyEnv] || undefined;
  if (adminSecret !== undefined && adminKey === undefined) {
    throw new UsageError(`--worker-admin-secret needs the same key in ${config.auth.adminKeyEnv}, because the controller sends it to the workers.`);
  }

  const kubeConfig = loadKubeConfig(values.kubeconfig);
  const namespace = values.namespace ?? podNamespace() ?? kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace ?? "default";

  const logger = createLogger("spillway-controller");
  if (adminSecret === undefined) logger.warn("no --worker-admin-secret: workers get no admin key, so the ladder cannot step");
  const stateDir = values["state-dir"];
  logger.info({ namespace, identity: values.identity, lease: values["lease-name"] }, "starting the controller");
  const controller = await startClusterController({
    config,
    kubeConfig,
    namespace,
    identity: values.identity,
    leaseName: values["lease-name"],
    logger,
    ...(adminSecret === undefined ? {} : { workerAdminSecret: adminSecret, workerAdminKey: adminKey }),
    ...(stateDir === undefined ? {} : { statePath: path.join(stateDir, "usage.jsonl"), plannerStatePath: path.join(stateDir, "planner.json") }),
  });
  process.stderr.write(`Spillway gateway on ${controller.url}/v1 (namespace ${namespace})\n`);
  stopOnSignals(logger, () => controller.stop());
}

/**
 * Loads the kubeconfig. Without one, client-node falls back to http://localhost:8080, which would make
 * the controller retry forever, so a missing configuration is reported instead.
 */
function loadKubeConfig(file: string | undefined): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (file !== undefined) {
    if (!existsSync(file)) throw new UsageError(`--kubeconfig ${file}: no such file. Pass the path of a kubeconfig file.`);
    kubeConfig.loadFromFile(file);
    return kubeConfig;
  }
  const defaultFile = path.join(os.homedir(), ".kube", "config");
  const inCluster = process.env.KUBERNETES_SERVICE_HOST !== undefined && existsSync(serviceAccountNamespaceFile);
  if (!inCluster && !process.env.KUBECONFIG && !existsSync(defaultFile)) {
    throw new StartupError(
      `No Kubernetes configuration found: not running in a pod, KUBECONFIG is unset and ${defaultFile} does not exist. ` +
        "Pass --kubeconfig <file>, or run spillway controller in the cluster.",
    );
  }
  kubeConfig.loadFromDefault();
  return kubeConfig;
}

function podNamespace(): string | undefined {
  try {
    return readFileSync(serviceAccountNamespaceFile, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
