// The console's screens. Which screens exist is decided once, from WhoAmI: a role is never offered what it may
// not call (the server refuses it anyway, and audits the refusal).

import { call, Code, RpcError, session } from './rpc.js';
import { AuditAction, ContactChannel, DeliveryStatus, LookupReason, AuditOutcome, SecondFactor } from './proto.js';
import * as text from './text.js';

const $ = (id) => document.getElementById(id);
const GENESIS = '0'.repeat(64);
const SIGNED_OUT = 'otpd.console.signed-out';

function el(tag, content, attrs = {}) {
  const node = document.createElement(tag);
  if (content !== undefined && content !== null) node.textContent = String(content);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// Shows a refusal ([Korean, English]) in `box`.
function showError(box, error) {
  const [ko, en] = error instanceof RpcError ? text.explain(error) : ['오류가 발생했습니다.', String(error)];
  box.replaceChildren(el('p', ko), el('p', en, { lang: 'en' }));
  if (error instanceof RpcError && error.reason) box.append(el('p', error.reason, { class: 'reason' }));
  box.hidden = false;
}

// Back to the sign-in page, saying why (a session that expired or was ended, a disabled person).
function signedOut(error) {
  session.signOut();
  sessionStorage.setItem(SIGNED_OUT, error.reason || 'UNAUTHENTICATED');
  window.location.replace('/console/');
}

const endsSession = (error) =>
  error instanceof RpcError && (error.code === Code.UNAUTHENTICATED || error.reason === 'SESSION_EXPIRED');

// A call whose refusal for a session that stopped working signs the tab out.
async function rpc(method, request, errorBox) {
  errorBox.hidden = true;
  try {
    return await call(method, request);
  } catch (error) {
    if (endsSession(error)) signedOut(error);
    else showError(errorBox, error);
    return null;
  }
}

async function busy(form, work) {
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

// --- sign in ----------------------------------------------------------------------------------------------------

// The personal token lives here only, from the token step to the session: never in storage or the page.
let personal = null;
let signingIn = null;

function signInStep(step) {
  $('sign-in-form').hidden = step !== 'token';
  $('factors').hidden = step !== 'factors';
  $('code-form').hidden = step !== 'code';
  if (step === 'token') {
    personal = null;
    $('token').focus();
  }
}

function showSignIn() {
  clearCode();
  $('sign-in').hidden = false;
  for (const id of ['who', 'sign-out', 'add-passkey', 'screens', 'passkey']) $(id).hidden = true;
  for (const section of document.querySelectorAll('section[data-method]')) section.hidden = true;
  signInStep('token');
}

// A sign-in step refused: a wrong code or passkey may try again, a used or expired sign-in starts from the factors,
// anything else (a bad token, a lock) from the token.
function signInRefused(error) {
  showError($('notice'), error);
  const reason = error instanceof RpcError ? error.reason : '';
  if (reason === 'SIGN_IN_EXPIRED') signInStep('factors');
  else if (!['WRONG_SIGN_IN_CODE', 'PASSKEY_REJECTED', 'FACTOR_NOT_AVAILABLE'].includes(reason)) signInStep('token');
}

async function factors(token) {
  personal = token;
  let r;
  try {
    r = await call('ListSignInFactors', {}, personal);
  } catch (error) {
    signInRefused(error);
    return;
  }
  $('notice').hidden = true;
  $('factor-name').textContent = r.name;
  const list = $('factor-list');
  list.replaceChildren();
  for (const f of r.factors) {
    const label = [text.factorNames[f.factor] || f.factor, f.destination].filter(Boolean).join(' · ');
    const button = el('button', label, { type: 'button', 'data-factor': f.factor });
    button.addEventListener('click', async () => {
      for (const b of list.children) b.disabled = true;
      await startSignIn(f.factor);
      for (const b of list.children) b.disabled = false;
    });
    list.append(button);
  }
  $('no-factors').hidden = r.factors.length > 0;
  signInStep('factors');
  list.querySelector('button')?.focus();
}

async function startSignIn(factor) {
  let started;
  try {
    started = await call('StartSignIn', { factor }, personal);
  } catch (error) {
    signInRefused(error);
    return;
  }
  $('notice').hidden = true;
  signingIn = started.sign_in_id;
  if (factor !== SecondFactor.PASSKEY) {
    $('code-sent').textContent = text.codeSent(started.destination, text.millis(started.expires_at));
    signInStep('code');
    $('sign-in-code').focus();
    return;
  }
  let credential;
  try {
    const options = PublicKeyCredential.parseRequestOptionsFromJSON(JSON.parse(started.passkey_request_options_json));
    credential = await navigator.credentials.get({ publicKey: options });
  } catch (error) {
    showError($('notice'), new RpcError(0, String(error), { reason: 'PASSKEY_NOT_USED' }));
    return;
  }
  await finishSignIn({ passkey_credential_json: JSON.stringify(credential.toJSON()) });
}

async function finishSignIn(proof) {
  let r;
  try {
    r = await call('FinishSignIn', { sign_in_id: signingIn, ...proof }, personal);
  } catch (error) {
    signInRefused(error);
    return;
  }
  // Only the session is kept: the personal token is forgotten at once.
  personal = null;
  signingIn = null;
  session.signIn(r.session_token);
  await start();
}

async function start() {
  const why = sessionStorage.getItem(SIGNED_OUT);
  if (why) {
    sessionStorage.removeItem(SIGNED_OUT);
    showError($('notice'), new RpcError(Code.UNAUTHENTICATED, '', { reason: why }));
  }
  if (!session.token()) {
    showSignIn();
    return;
  }
  let me;
  try {
    me = await call('WhoAmI', {});
  } catch (error) {
    if (endsSession(error)) session.signOut();
    showError($('notice'), error);
    showSignIn();
    return;
  }
  $('notice').hidden = true;
  $('sign-in').hidden = true;
  $('who').textContent = `${me.name} · ${text.roleNames[me.role] || me.role}`;
  $('who').hidden = false;
  $('sign-out').hidden = false;
  $('add-passkey').hidden = false;
  const nav = $('screens');
  nav.replaceChildren();
  for (const section of [...document.querySelectorAll('section[data-method]')]) {
    if (!me.allowed_methods.includes(section.dataset.method)) {
      // Not hidden but gone: what the role may not do is not in the page at all.
      section.remove();
      continue;
    }
    const button = el('button', section.dataset.title, { type: 'button', 'data-screen': section.id });
    button.addEventListener('click', () => show(section.id, true));
    nav.append(button);
  }
  for (const node of [...document.querySelectorAll('[data-method]:not(section)')]) {
    if (!me.allowed_methods.includes(node.dataset.method)) node.remove();
  }
  nav.hidden = false;
  // The typed form only where the server takes typed evidence; the calls on the line wherever lookups are offered.
  if (me.lookup_evidence === 'call') $('lookup-form')?.remove();
  if (me.lookup_evidence === 'typed') $('on-the-line')?.remove();
  else if ($('on-the-line')) watchCalls();
  const first = nav.querySelector('button');
  if (first) show(first.dataset.screen, true);
}

// --- on the line ------------------------------------------------------------------------------------------------

const DIRECTIONS = { inbound: '인바운드(기사님 발신) / inbound', outbound: '콜백(상담사 발신) / callback' };
let shownCalls = '';

// Every 2 s: a call shows within 3 s.
function watchCalls() {
  const refresh = async () => {
    let r;
    try {
      r = await call('ListMyCalls', {});
    } catch {
      return;
    }
    const key = JSON.stringify(r.calls);
    if (key === shownCalls) return;
    shownCalls = key;
    const list = $('my-calls');
    list.replaceChildren();
    for (const c of r.calls) {
      const since = text.kst(text.millis(c.answered_at));
      const sent = c.send_recorded_at ? '전송됨 / sent' : '전송 대기 / no send yet';
      const label = `${text.local(c.masked_phone_number)} · ${DIRECTIONS[c.direction] || c.direction} · ${since} · ${sent} · ${c.call_id}`;
      const button = el('button', label, { type: 'button', 'data-call': c.call_id });
      button.addEventListener('click', () => chooseCall(c));
      const item = el('li');
      item.append(button);
      list.append(item);
      // The call chosen while the driver had not pressed send yet: its lookup goes ahead once the send is here.
      if (waiting === c.call_id && c.send_recorded_at) chooseCall(c);
    }
    $('no-calls').hidden = r.calls.length > 0;
  };
  refresh();
  setInterval(refresh, 2000);
}

let chosen = null;
let waiting = null;

async function callStatus() {
  const status = await rpc('GetPhoneStatus', chosen, $('lookup-error'));
  if (status) renderStatus(status, $('call-status'));
  $('call-refresh').hidden = !status;
  return status;
}

$('call-refresh')?.addEventListener('click', callStatus);

// Until the driver presses send, a lookup would only be refused (and audited): the console waits for the send
// in ListMyCalls, which is not audited, instead of asking again and again.
async function chooseCall(c) {
  clearCode();
  chosen = { call_id: c.call_id, ticket_id: $('call-ticket').value.trim() };
  waiting = c.send_recorded_at ? null : c.call_id;
  if (waiting) {
    $('call-status').replaceChildren(
      el('p', '기사님이 앱에서 인증번호 전송을 누르기를 기다리는 중입니다. 전송되면 바로 조회합니다.', { class: 'notice' }),
      el('p', 'Waiting for the driver to press send in the app; the lookup follows as soon as the send is recorded.', { lang: 'en' }),
    );
    $('call-status').hidden = false;
    return;
  }
  if (!(await callStatus())) return;
  const r = await rpc('LookupCode', { ...chosen, reason: LookupReason.STRONG_COMPLAINT }, $('lookup-error'));
  if (r) showCode(r);
}

function show(id, focus) {
  clearCode();
  $('passkey').hidden = true;
  for (const section of document.querySelectorAll('section[data-method]')) section.hidden = section.id !== id;
  for (const button of $('screens').querySelectorAll('button')) {
    if (button.dataset.screen === id) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  const first = id && $(id).querySelector('input, select, textarea');
  if (focus && first) first.focus();
}

$('sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  $('token').value = '';
  if (token) busy($('sign-in-form'), () => factors(token));
});

$('factor-back').addEventListener('click', () => signInStep('token'));

$('code-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const code = $('sign-in-code').value.trim();
  $('sign-in-code').value = '';
  busy($('code-form'), () => finishSignIn({ code }));
});

$('sign-out').addEventListener('click', async () => {
  clearCode();
  try {
    await call('SignOut', {});
  } catch {
    // Ended already, or the server is away: the session still ends by time, and the tab forgets it now.
  }
  session.signOut();
  // A fresh page: nothing of the session (codes, lists, the removed screens) survives.
  window.location.replace('/console/');
});

// --- passkey enrolment ------------------------------------------------------------------------------------------

$('add-passkey').addEventListener('click', () => {
  show(null);
  $('passkey-done').hidden = true;
  $('passkey').hidden = false;
  $('passkey-label').focus();
});

$('passkey-form').addEventListener('submit', (event) => {
  event.preventDefault();
  busy($('passkey-form'), async () => {
    const started = await rpc('StartPasskeyEnrolment', {}, $('passkey-error'));
    if (!started) return;
    let credential;
    try {
      const options = JSON.parse(started.passkey_creation_options_json);
      credential = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
      });
    } catch (error) {
      showError($('passkey-error'), new RpcError(0, String(error), { reason: 'PASSKEY_NOT_USED' }));
      return;
    }
    const request = {
      enrolment_id: started.enrolment_id,
      passkey_credential_json: JSON.stringify(credential.toJSON()),
      label: $('passkey-label').value.trim(),
    };
    if (await rpc('FinishPasskeyEnrolment', request, $('passkey-error'))) {
      $('passkey-label').value = '';
      $('passkey-done').hidden = false;
    }
  });
});

