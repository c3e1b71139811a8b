// Plain-text output: aligned tables for lists and "key: value" records for single objects.
export type Cell = string | number | boolean | null | undefined;
export type RecordValue = Cell | readonly string[];

function cellText(value: Cell): string {
  if (value === null || value === undefined || value === '') return '-';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value).replace(/\s+/g, ' ');
}

/** Width as a terminal counts it, close enough: code points, not UTF-16 units. */
function width(text: string): number {
  return [...text].length;
}

function pad(text: string, to: number, right: boolean): string {
  const fill = ' '.repeat(Math.max(0, to - width(text)));
  return right ? fill + text : text + fill;
}

/**
 * Columns separated by two spaces, a header row on top, numbers right-aligned, no trailing
 * blanks. Empty cells show as "-" so every row splits into the same number of fields.
 */
export function formatTable(headers: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = rows.map((row) => headers.map((_, i) => cellText(row[i])));
  const widths = headers.map((h, i) => Math.max(width(h), ...text.map((r) => width(r[i] ?? ''))));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => pad(c, widths[i] ?? 0, numeric[i] ?? false))
      .join('  ')
      .trimEnd();
  return [line(headers), ...text.map(line)].join('\n');
}

/** "key: value" lines with the values aligned; a list value continues on indented lines. */
export function formatRecord(pairs: readonly (readonly [string, RecordValue])[]): string {
  const keyWidth = Math.max(0, ...pairs.map(([k]) => width(k) + 1));
  const out: string[] = [];
  for (const [key, value] of pairs) {
    const label = pad(`${key}:`, keyWidth, false);
    if (Array.isArray(value)) {
      const items = value.length > 0 ? value : ['-'];
      items.forEach((item, i) => out.push(`${i === 0 ? label : ' '.repeat(keyWidth)} ${cellText(item)}`));
    } else {
      out.push(`${label} ${cellText(value as Cell)}`);
    }
  }
  return out.join('\n');
}

/** "in 3 days", "2 hours ago": how far a timestamp is from now, roughly. */
export function relativeTime(iso: string, now: number = Date.now()): string {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return '';
  const seconds = Math.round((at - now) / 1000);
  const abs = Math.abs(seconds);
  const units: [number, string][] = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
  ];
  let phrase = 'a moment';
  for (const [size, unit] of units) {
    if (abs >= size) {
      const n = Math.floor(abs / size);
      phrase = `${n} ${unit}${n === 1 ? '' : 's'}`;
      break;
    }
  }
  if (phrase === 'a moment') return 'now';
  return seconds >= 0 ? `in ${phrase}` : `${phrase} ago`;
}

/** A timestamp followed by how far away it is: "2025-06-01T00:00:00Z (in 3 days)". */
export function when(iso: string | null | undefined, now: number = Date.now()): string | null {
  if (!iso) return null;
  const rel = relativeTime(iso, now);
  return rel ? `${iso} (${rel})` : iso;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}
