/**
 * Request validation: two ajv instances, both reporting every error.
 * Bodies are taken as sent (no type coercion, no defaults, unknown fields
 * are errors); query strings and path parameters are strings on the wire, so
 * their instance coerces ("10" → 10, "true" → true) and fills defaults.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { FastifySchemaCompiler } from 'fastify';
import { isCidr, isIp } from '../net/addr.js';
import type { JsonSchema } from './schemas.js';

function makeAjv(forBody: boolean, shared: JsonSchema[]): Ajv {
  const ajv = new Ajv({
    allErrors: true,
    strict: true,
    allowUnionTypes: true,
    coerceTypes: forBody ? false : 'array',
    useDefaults: !forBody,
    removeAdditional: false,
  });
  ajv.addFormat('ipv4', { type: 'string', validate: (s: string) => isIp(s, 4) });
  ajv.addFormat('ipv6', { type: 'string', validate: (s: string) => isIp(s, 6) });
  ajv.addFormat('cidr', { type: 'string', validate: isCidr });
  for (const s of shared) ajv.addSchema(s);
  return ajv;
}

/** The validator compiler for app.setValidatorCompiler. */
export function validatorCompiler(shared: JsonSchema[]): FastifySchemaCompiler<unknown> {
  const body = makeAjv(true, shared);
  const other = makeAjv(false, shared);
  return ({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? body : other;
    const fn: ValidateFunction = ajv.compile(schema as JsonSchema);
    return fn;
  };
}