// --- lookup -----------------------------------------------------------------------------------------------------

let countdown = null;

// Takes a looked-up code off the page: on expiry, on leaving the screen, on "done", on leaving the page.
function clearCode() {
  if (countdown !== null) clearInterval(countdown);
  countdown = null;
  for (const id of ['code', 'script-code', 'script-code-en', 'countdown']) {
    const node = $(id);
    if (node) node.textContent = '';
  }
  $('code')?.removeAttribute('aria-label');
  const result = $('lookup-result');
  if (result) result.hidden = true;
}

function contactKind() {
  return document.querySelector('input[name=contact]:checked').value;
}

function labelContact() {
  const label = $('contact-number-label');
  if (!label) return;
  const [ko, en] =
    contactKind() === 'inbound'
      ? ['발신 번호 (전화 시스템 표시)', "Caller's number as the phone system shows it"]
      : ['내가 건 번호', 'The number you dialled'];
  label.replaceChildren(`${ko} `, el('span', `/ ${en}`, { lang: 'en' }));
}

for (const radio of document.querySelectorAll('input[name=contact]')) radio.addEventListener('change', labelContact);

$('lookup-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form, async () => {
    clearCode();
    $('lookup-expired').hidden = true;
    const request = {
      phone_number: $('lookup-phone').value,
      purpose: Number($('lookup-purpose').value),
      ticket_id: $('lookup-ticket').value.trim(),
      reason: LookupReason.STRONG_COMPLAINT,
      contact: contactKind() === 'inbound' ? ContactChannel.INBOUND_CALL : ContactChannel.OUTBOUND_CALLBACK,
      contact_number: $('lookup-contact').value,
    };
    const r = await rpc('LookupCode', request, $('lookup-error'));
    if (r) showCode(r);
  });
});

