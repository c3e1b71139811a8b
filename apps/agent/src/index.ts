// The PlanetLite node agent as a library (the daemon, enrollment, sync), for tests and tools.
export { Agent, type AgentOptions } from './agent.js';
export { enroll, type EnrollOptions } from './enroll.js';
export { Backoff, DesiredStateSync, type SyncOptions } from './sync.js';
export { StateDir, type Enrollment, type CachedDesiredState } from './state.js';
export { probeResources } from './probe.js';
export { Reconciler } from './reconcile.js';
export { planPass, planSliver, planTeardown, describePlan, type SliverPlan, type SliverFacts, type Step } from './planner.js';
export { importImage } from './images/import.js';
export { loadSettings, defaultSettings, type AgentSettings, type SettingsOverrides } from './settings.js';
export { Watchdog, WatchdogPolicy, defaultWatchdogSettings, type WatchdogSettings, type WatchdogEvent, type Figures } from './watchdog.js';
export { EventOutbox } from './outbox.js';
export { openDrivers, type Drivers } from './drivers.js';
export { forwardDrops, type ForwardDrop } from './firewall.js';
export { releaseNode } from './release.js';
export { readLedger, type SliverRecord } from './ledger.js';
