// Protocol Buffers wire format (proto3) for the few messages the console exchanges: varints and length-delimited
// fields, driven by small schemas that mirror proto/otp/v1/supervisor.proto and signin.proto. Unknown fields are
// skipped, so a newer server stays readable.

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: false });

// --- encoding ---

function varint(out, n) {
  // Non-negative integers up to 2^53: what every field the console sends holds.
  let v = Math.floor(n);
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

function key(out, field, wireType) {
  varint(out, field * 8 + wireType);
}

function bytesField(out, field, bytes) {
  key(out, field, 2);
  varint(out, bytes.length);
  for (const b of bytes) out.push(b);
}

// Encodes `value` (a plain object) with `schema`: { name: [fieldNumber, type] }, type 'string' | 'int' | 'enum'
// | 'bool' | a nested schema. Proto3 defaults (empty, 0, false, null) are left out, as protobuf does.
export function encode(schema, value) {
  const out = [];
  for (const [name, [field, type]] of Object.entries(schema)) {
    const v = value[name];
    if (v === undefined || v === null || v === '' || v === 0 || v === false) continue;
    if (type === 'string') bytesField(out, field, utf8.encode(v));
    else if (type === 'int' || type === 'enum') {
      key(out, field, 0);
      varint(out, v);
    } else if (type === 'bool') {
      key(out, field, 0);
      out.push(1);
    } else bytesField(out, field, encode(type, v));
  }
  return Uint8Array.from(out);
}

// --- decoding ---

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  done() {
    return this.pos >= this.bytes.length;
  }

  varint() {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.bytes.length) throw new Error('truncated varint');
      const b = this.bytes[this.pos++];
      result += (b & 0x7f) * scale;
      if (b < 0x80) {
        // Negative int32/int64 values arrive as 64-bit two's complement.
        return result >= 2 ** 63 ? result - 2 ** 64 : result;
      }
      scale *= 0x80;
    }
    throw new Error('varint too long');
  }

  take(n) {
    if (this.pos + n > this.bytes.length) throw new Error('truncated field');
    const slice = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return slice;
  }

  skip(wireType) {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.take(8);
    else if (wireType === 2) this.take(this.varint());
    else if (wireType === 5) this.take(4);
    else throw new Error(`unsupported wire type ${wireType}`);
  }
}

// Schemas list fields as { fieldNumber: [name, type, repeated?] }; type as for `encode`, plus 'bytes'.
function defaults(schema) {
  const value = {};
  for (const [name, type, repeated] of Object.values(schema)) {
    if (repeated) value[name] = [];
    else if (type === 'string') value[name] = '';
    else if (type === 'int' || type === 'enum') value[name] = 0;
    else if (type === 'bool') value[name] = false;
    else value[name] = null;
  }
  return value;
}

// Decodes `bytes` with `schema` into a plain object holding every field (proto3 defaults when absent).
export function decode(schema, bytes) {
  const reader = new Reader(bytes);
  const value = defaults(schema);
  while (!reader.done()) {
    const tag = reader.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    const spec = schema[field];
    if (!spec) {
      reader.skip(wireType);
      continue;
    }
    const [name, type, repeated] = spec;
    let v;
    if (wireType === 0) {
      const n = reader.varint();
      v = type === 'bool' ? n !== 0 : n;
    } else if (wireType === 2) {
      const slice = reader.take(reader.varint());
      if (type === 'string') v = fromUtf8.decode(slice);
      else if (type === 'bytes') v = slice;
      else if (typeof type === 'object') v = decode(type, slice);
      else {
        // A packed repeated scalar.
        const inner = new Reader(slice);
        while (!inner.done()) value[name].push(inner.varint());
        continue;
      }
    } else {
      reader.skip(wireType);
      continue;
    }
    if (repeated) value[name].push(v);
    else value[name] = v;
  }
  return value;
}

// --- the messages ---

const TimestampOut = { seconds: [1, 'int'], nanos: [2, 'int'] };
const Timestamp = { 1: ['seconds', 'int'], 2: ['nanos', 'int'] };

