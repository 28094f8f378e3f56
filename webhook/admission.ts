// AdmissionReview v1 in and out, with no HTTP in sight: decode a body, run `inject`, build the
// response. Modelled on controller-runtime's pkg/webhook/admission (response.go, http.go):
//  - a few response constructors, each echoing the request uid (the API server rejects a
//    response whose uid differs);
//  - the patch is the diff of the raw original against the mutated copy (PatchResponseFromRaw;
//    kubebuilder#510 for why never re-encode through typed models), with fast-json-patch
//    `compare`'s algorithm (patch.ts); no change → no patchType;
//  - even a request we cannot read gets an AdmissionReview body whose status says why.
// @kubernetes/client-node has no AdmissionReview type; the wire format is defined here
// (k8s.io/api/admission/v1/types.go).
import type { InjectionConfig } from './config.ts';
import { inject, injectUpdate, type Json } from './inject.ts';
import { diff } from './patch.ts';
import { isObject } from './shape.ts';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';
export const ADMISSION_KIND = 'AdmissionReview';

export interface GroupVersionKind { group: string; version: string; kind: string }
export interface GroupVersionResource { group: string; version: string; resource: string }

export interface AdmissionRequest {
  uid: string;
  kind?: GroupVersionKind;
  resource?: GroupVersionResource;
  subResource?: string;
  name?: string;
  namespace?: string;
  operation?: string;
  object?: unknown;
  oldObject?: unknown;
  dryRun?: boolean;
}

export interface Status {
  status?: 'Success' | 'Failure';
  code: number;
  reason?: string;
  message: string;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: Status;
  patchType?: 'JSONPatch';
  /** base64 of the JSON Patch (RFC 6902). */
  patch?: string;
  warnings?: string[];
}

export interface AdmissionReview {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: typeof ADMISSION_KIND;
  request?: AdmissionRequest;
  response?: AdmissionResponse;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest', 403: 'Forbidden', 405: 'MethodNotAllowed', 413: 'RequestEntityTooLarge',
  415: 'UnsupportedMediaType', 500: 'InternalError',
};

export function toReview(response: AdmissionResponse): AdmissionReview {
  return { apiVersion: ADMISSION_API_VERSION, kind: ADMISSION_KIND, response };
}

export function allowedResponse(uid: string, warnings: string[] = []): AdmissionResponse {
  return warnings.length > 0 ? { uid, allowed: true, warnings } : { uid, allowed: true };
}

export function patchedResponse(uid: string, patch: unknown[], warnings: string[] = []): AdmissionResponse {
  if (patch.length === 0) return allowedResponse(uid, warnings);
  const response: AdmissionResponse = { uid, allowed: true, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') };
  if (warnings.length > 0) response.warnings = warnings;
  return response;
}

/** allowed: false with a status the API server shows to the creator (`kubectl` prints the message). */
export function deniedResponse(uid: string, code: number, message: string): AdmissionResponse {
  return { uid, allowed: false, status: { status: 'Failure', code, reason: REASONS[code] ?? 'Forbidden', message } };
}

/** For requests we could not process; the same shape as a denial, the code tells them apart. */
export const erroredResponse = deniedResponse;

// ---------------------------------------------------------------------------------------------

export type DecodeResult =
  | { ok: true; request: AdmissionRequest }
  | { ok: false; uid: string; message: string };

/** Parses and checks an AdmissionReview body. */
export function decodeReview(body: string): DecodeResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    return { ok: false, uid: '', message: `request body is not valid JSON: ${(err as Error).message}` };
  }
  if (!isObject(parsed)) return { ok: false, uid: '', message: 'request body is not an AdmissionReview object' };
  const request = parsed.request;
  const uid = isObject(request) && typeof request.uid === 'string' ? request.uid : '';
  if (parsed.kind !== ADMISSION_KIND || parsed.apiVersion !== ADMISSION_API_VERSION) {
    return { ok: false, uid, message: `expected apiVersion ${ADMISSION_API_VERSION}, kind ${ADMISSION_KIND} (got ${JSON.stringify(parsed.apiVersion)}, ${JSON.stringify(parsed.kind)})` };
  }
  if (!isObject(request)) return { ok: false, uid, message: 'AdmissionReview has no request' };
  if (uid === '') return { ok: false, uid, message: 'AdmissionReview request has no uid' };
  return { ok: true, request: request as unknown as AdmissionRequest };
}

export type Outcome = 'injected' | 'unchanged' | 'skipped' | 'denied' | 'error';

export interface ReviewOutcome {
  response: AdmissionResponse;
  result: Outcome;
  reason: string;
  patchOps: number;
  /** The fallback RuntimeClass an injected Pod runs under, when not the configured one. */
  runtimeFallback?: string;
}

function isPodRequest(r: AdmissionRequest): boolean {
  const k = r.kind;
  return isObject(k) && k.group === '' && k.version === 'v1' && k.kind === 'Pod';
}

/**
 * Answers one decoded request. dryRun requests get the same answer: injection has no side effects.
 * Pod CREATE injects; UPDATE and the ephemeralcontainers subresource check and harden what may
 * change after creation (injectUpdate). Other kinds, subresources and operations are allowed untouched.
 */
export function reviewRequest(request: AdmissionRequest, config: InjectionConfig): ReviewOutcome {
  const uid = request.uid;
  if (!isPodRequest(request)) return { response: allowedResponse(uid), result: 'skipped', reason: 'not a Pod', patchOps: 0 };
  const subResource = request.subResource ?? '';
  if (subResource !== '' && subResource !== 'ephemeralcontainers') return { response: allowedResponse(uid), result: 'skipped', reason: `subresource ${subResource}`, patchOps: 0 };
  if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') return { response: allowedResponse(uid), result: 'skipped', reason: `operation ${String(request.operation)}`, patchOps: 0 };
  const original = request.object;
  const options = { namespace: typeof request.namespace === 'string' ? request.namespace : undefined };
  const result = request.operation === 'CREATE' && subResource === ''
    ? inject(original, config, options)
    : injectUpdate(original, request.oldObject, config, options);
  if (result.denied) {
    return { response: deniedResponse(uid, result.code, result.message), result: result.code === 400 ? 'error' : 'denied', reason: result.violations.map((v) => v.rule).join(','), patchOps: 0 };
  }
  if (result.skipped) return { response: allowedResponse(uid, result.warnings), result: 'skipped', reason: result.skipped, patchOps: 0 };
  const patch = diff(original as Json, result.pod);
  return {
    response: patchedResponse(uid, patch, result.warnings),
    result: patch.length === 0 ? 'unchanged' : 'injected',
    reason: result.warnings.length > 0 ? 'clamped' : '',
    patchOps: patch.length,
    ...(result.runtimeFallback === undefined || patch.length === 0 ? {} : { runtimeFallback: result.runtimeFallback }),
  };
}
