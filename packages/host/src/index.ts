// How the node agent touches the host: one command wrapper and an undo list for multi-step changes.
export { run, tryRun, CommandError, type RunOptions, type RunResult } from './run.js';
export { Reverter } from './revert.js';