export const requests = {
  WhoAmI: {},
  LookupCode: {
    phone_number: [1, 'string'],
    purpose: [2, 'enum'],
    ticket_id: [3, 'string'],
    reason: [4, 'enum'],
    contact: [5, 'enum'],
    contact_number: [6, 'string'],
    call_id: [7, 'string'],
  },
  GetPhoneStatus: { phone_number: [1, 'string'], ticket_id: [2, 'string'], call_id: [3, 'string'] },
  ListMyCalls: {},
  UnlockPhone: { phone_number: [1, 'string'], ticket_id: [2, 'string'], reason: [3, 'string'] },
  ListAuditEvents: {
    since: [1, TimestampOut],
    until: [2, TimestampOut],
    actor: [3, 'string'],
    phone_number: [4, 'string'],
    action: [5, 'enum'],
    page_size: [6, 'int'],
    page_token: [7, 'string'],
  },
  VerifyAuditChain: { accept_unkeyed_through: [1, 'int'], expect_heads: [2, 'string'] },
  ListSignInFactors: {},
  StartSignIn: { factor: [1, 'enum'] },
  FinishSignIn: { sign_in_id: [1, 'string'], code: [2, 'string'], passkey_credential_json: [3, 'string'] },
  SignOut: {},
  StartPasskeyEnrolment: { enrolment_code: [1, 'string'] },
  FinishPasskeyEnrolment: { enrolment_id: [1, 'string'], passkey_credential_json: [2, 'string'], label: [3, 'string'] },
};

const DeliveryAttempt = {
  1: ['channel', 'string'],
  2: ['gateway', 'string'],
  3: ['attempted_at', Timestamp],
  4: ['outcome', 'string'],
  5: ['provider_id', 'string'],
  6: ['receipt', 'string'],
  7: ['receipt_at', Timestamp],
  8: ['receipt_code', 'string'],
  9: ['reason_ko', 'string'],
  10: ['reason_en', 'string'],
  12: ['failure_ko', 'string'],
  13: ['failure_en', 'string'],
  30: ['route', 'string'],
};

const StatusCheck = {
  1: ['check', 'string'],
  2: ['state', 'string'],
  3: ['finding_ko', 'string'],
  4: ['finding_en', 'string'],
  5: ['next_step_ko', 'string'],
  6: ['next_step_en', 'string'],
};

const CodeSend = {
  1: ['sent_at', Timestamp],
  2: ['channel', 'enum'],
  3: ['delivery', 'enum'],
  4: ['expires_at', Timestamp],
  5: ['live', 'bool'],
  6: ['provider_message_id', 'string'],
  7: ['delivered_by', 'string'],
  8: ['attempts', DeliveryAttempt, true],
};

const PendingVerification = {
  1: ['verification_id', 'string'],
  2: ['purpose', 'enum'],
  3: ['created_at', Timestamp],
  4: ['expires_at', Timestamp],
  5: ['sends', CodeSend, true],
  6: ['approved_at', Timestamp],
};

const AuditEvent = {
  1: ['sequence', 'int'],
  2: ['id', 'string'],
  3: ['time', Timestamp],
  4: ['actor_name', 'string'],
  5: ['actor_role', 'string'],
  6: ['action', 'enum'],
  7: ['masked_phone_number', 'string'],
  8: ['ticket_id', 'string'],
  9: ['reason', 'string'],
  10: ['contact', 'enum'],
  11: ['contact_matched', 'bool'],
  12: ['outcome', 'enum'],
  13: ['detail', 'string'],
  14: ['prev_hash', 'string'],
  15: ['hash', 'string'],
  16: ['evidence', 'string'],
  17: ['call_id', 'string'],
  18: ['call_direction', 'string'],
  19: ['call_masked_number', 'string'],
};
// 30–34: where the call came from.
for (let n = 30; n < 35; n++) AuditEvent[n] = ['from', 'string', true];

const MyCall = {
  1: ['call_id', 'string'],
  2: ['direction', 'string'],
  3: ['masked_phone_number', 'string'],
  4: ['answered_at', Timestamp],
  5: ['send_recorded_at', Timestamp],
};

const LookupNotice = {
  1: ['sent_at', Timestamp],
  2: ['outcome', 'string'],
  3: ['gateway', 'string'],
  4: ['provider_id', 'string'],
};

