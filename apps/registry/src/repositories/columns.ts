// Column helpers every repository's mapper uses: both drivers hand back Date or string for
// timestamps, and jsonb as parsed objects.
export type Row = Record<string, unknown>;

export const iso = (v: unknown): string => new Date(v as string).toISOString();
export const isoOrNull = (v: unknown): string | null => (v == null ? null : iso(v));
/** jsonb columns: parsed objects from pg and PGlite, text if a driver ever hands back text. */
export const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));
export const numberOrNull = (v: unknown): number | null => (v == null ? null : Number(v));
