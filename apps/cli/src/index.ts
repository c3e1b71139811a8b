// The planetlite CLI as a library: runCli for in-process use (tests), plus its building blocks.
export { runCli, buildProgram } from './cli.js';
export type { Io, OutStream, InStream } from './io.js';
export { formatTable, formatRecord, relativeTime } from './table.js';
export { formatError, CliError, RegistryUnreachableError } from './errors.js';
export { configPath, loadConfig, saveConfig, normalizeRegistry, type CliConfig } from './config.js';
export { resolveKeyArgument, isKeyLine } from './keys.js';