function showCode(r) {
  const spaced = [...r.code].join(' ');
  $('code').textContent = spaced;
  $('code').setAttribute('aria-label', `인증번호 ${spaced}`);
  $('script-code').textContent = spaced;
  $('script-code-en').textContent = spaced;
  $('lookup-masked').textContent = text.local(r.masked_phone_number);
  $('lookup-purpose-out').textContent = text.purpose(r.purpose);
  const expires = text.millis(r.expires_at);
  $('lookup-until').textContent = text.kst(expires);
  $('lookup-audit').textContent = r.audit_event_id;
  const tick = () => {
    const seconds = Math.floor((expires - Date.now()) / 1000);
    if (seconds <= 0) {
      clearCode();
      $('lookup-expired').hidden = false;
      return;
    }
    $('countdown').textContent = text.left(seconds);
  };
  $('lookup-result').hidden = false;
  tick();
  if (!$('lookup-result').hidden) {
    countdown = setInterval(tick, 1000);
    $('lookup-result').focus();
  }
}

$('lookup-done').addEventListener('click', () => {
  clearCode();
  // A new call: nothing of the last one stays, ticket included.
  waiting = null;
  for (const id of ['lookup-phone', 'lookup-ticket', 'lookup-contact', 'call-ticket']) {
    if ($(id)) $(id).value = '';
  }
  if ($('call-status')) $('call-status').hidden = true;
  ($('lookup-phone') || $('call-ticket'))?.focus();
});

