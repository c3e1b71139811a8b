// Pieces every route file uses: the problem responses for OpenAPI and small schema helpers.
import { Type, type TSchema } from '@sinclair/typebox';
import { Problem } from '@planetlite/api';

export const bearer = [{ bearer: [] }];

/** Documents the success answer plus problem+json for every error status a route can give. */
export function answers<S extends Record<number, TSchema>>(ok: S) {
  return { ...ok, '4xx': Problem, '5xx': Problem };
}

export const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) });
export const NameParams = Type.Object({ name: Type.String({ maxLength: 60 }) });
export const NoContent = Type.Null({ description: 'no content' });
