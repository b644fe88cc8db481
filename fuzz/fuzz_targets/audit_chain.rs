//! The audit-chain verification (`ChainVerifier`), structured: arbitrary events are sealed into a chain (an
//! unkeyed v1 prefix, then keyed events: v2, or v3 for a lookup's evidence, a call or typed), which must verify;
//! then one tampering is applied, as someone who owns the table but not the key could, and it must be found at the
//! event the design says. Apart from that, arbitrary forged event sequences and head pins must never make the
//! verifier panic, and whatever it accepts must be correctly sealed and numbered.

#![no_main]

use arbitrary::Arbitrary;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use otpd::domain::audit::{
    AuditAction, AuditEvent, AuditKey, AuditOutcome, ChainError, ChainLink, ChainVerifier, Expectations, GENESIS_HASH,
    HeadPin, NewAuditEvent,
};
use otpd::domain::{CallDirection, ContactChannel, Evidence};

/// Chains longer than this find nothing shorter ones do not, only slower.
const MAX_EVENTS: usize = 12;

#[derive(Debug, Arbitrary)]
struct Input {
    events: Vec<Event>,
    /// The first `unkeyed % (n + 1)` events carry the v1 link, as written before keyed chains.
    unkeyed: u8,
    tamper: Tamper,
    forged: Vec<Forged>,
    forged_unkeyed_through: i64,
    pins: Vec<String>,
}

#[derive(Debug, Clone, Arbitrary)]
struct Event {
    id: u128,
    at_millis: i64,
    actor_name: String,
    actor_role: String,
    action: u8,
    phone_masked: Option<String>,
    phone_key: Option<String>,
    ticket_id: Option<String>,
    reason: Option<String>,
    contact: Option<bool>,
    contact_matched: Option<bool>,
    /// What a lookup rested on (sealed with link v3); left out of the unkeyed prefix, which predates it.
    evidence: Option<EvidenceIn>,
    denied: bool,
    detail: String,
}

/// A lookup's evidence, as `LookupCode` records it.
#[derive(Debug, Clone, Arbitrary)]
enum EvidenceIn {
    Call { call_id: String, inbound: bool, number_masked: String },
    Typed,
}