window.addEventListener('pagehide', clearCode);

// --- status -----------------------------------------------------------------------------------------------------

function row(cells, header = false) {
  const tr = el('tr');
  cells.forEach((c, i) => tr.append(el(header || i === 0 ? 'th' : 'td', c, header ? { scope: 'col' } : {})));
  return tr;
}

function table(caption, head, rows) {
  const t = el('table');
  t.append(el('caption', caption));
  const thead = el('thead');
  thead.append(row(head, true));
  const tbody = el('tbody');
  for (const r of rows) tbody.append(row(r));
  t.append(thead, tbody);
  return t;
}

$('status-form').addEventListener('submit', (event) => {
  event.preventDefault();
  busy(event.currentTarget, async () => {
    $('status-result').hidden = true;
    const r = await rpc(
      'GetPhoneStatus',
      { phone_number: $('status-phone').value, ticket_id: $('status-ticket').value.trim() },
      $('status-error'),
    );
    if (r) renderStatus(r);
  });
});

function renderStatus(r, out = $('status-result')) {
  const locked = text.millis(r.locked_until);
  const facts = el('dl', null, { class: 'facts' });
  const fact = (ko, en, value, cls) => {
    const dt = el('dt', `${ko} `);
    dt.append(el('span', `/ ${en}`, { lang: 'en' }));
    facts.append(dt, el('dd', value, cls ? { class: cls } : {}));
  };
  fact('번호', 'number', text.local(r.masked_phone_number));
  fact('연속 실패', 'failed attempts', `${r.failed_attempts} (남은 시도 / left: ${r.attempts_remaining})`);
  if (locked !== null) {
    fact(
      '잠금',
      'locked',
      `예 / yes — 해제 / unlocks ${text.kst(locked)} (${text.inTime(locked - Date.now())})`,
      'bad',
    );
  } else {
    fact('잠금', 'locked', '아니오 / no', 'good');
  }
  fact('SMS 1시간', 'last hour', text.ofCap(r.sms_last_hour, r.sms_hour_cap));
  fact('SMS 24시간', 'last day', text.ofCap(r.sms_last_day, r.sms_day_cap));
  fact('감사 기록', 'audit', r.audit_event_id);
  const parts = [facts];
  // The manual's checklist ("인증번호가 안와요"), answered from the record: what it shows, what to tell the driver.
  if (r.checklist.length > 0) {
    const list = el('ol', null, { class: 'checklist', 'aria-label': '확인 사항 / checklist' });
    for (const c of r.checklist) {
      const item = el('li', null, { class: `check ${c.state}`, 'data-check': c.check });
      item.append(el('strong', `${c.finding_ko}: `), el('span', c.next_step_ko));
      item.append(el('br'), el('small', `${c.finding_en}: ${c.next_step_en}`, { lang: 'en' }));
      list.append(item);
    }
    parts.push(el('h3', '확인 사항 / checklist'), list);
  }
  if (r.pending.length === 0) {
    parts.push(el('p', '대기 중인 인증 없음 / no pending verification', { class: 'notice' }));
  }
  for (const v of r.pending) {
    const caption = v.approved_at
      ? `인증 완료 / approved: ${text.purpose(v.purpose)} — ${text.kst(text.millis(v.approved_at))}`
      : `대기 중 / pending: ${text.purpose(v.purpose)} — 만료 / expires ${text.kst(text.millis(v.expires_at))}`;
    const rows = v.sends.map((s) => [
      text.kst(text.millis(s.sent_at)),
      text.channel(s),
      text.delivery(s),
      s.live ? '유효 / live' : s.delivery === DeliveryStatus.FAILED ? '무효 (발송 실패) / void (send failed)' : '만료 / expired',
      s.provider_message_id || '-',
    ]);
    const t = table(caption, ['보낸 시각 / sent', '경로 / channel', '전달 / delivery', '코드 / code', '발송업체 메시지 ID / provider message id'], rows);
    // Each send's channel attempts, in the order tried, on a row of their own under it.
    const sendRows = [...t.tBodies[0].rows];
    v.sends.forEach((s, i) => {
      if (s.attempts.length > 0) sendRows[i].after(attemptsRow(s.attempts, sendRows[i].cells.length));
    });
    parts.push(t);
  }
  if (r.notices.length > 0) {
    const rows = r.notices.map((n) => [text.kst(text.millis(n.sent_at)), n.outcome, n.gateway || '-']);
    parts.push(table('조회 안내 문자 / lookup notices', ['보낸 시각 / sent', '결과 / outcome', '경로 / gateway'], rows));
  }
  out.replaceChildren(...parts);
  out.hidden = false;
  out.focus();
}

