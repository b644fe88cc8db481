// gRPC-Web calls to otp.v1.SupervisorService and otp.v1.SignInService on this origin: the same services, bearer-token
// layer and audited flows as otpctl. A token travels only in the `authorization` header; no cookies are sent or set.

import { decode, details, encode, requests, responses, RpcStatus } from './proto.js';

const SIGN_IN = ['ListSignInFactors', 'StartSignIn', 'FinishSignIn', 'SignOut', 'StartPasskeyEnrolment', 'FinishPasskeyEnrolment'];
const TOKEN_KEY = 'otpd.console.token';

// The tab's session token (never the personal token): sessionStorage only, so it dies with the tab and no other tab
// or site sees it.
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

// A refused call: the gRPC code, ErrorInfo's reason and metadata, RetryInfo's delay, the ko-KR message.
export class RpcError extends Error {
  constructor(code, message, info = {}) {
    super(message);
    this.code = code;
    this.reason = info.reason || '';
    this.metadata = info.metadata || {};
    this.retrySeconds = info.retrySeconds ?? null;
    this.localized = info.localized || '';
    this.violations = info.violations || [];
  }
}

export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
};

function frame(message) {
  const body = new Uint8Array(5 + message.length);
  new DataView(body.buffer).setUint32(1, message.length);
  body.set(message, 5);
  return body;
}

function base64Bytes(text) {
  const padded = text.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(text.length / 4) * 4, '=');
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function statusDetails(encoded) {
  const info = {};
  if (!encoded) return info;
  let status;
  try {
    status = decode(RpcStatus, base64Bytes(encoded));
  } catch {
    return info;
  }
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const schema = details[name];
    if (!schema) continue;
    const d = decode(schema, any.value);
    if (name === 'google.rpc.ErrorInfo') {
      info.reason = d.reason;
      info.metadata = Object.fromEntries(d.metadata.map((e) => [e.key, e.value]));
    } else if (name === 'google.rpc.RetryInfo' && d.retry_delay) {
      info.retrySeconds = d.retry_delay.seconds + d.retry_delay.nanos / 1e9;
    } else if (name === 'google.rpc.LocalizedMessage' && d.locale === 'ko-KR') {
      info.localized = d.message;
    } else if (name === 'google.rpc.BadRequest') {
      info.violations = d.field_violations;
    }
  }
  return info;
}

function trailerMap(text) {
  const map = new Map();
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) map.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return map;
}

function failure(get) {
  const code = Number(get('grpc-status'));
  let message = get('grpc-message') || '';
  try {
    message = decodeURIComponent(message);
  } catch {
    // Left as sent.
  }
  return new RpcError(code, message, statusDetails(get('grpc-status-details-bin')));
}

// Calls `method` with `request` (a plain object) as `token` (the session's unless given) and resolves to the decoded
// response, or rejects with RpcError.
export async function call(method, request, token = session.token()) {
  const headers = {
    'content-type': 'application/grpc-web+proto',
    'x-grpc-web': '1',
    'grpc-timeout': '20S',
  };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    const service = SIGN_IN.includes(method) ? 'SignInService' : 'SupervisorService';
    response = await fetch(`/otp.v1.${service}/${method}`, {
      method: 'POST',
      headers,
      body: frame(encode(requests[method], request)),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
  } catch {
    throw new RpcError(Code.UNAVAILABLE, 'network error');
  }
  if (!response.ok) throw new RpcError(Code.UNAVAILABLE, `HTTP ${response.status}`);
  // A refusal without a message comes back "trailers-only": the status in the headers.
  if (response.headers.has('grpc-status')) {
    const refused = failure((name) => response.headers.get(name));
    if (refused.code !== Code.OK) throw refused;
  }
  const body = new Uint8Array(await response.arrayBuffer());
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let message = null;
  let trailers = new Map();
  for (let pos = 0; pos + 5 <= body.length; ) {
    const flags = body[pos];
    const length = view.getUint32(pos + 1);
    const payload = body.subarray(pos + 5, pos + 5 + length);
    pos += 5 + length;
    if (flags & 0x80) trailers = trailerMap(new TextDecoder().decode(payload));
    else if (message === null) message = payload;
  }
  if (trailers.has('grpc-status') && trailers.get('grpc-status') !== '0') {
    throw failure((name) => trailers.get(name));
  }
  if (message === null) throw new RpcError(Code.INTERNAL, 'empty response');
  return decode(responses[method], message);
}
