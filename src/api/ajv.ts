/**
 * Request validation: two ajv instances, both reporting every error.
 * Bodies are taken as sent (no type coercion, no defaults, unknown fields
 * are errors); query strings and path parameters are strings on the wire, so
 * their instance coerces ("10" → 10, "true" → true) and fills defaults.
 */
import { isIP } from 'node:net';
import { Ajv, type ValidateFunction } from 'ajv';
import type { FastifySchemaCompiler } from 'fastify';
import type { JsonSchema } from './schemas.js';

/** Plain addresses only: no zone ids ("fe80::1%eth0"), no surrounding spaces. */
const isPlain = (s: string): boolean => /^[0-9A-Fa-f:.]+$/.test(s);

export const isIpv4 = (s: string): boolean => isPlain(s) && isIP(s) === 4;
export const isIpv6 = (s: string): boolean => isPlain(s) && isIP(s) === 6;

/** address or address/len, length within the family's bits. */
export function isCidr(s: string): boolean {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const family = isIpv4(addr) ? 4 : isIpv6(addr) ? 6 : 0;
  if (family === 0) return false;
  if (slash < 0) return true;
  const len = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(len)) return false;
  return Number(len) <= (family === 4 ? 32 : 128);
}

function makeAjv(forBody: boolean, shared: JsonSchema[]): Ajv {
  const ajv = new Ajv({
    allErrors: true,
    strict: true,
    allowUnionTypes: true,
    coerceTypes: forBody ? false : 'array',
    useDefaults: !forBody,
    removeAdditional: false,
  });
  ajv.addFormat('ipv4', { type: 'string', validate: isIpv4 });
  ajv.addFormat('ipv6', { type: 'string', validate: isIpv6 });
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