// A send's delivery attempts as a small table spanning the send's row.
function attemptsRow(attempts, span) {
  const tr = el('tr', null, { class: 'attempts' });
  const cell = el('td', null, { colspan: String(span) });
  const t = el('table', null, { class: 'attempts' });
  t.append(el('caption', '전송 시도 / delivery attempts'));
  const thead = el('thead');
  thead.append(
    row(['#', '경로 / channel', '발송 경로 / route', '결과 / outcome', '시각 / time', '수신 결과 / receipt'], true),
  );
  const tbody = el('tbody');
  attempts.forEach((a, i) => {
    const r = row([
      String(i + 1),
      text.attemptChannel(a),
      a.route || a.gateway || '-',
      text.outcome(a),
      text.kst(text.millis(a.attempted_at)),
    ]);
    const [receipt, tone] = text.receipt(a);
    r.append(el('td', receipt, tone ? { class: `receipt ${tone}` } : { class: 'receipt' }));
    tbody.append(r);
  });
  t.append(thead, tbody);
  cell.append(t);
  tr.append(cell);
  return tr;
}

// --- unlock -----------------------------------------------------------------------------------------------------

$('unlock-form').addEventListener('submit', (event) => {
  event.preventDefault();
  $('unlock-result').hidden = true;
  $('unlock-error').hidden = true;
  $('unlock-confirm-phone').textContent = $('unlock-phone').value;
  $('unlock-confirm-ticket').textContent = $('unlock-ticket').value.trim();
  $('unlock-confirm').showModal();
  $('unlock-cancel').focus();
});

