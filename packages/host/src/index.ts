// How the node agent touches the host: one command wrapper, an undo list for multi-step changes,
// the host-tool check, the one way to start a process that outlives the agent, and turns for
// loops that read the host for every sliver.
export { run, tryRun, commandCount, CommandError, commandErrorOf, errorFields, type RunOptions, type RunResult } from './run.js';
export { missingTools, requireTools, TOOL_PACKAGES } from './tools.js';
export { spawnDetached, type DetachedOptions } from './spawn.js';
export { Coprocess } from './coprocess.js';
export { FORKER_PYTHON, useForker } from './forker.js';
export { Reverter } from './revert.js';
export { DriverError } from './errors.js';
export { nextTurn, turnDue, TURN_EVERY } from './turns.js';
