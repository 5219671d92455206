/** Environment variable that carries the controller's key for the workers' admin endpoint. */
export const workerAdminKeyEnv = "SPILLWAY_WORKER_ADMIN_KEY";

const pollIntervalMs = 100;

/**
 * Asks a worker to serve another variant of its ladder and waits until `/readyz` reports it. A worker
 * may answer the swap request when it is done (200) or at once (202); polling readiness covers both.
 */
export async function switchVariant(url: string, adminKey: string, quant: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const response = await fetch(`${url}/admin/variant`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${adminKey}` },
    body: JSON.stringify({ quant }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) {
    const text = await response.text();
    throw new Error(`the worker at ${url} rejected the switch to ${quant} with HTTP ${response.status}: ${text.slice(0, 300)}`);
  }
  await response.body?.cancel();
  while (Date.now() < deadline) {
    const readiness = await readReadiness(url);
    // Workers report quant names upper-cased, whatever the configuration's spelling.
    if (readiness?.quant?.toUpperCase() === quant.toUpperCase() && readiness.swapping !== true && readiness.ready === true) return;
    await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
  }
  throw new Error(`the worker at ${url} did not report ${quant} as ready within ${timeoutMs / 1000} s`);
}

export interface WorkerReadiness {
  ready?: boolean;
  quant?: string | null;
  swapping?: boolean;
  /** Recent decode tokens per second per quantization. */
  decodeTokensPerSecond?: Record<string, number>;
}

/** Reads a worker's `/readyz` body; undefined when it cannot be reached. */
export async function readReadiness(url: string): Promise<WorkerReadiness | undefined> {
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
    return (await response.json()) as WorkerReadiness;
  } catch {
    return undefined;
  }
}