$('unlock-cancel').addEventListener('click', () => {
  $('unlock-confirm').close();
  $('unlock-phone').focus();
});

$('unlock-yes').addEventListener('click', async () => {
  $('unlock-confirm').close();
  await busy($('unlock-form'), async () => {
    const r = await rpc(
      'UnlockPhone',
      {
        phone_number: $('unlock-phone').value,
        ticket_id: $('unlock-ticket').value.trim(),
        reason: $('unlock-reason').value.trim(),
      },
      $('unlock-error'),
    );
    if (!r) return;
    const out = $('unlock-result');
    out.replaceChildren(
      el('p', `잠금 해제됨 / unlocked: ${text.local(r.masked_phone_number)}`, { class: 'good' }),
      el('p', `잠겨 있었음 / was locked: ${r.was_locked ? '예 / yes' : '아니오 / no'}`),
      el('p', `지운 실패 횟수 / failures cleared: ${r.failed_attempts_cleared}`),
      el('p', `감사 기록 / audit: ${r.audit_event_id}`),
    );
    out.hidden = false;
    out.focus();
  });
});

// --- audit ------------------------------------------------------------------------------------------------------

for (const [value, [ko, en]] of Object.entries(text.actionNames)) {
  $('audit-action').append(el('option', `${ko} / ${en}`, { value }));
}

let audit = { filter: null, pages: [], tokens: [''], filtered: false };

function timestamp(input) {
  if (!input.value) return null;
  const ms = new Date(input.value).getTime();
  return Number.isNaN(ms) ? null : { seconds: Math.floor(ms / 1000), nanos: 0 };
}

$('audit-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const filter = {
    since: timestamp($('audit-since')),
    until: timestamp($('audit-until')),
    actor: $('audit-actor').value.trim(),
    phone_number: $('audit-phone').value.trim(),
    action: Number($('audit-action').value),
    page_size: Number($('audit-size').value),
  };
  const filtered = Boolean(filter.since || filter.until || filter.actor || filter.phone_number || filter.action);
  audit = { filter, pages: [], tokens: [''], filtered };
  busy(event.currentTarget, () => loadAuditPage(0));
});

$('audit-older').addEventListener('click', () => loadAuditPage(audit.pages.length));
$('audit-newer').addEventListener('click', () => {
  audit.pages.splice(audit.pages.length - 2);
  loadAuditPage(audit.pages.length);
});

async function loadAuditPage(index) {
  const r = await rpc('ListAuditEvents', { ...audit.filter, page_token: audit.tokens[index] }, $('audit-error'));
  if (!r) return;
  audit.pages.length = index;
  audit.pages.push(r.events);
  audit.tokens[index + 1] = r.next_page_token;
  renderAudit(r.events, index);
  $('audit-older').hidden = !r.next_page_token;
  $('audit-newer').hidden = index === 0;
}

