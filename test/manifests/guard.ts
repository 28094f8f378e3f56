// Evaluates a ValidatingAdmissionPolicy's CEL the way the API server does for one object:
// variables in order (each sees the earlier ones as `variables.<name>`), then every validation;
// a validation that is false or errors denies (an error under failurePolicy Fail denies too, but
// with a different message, so callers see which it was). Kubernetes CEL includes cel-go's
// strings extension (upperAscii, substring...), so ours does too.
import { celEnv, celError, isCelError, parse, plan, type CelResult } from '@bufbuild/cel';
import { strings } from '@bufbuild/cel/ext';

// Each expression is parsed and planned once (the API server compiles a policy once, too).
const env = celEnv({ funcs: strings });
const programs = new Map<string, (bindings: never) => CelResult>();
function run(expression: string, bindings: Record<string, unknown>): CelResult {
  let program = programs.get(expression);
  try {
    if (program === undefined) {
      program = plan(env, parse(expression)) as (bindings: never) => CelResult;
      programs.set(expression, program);
    }
    return program(bindings as never);
  } catch (e) {
    return celError(e as Error);
  }
}

export interface PolicyValidation { expression: string; message?: string; reason?: string }
export interface Policy {
  spec: {
    failurePolicy?: string;
    matchConditions?: { name: string; expression: string }[];
    variables?: { name: string; expression: string }[];
    validations: PolicyValidation[];
  };
}

/** The admission request around the object (CREATE by default; UPDATE carries the old object). */
export interface GuardRequest { operation?: 'CREATE' | 'UPDATE'; oldObject?: unknown; subResource?: string }

export interface GuardFailure { message: string; expression: string; error?: string }
export interface GuardResult { allowed: boolean; failures: GuardFailure[]; /** false: a matchCondition excluded the request. */ matched: boolean }

/**
 * Kubernetes hands CEL integer fields as `int`; a JS number would be a CEL `double`. Pods carry
 * no floating-point fields (quantities are strings), so every JS number becomes a bigint.
 */
export function toCelInput(value: unknown): unknown {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`non-integer number ${value} in a Kubernetes object`);
    return BigInt(value);
  }
  if (Array.isArray(value)) return value.map(toCelInput);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toCelInput(v)]));
  }
  return value;
}

export function evaluateGuard(policy: Policy, object: unknown, request: GuardRequest = {}): GuardResult {
  const input = toCelInput(object);
  const oldObject = request.oldObject === undefined ? null : toCelInput(request.oldObject);
  const req = { operation: request.operation ?? 'CREATE', subResource: request.subResource ?? '' };
  const variables: Record<string, unknown> = {};
  const failures: GuardFailure[] = [];
  // Match conditions first: one that is false means the policy does not apply (an error denies).
  for (const m of policy.spec.matchConditions ?? []) {
    const value = run(m.expression, { object: input, oldObject, request: req });
    if (isCelError(value)) return { allowed: false, matched: true, failures: [{ message: `matchCondition ${m.name} failed`, expression: m.expression, error: value.message }] };
    if (value !== true) return { allowed: true, matched: false, failures: [] };
  }
  for (const v of policy.spec.variables ?? []) {
    const value = run(v.expression, { object: input, oldObject, request: req, variables });
    if (isCelError(value)) {
      // The API server fails every validation that reads a broken variable; report it once.
      return { allowed: false, matched: true, failures: [{ message: `variable ${v.name} failed`, expression: v.expression, error: value.message }] };
    }
    variables[v.name] = value;
  }
  for (const validation of policy.spec.validations) {
    const result = run(validation.expression, { object: input, oldObject, request: req, variables });
    const message = validation.message ?? `failed expression: ${validation.expression}`;
    if (isCelError(result)) failures.push({ message, expression: validation.expression, error: result.message });
    else if (result !== true) failures.push({ message, expression: validation.expression });
  }
  return { allowed: failures.length === 0, failures, matched: true };
}