export const responses = {
  WhoAmI: {
    1: ['name', 'string'],
    2: ['role', 'string'],
    3: ['allowed_methods', 'string', true],
    4: ['lookup_evidence', 'string'],
    5: ['agent_id', 'string'],
  },
  ListMyCalls: { 1: ['calls', MyCall, true] },
  LookupCode: {
    1: ['code', 'string'],
    2: ['verification_id', 'string'],
    3: ['purpose', 'enum'],
    4: ['expires_at', Timestamp],
    5: ['masked_phone_number', 'string'],
    6: ['audit_event_id', 'string'],
  },
  GetPhoneStatus: {
    1: ['masked_phone_number', 'string'],
    2: ['failed_attempts', 'int'],
    3: ['attempts_remaining', 'int'],
    4: ['locked_until', Timestamp],
    5: ['pending', PendingVerification, true],
    6: ['sms_last_hour', 'int'],
    7: ['sms_last_day', 'int'],
    8: ['audit_event_id', 'string'],
    9: ['notices', LookupNotice, true],
    10: ['sms_hour_cap', 'int'],
    11: ['sms_day_cap', 'int'],
    30: ['checklist', StatusCheck, true],
  },
  UnlockPhone: {
    1: ['masked_phone_number', 'string'],
    2: ['was_locked', 'bool'],
    3: ['failed_attempts_cleared', 'int'],
    4: ['audit_event_id', 'string'],
  },
  ListAuditEvents: { 1: ['events', AuditEvent, true], 2: ['next_page_token', 'string'] },
  VerifyAuditChain: {
    1: ['intact', 'bool'],
    2: ['events_checked', 'int'],
    3: ['unkeyed_events', 'int'],
    4: ['head_hash', 'string'],
    5: ['broken_at_sequence', 'int'],
    6: ['problem', 'string'],
    7: ['audit_event_id', 'string'],
  },
  ListSignInFactors: { 1: ['name', 'string'], 2: ['factors', { 1: ['factor', 'enum'], 2: ['destination', 'string'] }, true] },
  StartSignIn: {
    1: ['sign_in_id', 'string'],
    2: ['destination', 'string'],
    3: ['expires_at', Timestamp],
    4: ['passkey_request_options_json', 'string'],
  },
  FinishSignIn: {
    1: ['session_token', 'string'],
    2: ['session_id', 'string'],
    3: ['idle_expires_at', Timestamp],
    4: ['expires_at', Timestamp],
  },
  SignOut: {},
  StartPasskeyEnrolment: {
    1: ['enrolment_id', 'string'],
    2: ['passkey_creation_options_json', 'string'],
    3: ['expires_at', Timestamp],
  },
  FinishPasskeyEnrolment: { 1: ['passkey_id', 'string'] },
};

// google.rpc.Status and the error details the console reads (grpc-status-details-bin).
const Any = { 1: ['type_url', 'string'], 2: ['value', 'bytes'] };
export const RpcStatus = { 1: ['code', 'int'], 2: ['message', 'string'], 3: ['details', Any, true] };
const MetadataEntry = { 1: ['key', 'string'], 2: ['value', 'string'] };
export const details = {
  'google.rpc.ErrorInfo': { 1: ['reason', 'string'], 2: ['domain', 'string'], 3: ['metadata', MetadataEntry, true] },
  'google.rpc.RetryInfo': { 1: ['retry_delay', Timestamp] },
  'google.rpc.LocalizedMessage': { 1: ['locale', 'string'], 2: ['message', 'string'] },
  'google.rpc.BadRequest': {
    1: ['field_violations', { 1: ['field', 'string'], 2: ['description', 'string'] }, true],
  },
};

// Enum numbers, as in the proto.
export const Purpose = { UNSPECIFIED: 0, LOGIN: 1, SIGNUP: 2, REAUTH: 3, CHANGE_PHONE: 4 };
export const LookupReason = { STRONG_COMPLAINT: 1 };
export const ContactChannel = { INBOUND_CALL: 1, OUTBOUND_CALLBACK: 2 };
export const CodeChannel = { SMS: 1, SUPERVISOR: 2 };
export const DeliveryStatus = { PENDING: 1, DELIVERED: 2, FAILED: 3 };
export const SecondFactor = { PASSKEY: 1, PHONE_CODE: 2, EMAIL_CODE: 3 };
export const AuditOutcome = { GRANTED: 1, DENIED: 2 };
export const AuditAction = {
  LOOKUP_CODE: 1,
  GET_PHONE_STATUS: 2,
  UNLOCK_PHONE: 3,
  LIST_AUDIT_EVENTS: 4,
  PHONE_LOCKED: 5,
  SUPERVISOR_ADDED: 6,
  SUPERVISOR_DISABLED: 7,
  VERIFY_AUDIT_CHAIN: 8,
  SUPERVISOR_AGENT_SET: 9,
};