// What the browser can check without the audit key: each event names the hash of the one before it, and the
// sequence has no gap. The seals themselves (HMAC under the key) are checked by the server (VerifyAuditChain).
function chainState(events, index) {
  if (audit.filtered) {
    return ['filtered', '필터가 적용되어 연결은 확인하지 않았습니다 / filtered: links not checked (search without filters)'];
  }
  const previous = index > 0 ? audit.pages[index - 1] : [];
  const all = [...previous.slice(-1), ...events];
  for (let i = 0; i + 1 < all.length; i++) {
    if (all[i].prev_hash !== all[i + 1].hash || all[i].sequence !== all[i + 1].sequence + 1) {
      return ['broken', `연결 끊김: #${all[i].sequence}의 이전 해시가 #${all[i + 1].sequence}와 다릅니다 / broken link at #${all[i].sequence}`];
    }
  }
  const last = events[events.length - 1];
  if (last && last.sequence === 1 && last.prev_hash !== GENESIS) {
    return ['broken', '연결 끊김: 첫 기록의 이전 해시가 0이 아닙니다 / broken: the first event does not start the chain'];
  }
  if (!events.length) return ['ok', '기록 없음 / no events'];
  return [
    'ok',
    `연결 확인됨: #${last.sequence}–#${events[0].sequence} 이전 해시 일치 / links intact for #${last.sequence}–#${events[0].sequence} (봉인은 체인 전체 검증으로 / seals: verify the whole chain)`,
  ];
}

function renderAudit(events, index) {
  const tbody = $('audit-table').querySelector('tbody');
  tbody.replaceChildren();
  for (const e of events) {
    const contact =
      e.contact === ContactChannel.INBOUND_CALL
        ? '인바운드(기사님 발신) / inbound'
        : e.contact === ContactChannel.OUTBOUND_CALLBACK
          ? '콜백(상담사 발신) / callback'
          : '';
    const matched = e.contact ? (e.contact_matched ? ' ✓ 일치 / matched' : ' ✗ 불일치 / NOT matched') : '';
    const evidence =
      e.evidence === 'call'
        ? ` · 통화 근거 / call ${e.call_id}`
        : e.evidence === 'typed'
          ? ' · 직접 입력 / TYPED'
          : '';
    const detail = e.action === AuditAction.UNLOCK_PHONE && e.reason ? `${e.detail} — 사유 / reason: ${e.reason}` : e.detail;
    const outcome = e.outcome === AuditOutcome.GRANTED ? '허용 / granted' : e.outcome === AuditOutcome.DENIED ? '거부 / denied' : '-';
    const tr = row([
      e.sequence,
      text.kst(text.millis(e.time)),
      [`${e.actor_name} (${e.actor_role})`, ...e.from].join(' · '),
      text.action(e.action),
      text.local(e.masked_phone_number),
      e.ticket_id,
      contact + matched + evidence,
      outcome,
      detail,
    ]);
    tr.className = e.outcome === AuditOutcome.DENIED ? 'denied' : '';
    tbody.append(tr);
  }
  $('audit-table').hidden = false;
  const [state, message] = chainState(events, index);
  $('chain').textContent = message;
  $('chain').className = `chain ${state}`;
  $('chain').hidden = false;
}

$('audit-verify')?.addEventListener('click', async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const head = $('audit-head').value.trim();
    const r = await rpc('VerifyAuditChain', { expect_heads: head }, $('audit-error'));
    if (!r) return;
    const out = $('chain-verify');
    if (r.intact) {
      const unkeyed = r.unkeyed_events ? ` (키 없는 초기 기록 / unkeyed leading events: ${r.unkeyed_events})` : '';
      const kept = head
        ? ` 보관한 헤드 ${head} 확인됨 / reaches the kept head.`
        : ' 보관한 헤드 없이 검증: 잘린 꼬리는 알 수 없습니다 / no kept head given: a cut-off tail would go unseen.';
      out.textContent =
        `체인 전체 온전함: ${r.events_checked}건, 마지막 ${r.events_checked}:${r.head_hash} / ` +
        `whole chain intact: ${r.events_checked} events, head ${r.events_checked}:${r.head_hash}${unkeyed}.${kept}`;
      out.className = 'chain ok';
    } else {
      out.textContent =
        `체인 손상: #${r.broken_at_sequence} — ${r.problem} / chain broken at #${r.broken_at_sequence}: ${r.problem}`;
      out.className = 'chain broken';
    }
    out.hidden = false;
  } finally {
    button.disabled = false;
  }
});

start();
