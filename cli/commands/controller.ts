import { readFileSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";

import { KubeConfig } from "@kubernetes/client-node";

import { defaultLeaseName, ModelPoolController } from "../../controller/kubernetes/controller.ts";
import { createLogger } from "../logger.ts";
import { UsageError } from "../options.ts";

const help = `Usage: spillway controller [options]

Reconciles the ModelPool resources of one namespace into worker Deployments and Services. Run several
replicas: a Lease elects one leader, and the others stand by.

Options:
  --namespace <ns>     Namespace of the ModelPools and the Lease (default: the pod's own namespace,
                       else the kubeconfig context's, else default)
  --kubeconfig <file>  Kubeconfig to use (default: in-cluster service account, else KUBECONFIG or
                       ~/.kube/config)
  --lease-name <name>  Name of the leader election Lease (default ${defaultLeaseName})
  --identity <id>      This instance's name in the Lease (default: the host name, which is the pod name)
  --help               Show this help
`;

const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

export async function runControllerCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
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

  const kubeConfig = new KubeConfig();
  if (values.kubeconfig === undefined) kubeConfig.loadFromDefault();
  else kubeConfig.loadFromFile(values.kubeconfig);
  const namespace = values.namespace ?? podNamespace() ?? kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace ?? "default";

  const logger = createLogger("spillway-controller");
  const controller = new ModelPoolController(kubeConfig, { namespace, leaseName: values["lease-name"], identity: values.identity }, logger);
  logger.info({ namespace, identity: values.identity, lease: values["lease-name"] }, "starting the ModelPool controller");
  controller.start();

  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, "shutting down");
      resolve();
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
  await controller.stop();
}

function podNamespace(): string | undefined {
  try {
    return readFileSync(serviceAccountNamespaceFile, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
