// The PlanetLite v1 API: schemas (TypeBox) and the typed client.
export * from './schemas.js';
export { PlanetLiteClient, ApiError, consoleTail, type ClientOptions, type DesiredStateResult } from './client.js';
export * from './trust.js';
