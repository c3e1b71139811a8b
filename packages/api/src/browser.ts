// The browser's entry point: the typed client, the contract's types and plain constants, without
// the node-only HTTPS trust code (undici) or the TypeBox schemas.
export type * from './schemas.js';
export * from './constants.js';
export { PlanetLiteClient, ApiError, type ClientOptions } from './client.js';