impl EvidenceIn {
    fn evidence(&self) -> Evidence {
        match self.clone() {
            EvidenceIn::Call { call_id, inbound, number_masked } => Evidence::Call {
                call_id,
                direction: if inbound { CallDirection::Inbound } else { CallDirection::Outbound },
                number_masked,
            },
            EvidenceIn::Typed => Evidence::Typed,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Tamper {
    None,
    /// Change a field and leave the seal.
    Edit {
        index: u8,
        edit: Edit,
    },
    /// Change a field and re-seal that one event with the key (an insider with the key, but not the head).
    EditResealKeyed {
        index: u8,
        edit: Edit,
    },
    /// Change a field and re-seal it and every later event with the v1 link (anyone who owns the table).
    EditResealUnkeyed {
        index: u8,
        edit: Edit,
    },
    Remove {
        index: u8,
    },
    Swap {
        a: u8,
        b: u8,
    },
    Duplicate {
        index: u8,
    },
    Truncate {
        keep: u8,
    },
    WrongKey,
    FlipLink {
        index: u8,
    },
    Renumber {
        index: u8,
        seq: i64,
    },
    Rehash {
        index: u8,
        hash: String,
    },
    Relink {
        index: u8,
        prev_hash: String,
    },
}

#[derive(Debug, Clone, Arbitrary)]
enum Edit {
    Id(u128),
    At(i64),
    ActorName(String),
    ActorRole(String),
    Action(u8),
    PhoneMasked(Option<String>),
    PhoneKey(Option<String>),
    Ticket(Option<String>),
    Reason(Option<String>),
    Contact(Option<bool>),
    Matched(Option<bool>),
    /// Add, change or remove the evidence.
    Evidence(Option<EvidenceIn>),
    Outcome,
    Detail(String),
}

#[derive(Debug, Arbitrary)]
struct Forged {
    seq: i64,
    prev_hash: String,
    hash: String,
    /// The link it claims: v1, v2 or v3 (`% 3`).
    link: u8,
    event: Event,
}

fn time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::UNIX_EPOCH)
}

fn contact(c: Option<bool>) -> Option<ContactChannel> {
    c.map(|inbound| if inbound { ContactChannel::InboundCall } else { ContactChannel::OutboundCallback })
}

impl Event {
    fn new_event(&self) -> NewAuditEvent {
        NewAuditEvent {
            id: uuid::Uuid::from_u128(self.id),
            // The clock, and so every stored event, is at millisecond precision: so is the seal.
            at: time(self.at_millis),
            actor_name: self.actor_name.clone(),
            actor_role: self.actor_role.clone(),
            action: AuditAction::ALL[usize::from(self.action) % AuditAction::ALL.len()],
            phone_masked: self.phone_masked.clone(),
            phone_key: self.phone_key.clone(),
            ticket_id: self.ticket_id.clone(),
            reason: self.reason.clone(),
            contact_channel: contact(self.contact),
            contact_matched: self.contact_matched,
            evidence: self.evidence.as_ref().map(EvidenceIn::evidence),
            access: None,
            outcome: if self.denied { AuditOutcome::Denied } else { AuditOutcome::Granted },
            detail: self.detail.clone(),
        }
    }
}

fn apply(edit: &Edit, e: &mut NewAuditEvent) {
    match edit.clone() {
        Edit::Id(id) => e.id = uuid::Uuid::from_u128(id),
        Edit::At(millis) => e.at = time(millis),
        Edit::ActorName(s) => e.actor_name = s,
        Edit::ActorRole(s) => e.actor_role = s,
        Edit::Action(a) => e.action = AuditAction::ALL[usize::from(a) % AuditAction::ALL.len()],
        Edit::PhoneMasked(s) => e.phone_masked = s,
        Edit::PhoneKey(s) => e.phone_key = s,
        Edit::Ticket(s) => e.ticket_id = s,
        Edit::Reason(s) => e.reason = s,
        Edit::Contact(c) => e.contact_channel = contact(c),
        Edit::Matched(m) => e.contact_matched = m,
        Edit::Evidence(evidence) => e.evidence = evidence.as_ref().map(EvidenceIn::evidence),
        Edit::Outcome => {
            e.outcome = match e.outcome {
                AuditOutcome::Granted => AuditOutcome::Denied,
                AuditOutcome::Denied => AuditOutcome::Granted,
            }
        }
        Edit::Detail(s) => e.detail = s,
    }
}

fn key() -> AuditKey {
    AuditKey::new(b"the audit key of the fuzz target".to_vec()).unwrap_or_else(|e| panic!("a long enough key: {e}"))
}

fn other_key() -> AuditKey {
    AuditKey::new(b"someone else's key, not the one".to_vec()).unwrap_or_else(|e| panic!("a long enough key: {e}"))
}

fn seq(index: usize) -> i64 {
    i64::try_from(index).unwrap_or_else(|_| unreachable!("at most MAX_EVENTS")) + 1
}

/// Seals `events[from..]` after `events[from - 1]`: with the v1 link up to index `unkeyed`, keyed after.
fn reseal(events: &mut [AuditEvent], from: usize, unkeyed: usize, key: &AuditKey) {
    for i in from..events.len() {
        let prev = if i == 0 { GENESIS_HASH.to_owned() } else { events[i - 1].hash.clone() };
        let e = events[i].event.clone();
        events[i] = if i < unkeyed { e.seal_unkeyed(seq(i), &prev) } else { e.seal(seq(i), &prev, key) };
    }
}

fn verify(events: &[AuditEvent], key: AuditKey, expect: Expectations) -> Result<i64, ChainError> {
    let mut verifier = ChainVerifier::new(key, expect);
    for event in events {
        verifier.check(event)?;
    }
    verifier.finish()?;
    Ok(verifier.checked())
}

fuzz_target!(|input: Input| {
    chain(&input);
    forged(&input);
    pins(&input.pins);
});

/// A sealed chain verifies; a tampered one fails at the event the design says.
fn chain(input: &Input) {
    let mut originals: Vec<NewAuditEvent> = input.events.iter().take(MAX_EVENTS).map(Event::new_event).collect();
    let n = originals.len();
    if n == 0 {
        return;
    }
    let unkeyed = usize::from(input.unkeyed) % (n + 1);
    // Evidence came with keyed seals (v3): the v1 prefix was written before it.
    for e in &mut originals[..unkeyed] {
        e.evidence = None;
    }
    let mut events: Vec<AuditEvent> = originals
        .into_iter()
        .map(|e| e.seal_unkeyed(0, GENESIS_HASH)) // placeholders, sealed in order just below
        .collect();
    reseal(&mut events, 0, unkeyed, &key());
    let last = &events[n - 1];
    let head = HeadPin { seq: last.seq, hash: last.hash.clone() };
    let expect = Expectations { heads: vec![head.clone()], unkeyed_through: seq(unkeyed) - 1 };

    // Intact: every event checks, the v1 prefix is counted, the head is the last seal.
    let mut verifier = ChainVerifier::new(key(), expect.clone());
    for e in &events {
        verifier.check(e).unwrap_or_else(|err| panic!("an intact chain verifies: {err}"));
    }
    assert_eq!(verifier.finish(), Ok(()));
    assert_eq!(verifier.checked(), seq(n - 1));
    assert_eq!(verifier.unkeyed(), seq(unkeyed) - 1);
    assert_eq!(verifier.head(), head.hash);

    // Accepting a shorter unkeyed prefix than was written refuses the first v1 event past it.
    if unkeyed > 0 {
        let stricter = Expectations { heads: vec![], unkeyed_through: seq(unkeyed) - 2 };
        assert_eq!(verify(&events, key(), stricter).map_err(|e| e.seq), Err(seq(unkeyed - 1)));
    }

    let at = |i: u8| usize::from(i) % n;
    let original = events.clone();
    let mut verify_key = key();
    // The sequence number of the first event found bad, if the tampering changed anything.
    let expected: Option<i64> = match &input.tamper {
        Tamper::None => None,
        Tamper::Edit { index, edit } => {
            let i = at(*index);
            apply(edit, &mut events[i].event);
            Some(seq(i))
        }
        Tamper::EditResealKeyed { index, edit } => {
            let i = at(*index);
            apply(edit, &mut events[i].event);
            let prev = if i == 0 { GENESIS_HASH.to_owned() } else { events[i - 1].hash.clone() };
            events[i] = events[i].event.clone().seal(seq(i), &prev, &key());
            // The next event no longer links to it; the last one is no longer the pinned head.
            Some(if i + 1 < n { seq(i + 1) } else { seq(i) })
        }
        Tamper::EditResealUnkeyed { index, edit } => {
            let i = at(*index);
            apply(edit, &mut events[i].event);
            reseal(&mut events, i, n, &key());
            // Passes only inside the accepted v1 prefix, and only without evidence (which a v1 seal cannot cover):
            // the first event past the prefix or carrying evidence is caught; a chain that is all prefix, by its
            // head.
            let caught = (i..n).find(|&j| j >= unkeyed || events[j].event.evidence.is_some());
            Some(caught.map_or(seq(n - 1), seq))
        }
        Tamper::Remove { index } => {
            let i = at(*index);
            events.remove(i);
            Some(seq(i).min(seq(n - 1)))
        }
        Tamper::Swap { a, b } => {
            let (a, b) = (at(*a), at(*b));
            events.swap(a, b);
            Some(seq(a.min(b)))
        }
        Tamper::Duplicate { index } => {
            let i = at(*index);
            events.insert(i + 1, events[i].clone());
            Some(seq(i + 1))
        }
        Tamper::Truncate { keep } => {
            events.truncate(usize::from(*keep) % n);
            Some(seq(n - 1))
        }
        Tamper::WrongKey => {
            verify_key = other_key();
            // v1 links need no key; the first keyed event does not verify under another one.
            (unkeyed < n).then(|| seq(unkeyed))
        }
        Tamper::FlipLink { index } => {
            let i = at(*index);
            events[i].link = match events[i].link {
                ChainLink::Sha256 => ChainLink::HmacSha256,
                ChainLink::HmacSha256 => ChainLink::Sha256,
                ChainLink::HmacSha256Evidence => ChainLink::HmacSha256,
                ChainLink::HmacSha256Access => ChainLink::HmacSha256Evidence,
            };
            Some(seq(i))
        }
        Tamper::Renumber { index, seq: s } => {
            let i = at(*index);
            events[i].seq = *s;
            Some(seq(i))
        }
        Tamper::Rehash { index, hash } => {
            let i = at(*index);
            events[i].hash.clone_from(hash);
            Some(seq(i))
        }
        Tamper::Relink { index, prev_hash } => {
            let i = at(*index);
            events[i].prev_hash.clone_from(prev_hash);
            Some(seq(i))
        }
    };
    let result = verify(&events, verify_key, expect);
    let unchanged = events == original && !matches!(input.tamper, Tamper::WrongKey);
    match expected {
        Some(_) if unchanged => assert_eq!(result, Ok(seq(n - 1)), "a no-op tampering changes nothing"),
        Some(want) => match result {
            Ok(_) => panic!("tampering ({:?}) went unnoticed", input.tamper),
            Err(err) => assert_eq!(err.seq, want, "{:?} is found at event {want}, not: {err}", input.tamper),
        },
        None => assert_eq!(result, Ok(seq(n - 1))),
    }
}

/// Arbitrary events never make the verifier panic; what it accepts is numbered from 1 and correctly sealed.
fn forged(input: &Input) {
    let heads: Vec<HeadPin> = input.pins.iter().filter_map(|p| p.parse().ok()).collect();
    let expect = Expectations { heads, unkeyed_through: input.forged_unkeyed_through };
    let mut verifier = ChainVerifier::new(key(), expect);
    let mut prev = GENESIS_HASH.to_owned();
    for (i, f) in input.forged.iter().take(MAX_EVENTS).enumerate() {
        let event = AuditEvent {
            seq: f.seq,
            event: f.event.new_event(),
            prev_hash: f.prev_hash.clone(),
            hash: f.hash.clone(),
            link: match f.link % 3 {
                0 => ChainLink::Sha256,
                1 => ChainLink::HmacSha256,
                _ => ChainLink::HmacSha256Evidence,
            },
        };
        if verifier.check(&event).is_err() {
            break;
        }
        assert_eq!(event.seq, seq(i));
        assert_eq!(event.prev_hash, prev);
        let sealed = match event.link {
            ChainLink::HmacSha256 | ChainLink::HmacSha256Evidence | ChainLink::HmacSha256Access => {
                event.event.clone().seal(event.seq, &prev, &key())
            }
            ChainLink::Sha256 => event.event.clone().seal_unkeyed(event.seq, &prev),
        };
        assert_eq!(event.hash, sealed.hash, "only a correctly sealed event is accepted");
        prev.clone_from(&event.hash);
        assert_eq!(verifier.head(), prev);
    }
    let _ = verifier.finish();
}

/// A head pin that parses is a positive sequence number and 64 lower-case hex digits, and prints back to itself.
fn pins(pins: &[String]) {
    for text in pins {
        if let Ok(pin) = text.parse::<HeadPin>() {
            assert!(pin.seq > 0);
            assert!(pin.hash.len() == 64 && pin.hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(format!("{}:{}", pin.seq, pin.hash).parse::<HeadPin>(), Ok(pin));
        }
    }
}
