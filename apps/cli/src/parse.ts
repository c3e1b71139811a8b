// Option value parsers: a bad value is a usage error (exit 2) raised through commander.
import { InvalidArgumentError } from 'commander';

export function integer(min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError('must be a whole number');
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${min} and ${max}`);
    return n;
  };
}

/** A decimal number within [min, max], such as degrees of latitude (-90..90). */
export function decimal(min: number, max: number) {
  return (value: string): number => {
    if (!/^[+-]?(\d+\.?\d*|\.\d+)$/.test(value.trim())) throw new InvalidArgumentError(`must be a decimal number between ${min} and ${max}, e.g. 40.35`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${min} and ${max}`);
    return n;
  };
}

/** Any date Date.parse understands, returned as RFC 3339 UTC. */
export function timestamp(value: string): string {
  const at = Date.parse(value);
  if (Number.isNaN(at)) throw new InvalidArgumentError('must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z');
  return new Date(at).toISOString();
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function oneOf<T extends string>(values: readonly T[]) {
  return (value: string): T => {
    if (!(values as readonly string[]).includes(value)) throw new InvalidArgumentError(`must be one of ${values.join(', ')}`);
    return value as T;
  };
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
