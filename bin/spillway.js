#!/usr/bin/env node
// Runs the TypeScript entry point through tsx, so `npx spillway` works from a clone without a build step.
import { register } from "tsx/esm/api";

register();
await import("../cli/main.ts");
