import type { Logger } from "pino";

/**
 * Runs `stop()` on the first SIGTERM or SIGINT and exits 0 when it finishes (1 when it fails). A second
 * SIGINT (Ctrl-C pressed again) exits at once without draining. A SIGTERM during the drain is ignored:
 * after Ctrl-C, `spillway up` sends SIGTERM to workers that already got the terminal's SIGINT, and they
 * must go on draining. Returns the shutdown function, for other triggers of the same stop.
 */
export function stopOnSignals(logger: Logger, stop: () => Promise<void>): () => void {
  let signals = 0;
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1 && signal === "SIGTERM") {
      logger.info({ signal }, "already draining");
      return;
    }
    if (signals > 1) {
      logger.warn({ signal }, "second signal; exiting without draining");
      process.exit(1);
    }
    logger.info({ signal }, "shutting down");
    shutdown();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return shutdown;
}
