/**
 * A setting or environment problem that stops a process from starting, such as a missing API key
 * variable. Its message names what to change, so the command line prints it without a stack trace.
 */
export class StartupError extends Error {
  override name = "StartupError";
}
