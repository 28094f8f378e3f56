// Evaluates a ValidatingAdmissionPolicy's CEL the way the API server does for one object:
// variables in order (each sees the earlier ones as `variables.<name>`), then every validation;
// a validation that is false or errors denies (an error under failurePolicy Fail denies too, but
// with a different message, so callers see which it was). Kubernetes CEL includes cel-go's
// strings extension (upperAscii, substring...), so ours does too.
import { isCelError, run } from '@bufbuild/cel';
import { strings } from '@bufbuild/cel/ext';

export interface PolicyValidation { expression: string; message?: string; reason?: string }
export interface Policy {
  spec: { failurePolicy?: string; variables?: { name: string; expression: string }[]; validations: PolicyValidation[] };
}

export interface GuardFailure { message: string; expression: string; error?: string }
export interface GuardResult { allowed: boolean; failures: GuardFailure[] }

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

export function evaluateGuard(policy: Policy, object: unknown): GuardResult {
  const input = toCelInput(object);
  const variables: Record<string, unknown> = {};
  const failures: GuardFailure[] = [];
  for (const v of policy.spec.variables ?? []) {
    const value = run(v.expression, { object: input, variables } as never, { funcs: strings });
    if (isCelError(value)) {
      // The API server fails every validation that reads a broken variable; report it once.
      return { allowed: false, failures: [{ message: `variable ${v.name} failed`, expression: v.expression, error: value.message }] };
    }
    variables[v.name] = value;
  }
  for (const validation of policy.spec.validations) {
    const result = run(validation.expression, { object: input, variables } as never, { funcs: strings });
    const message = validation.message ?? `failed expression: ${validation.expression}`;
    if (isCelError(result)) failures.push({ message, expression: validation.expression, error: result.message });
    else if (result !== true) failures.push({ message, expression: validation.expression });
  }
  return { allowed: failures.length === 0, failures };
}
