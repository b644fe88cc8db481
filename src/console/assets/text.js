// What the console says, Korean first and English beside it, in otpctl's words (src/ctl/render.rs); times in KST.

import { Code } from './rpc.js';
import { AuditAction, CodeChannel, DeliveryStatus, Purpose, SecondFactor } from './proto.js';

const KST_MS = 9 * 3600 * 1000;
const pad = (n) => String(n).padStart(2, '0');

// A protobuf Timestamp as milliseconds since the epoch (null when unset).
export function millis(ts) {
  return ts ? ts.seconds * 1000 + Math.floor(ts.nanos / 1e6) : null;
}

// "2026-11-21 19:29:45 KST".
export function kst(ms) {
  if (ms === null || Number.isNaN(ms)) return '-';
  const d = new Date(ms + KST_MS);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(
    d.getUTCMinutes(),
  )}:${pad(d.getUTCSeconds())} KST`;
}

// A masked number as a Korean call centre writes it: "+82 10-****-5678" → "010-****-5678" (as otpctl does).
export const local = (m) => (m.startsWith('+82 ') ? `0${m.slice(4)}` : m);

// A count beside its cap: "1/5".
export const ofCap = (n, cap) => (cap ? `${n}/${cap}` : String(n));

// "2분 58초 남음 / 2 min 58 s left".
export function left(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds % 60;
  return `${m}분 ${s}초 남음 / ${m} min ${s} s left`;
}

// "3시간 12분 후 / in 3 h 12 min".
export function inTime(ms) {
  const minutes = Math.max(0, Math.ceil(ms / 60000));
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return h > 0 ? `${h}시간 ${m}분 후 / in ${h} h ${m} min` : `${m}분 후 / in ${m} min`;
}

export const purposeNames = {
  [Purpose.UNSPECIFIED]: ['가장 최근 인증', 'most recent'],
  [Purpose.LOGIN]: ['로그인', 'login'],
  [Purpose.SIGNUP]: ['가입', 'signup'],
  [Purpose.REAUTH]: ['재인증', 'reauth'],
  [Purpose.CHANGE_PHONE]: ['번호 변경', 'change phone'],
};

export function purpose(p) {
  const [ko, en] = purposeNames[p] || ['-', '-'];
  return `${ko} / ${en}`;
}

// The channel that carried a send: AlimTalk when it did, else the send's own channel.
export function channel(send) {
  if (send.delivered_by === 'alimtalk') return '알림톡 / AlimTalk';
  if (send.channel === CodeChannel.SMS) return 'SMS';
  if (send.channel === CodeChannel.SUPERVISOR) return '팀장 조회 / lookup';
  return '-';
}

// The provider's acceptance is not the phone's: the carrier's last receipt, when one came, says more.
export function delivery(send) {
  const carrier = send.attempts.findLast((a) => a.receipt !== '');
  if (send.delivery === DeliveryStatus.DELIVERED) {
    if (!carrier) return '접수됨 / accepted';
    return carrier.receipt === 'delivered' ? '수신 완료 / delivered' : '수신 실패 / not delivered';
  }
  if (send.delivery === DeliveryStatus.FAILED) return '실패 / failed';
  if (send.delivery === DeliveryStatus.PENDING) return '전송 중 / pending';
  return '-';
}

// One channel's attempt, in otpctl's words.
export function attemptChannel(a) {
  return a.channel === 'alimtalk' ? '알림톡 / AlimTalk' : 'SMS';
}

const outcomes = {
  accepted: '접수 / accepted',
  refused: '거절 / refused',
  failed: '실패 / failed',
  unconfirmed: '응답 없음 / unconfirmed',
};

// With why the provider did not take it: "거절 / refused — 발송 실패: 문자 발송 업체 장애 / send failed: …".
export function outcome(a) {
  const o = outcomes[a.outcome] || '-';
  return a.failure_ko ? `${o} — ${a.failure_ko} / ${a.failure_en}` : o;
}

// What the carrier reported for an attempt the provider took (or may have): [text, 'good' | 'bad' | null].
// A refused or failed attempt never reached a carrier, so it has no receipt.
export function receipt(a) {
  if (a.outcome !== 'accepted' && a.outcome !== 'unconfirmed') return ['-', null];
  const at = kst(millis(a.receipt_at));
  if (a.receipt === 'delivered') return [`전달됨 / delivered ${at}`, 'good'];
  if (a.receipt === 'failed') {
    const code = a.receipt_code ? ` (${a.receipt_code})` : '';
    return [`실패 / failed ${at}: ${a.reason_ko} / ${a.reason_en}${code}`, 'bad'];
  }
  return ['결과 미수신 / not reported', null];
}

export const actionNames = {
  [AuditAction.LOOKUP_CODE]: ['인증번호 조회', 'lookup-code'],
  [AuditAction.GET_PHONE_STATUS]: ['상태 조회', 'get-phone-status'],
  [AuditAction.UNLOCK_PHONE]: ['잠금 해제', 'unlock-phone'],
  [AuditAction.LIST_AUDIT_EVENTS]: ['감사 기록 열람', 'list-audit-events'],
  [AuditAction.PHONE_LOCKED]: ['번호 잠김', 'phone-locked'],
  [AuditAction.SUPERVISOR_ADDED]: ['팀장 추가', 'supervisor-added'],
  [AuditAction.SUPERVISOR_DISABLED]: ['팀장 비활성화', 'supervisor-disabled'],
  [AuditAction.VERIFY_AUDIT_CHAIN]: ['체인 검증', 'verify-audit-chain'],
};

export function action(a) {
  const [ko, en] = actionNames[a] || ['-', 'unspecified'];
  return `${ko} / ${en}`;
}

export const roleNames = { supervisor: '팀장 / supervisor', admin: '관리자 / admin', auditor: '감사 담당자 / auditor' };

export const factorNames = {
  [SecondFactor.PASSKEY]: 'passkey',
  [SecondFactor.PHONE_CODE]: '휴대폰 인증번호 / code to my phone',
  [SecondFactor.EMAIL_CODE]: '비상용 이메일 인증번호 / emergency e-mail code',
};

// "010-****-5678(으)로 인증번호를 보냈습니다 …".
export function codeSent(destination, expires) {
  return `${destination}(으)로 인증번호를 보냈습니다 (${kst(expires)}까지). / A code was sent to ${destination}.`;
}

// A refused call in plain words: [Korean, English].
export function explain(error) {
  const minutes = error.retrySeconds === null ? 60 : Math.max(1, Math.ceil(error.retrySeconds / 60));
  switch (error.reason) {
    case 'THIRD_PARTY_NUMBER':
      return [
        '발신 번호가 인증 대상 번호와 다릅니다. 제3자 번호로는 인증번호를 안내할 수 없습니다.',
        "The contact number is not the number being verified: the code cannot be given for a third party's number.",
      ];
    case 'NO_PENDING_VERIFICATION':
      return [
        '최근 발송된 인증번호가 없습니다. 기사님께 앱에서 인증번호 전송을 먼저 누르도록 안내한 뒤 다시 조회하세요.',
        'No code was sent to this number recently: ask the driver to press send in the app, then look up again.',
      ];
    case 'PHONE_LOCKED': {
      const until = kst(Date.parse(error.metadata.locked_until));
      return [
        `인증번호가 10회 이상 일치하지 않아 잠긴 번호입니다 (해제 시각 ${until}). 관리자에게 잠금 해제를 요청하세요.`,
        `This number is locked after too many wrong codes (until ${until}). Ask an admin to unlock it.`,
      ];
    }
    case 'LOOKUP_QUOTA':
      return [
        `조회 한도를 초과했습니다. ${minutes}분 후에 다시 시도하세요.`,
        `Your lookup quota is used up; try again in ${minutes} min.`,
      ];
    case 'SIGN_IN_LOCKED': {
      const at = Date.parse(error.metadata.locked_until);
      const until = kst(Number.isNaN(at) ? Date.now() + (error.retrySeconds ?? 1800) * 1000 : at);
      return [
        `로그인 실패가 반복되어 잠겼습니다. ${until} 이후에 다시 시도하세요.`,
        `Sign-in is locked after repeated failures; try again after ${until}.`,
      ];
    }
    case 'SESSION_EXPIRED':
      return ['로그인 시간이 만료되었습니다. 다시 로그인하세요.', 'Your session has ended: sign in again.'];
    case 'SESSION_REQUIRED':
      return ['2차 인증으로 로그인해야 합니다.', 'Sign in with a second factor first.'];
    case 'WRONG_SIGN_IN_CODE':
      return [
        `인증번호가 틀렸습니다 (${error.metadata.attempts_remaining}회 남음).`,
        `Wrong code (${error.metadata.attempts_remaining} attempt(s) left).`,
      ];
    case 'PASSKEY_REJECTED':
      return ['passkey 확인에 실패했습니다.', 'The passkey was refused.'];
    case 'SIGN_IN_EXPIRED':
      return ['로그인 요청이 만료되었습니다. 다시 시도하세요.', 'This sign-in expired: start again.'];
    case 'FACTOR_NOT_AVAILABLE':
      return ['이 인증 수단은 쓸 수 없습니다. 다른 수단을 고르세요.', `This factor cannot be used: ${error.message}`];
    case 'PASSKEY_NOT_USED':
      return ['passkey 확인이 취소되었거나 실패했습니다.', `The passkey was not used: ${error.message}`];
    case 'SUPERVISOR_DISABLED':
      return ['비활성화된 팀장의 토큰입니다.', "This token's supervisor is disabled."];
    case 'AUDIT_UNAVAILABLE':
      return [
        '감사 기록을 쓸 수 없어 아무것도 하지 않았습니다. 잠시 후 다시 시도하세요.',
        'The audit log cannot be written, so nothing was done; try again shortly.',
      ];
    default:
      break;
  }
  switch (error.code) {
    case Code.UNAUTHENTICATED:
      return ['토큰이 없거나, 잘못되었거나, 비활성화되었습니다.', 'Missing, unknown or disabled token.'];
    case Code.PERMISSION_DENIED:
      return ['이 작업을 할 권한이 없습니다.', 'Your role does not allow this.'];
    case Code.INVALID_ARGUMENT: {
      const fields = error.violations.map((v) => `${v.field}: ${v.description}`).join('; ') || error.message;
      return [`입력값을 확인하세요: ${fields}`, `Invalid input: ${fields}`];
    }
    case Code.UNAVAILABLE:
      return [
        '서버를 일시적으로 사용할 수 없습니다. 잠시 후 다시 시도하세요.',
        'The server is temporarily unavailable; try again shortly.',
      ];
    default:
      return [`요청이 거부되었습니다: ${error.message}`, error.message || 'The request was refused.'];
  }
}
