/**
 * Calls stop once, on the first SIGINT or SIGTERM; later ones are ignored while it runs.
 *
 * The listeners stay registered (process.on, not once) on purpose: execa's signal-exit, loaded
 * while a host command runs, re-sends a signal with the default action (a kill) when it finds
 * itself the only listener left, and a `once` listener has already removed itself by then, so a
 * stop asked for while a command ran ended the process by SIGTERM instead of a clean exit.
 */
export function onStopSignal(stop: (signal: NodeJS.Signals) => void): void {
  let asked = false;
  const handler = (signal: NodeJS.Signals) => {
    if (asked) return;
    asked = true;
    stop(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
