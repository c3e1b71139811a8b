// The database layer: one small interface over a PostgreSQL server (pg) or embedded PGlite.
export { openDatabase, laneOf, DatabaseOpenError, DATA_DIR_SIBLINGS, type Database, type Lane, type Queryable, type OpenDatabaseOptions } from './database.js';
export { migrate, migrations, type Migration } from './migrate.js';
