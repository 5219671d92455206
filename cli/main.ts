import { StartupError } from "../controller/startup-error.ts";
import { UsageError } from "./options.ts";

// Commands are imported on use, so `spillway tiny-model` does not load the inference engine.
const commands: Record<string, { summary: string; run: (args: string[]) => Promise<void> }> = {
  up: {
    summary: "Start the gateway and each pool's replicas on this machine",
    run: async (args) => (await import("./commands/up.ts")).runUpCommand(args),
  },
  worker: {
    summary: "Serve one GGUF model over the OpenAI chat completions API",
    run: async (args) => (await import("./commands/worker.ts")).runWorkerCommand(args),
  },
  status: {
    summary: "Print pools, replicas, variants and pressure of a running gateway",
    run: async (args) => (await import("./commands/status.ts")).runStatusCommand(args),
  },
  cost: {
    summary: "Print tokens, spend and USD per 1M tokens from a running gateway",
    run: async (args) => (await import("./commands/cost.ts")).runCostCommand(args),
  },
  controller: {
    summary: "Reconcile Kubernetes ModelPools into worker Deployments (runs in the cluster)",
    run: async (args) => (await import("./commands/controller.ts")).runControllerCommand(args),
  },
  "tiny-model": {
    summary: "Write a small random-weight GGUF model for offline tests",
    run: async (args) => (await import("./commands/tiny-model.ts")).runTinyModelCommand(args),
  },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, { summary }]) => `  ${name.padEnd(12)} ${summary}`);
  return `Usage: spillway <command> [options]\n\nCommands:\n${lines.join("\n")}\n\nRun \`spillway <command> --help\` for a command's options.\n`;
}

async function main(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return;
  }
  const command = commands[name];
  if (command === undefined) {
    process.stderr.write(`Unknown command '${name}'.\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  await command.run(args);
}

try {
  await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError || (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS"))) {
    process.stderr.write(`spillway: ${error.message}\n`);
    process.exitCode = 2;
  } else if (error instanceof StartupError) {
    process.stderr.write(`spillway: ${error.message}\n`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}
