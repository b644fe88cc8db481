//! The label values of every metric, as enums: the type says which values a label can take, and so bounds each
//! metric's cardinality. None of them can carry a phone number, a code, a token, a ticket or a supervisor's name.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::{Channel, Purpose};

/// An enum whose values are label values, with every value listed in `ALL`.
macro_rules! label_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value the label can take.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

/// Domain enums that are label values as they are stored.
macro_rules! domain_label {
    ($($name:ty),+) => {
        $(impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        })+
    };
}

domain_label!(Purpose, Channel, AuditAction, AuditOutcome);

label_enum! {
    /// `rpc.system.name`: always gRPC here.
    pub enum RpcSystem {
        /// gRPC.
        Grpc = "grpc",
    }
}

label_enum! {
    /// `rpc.method`: every method either listener serves, by its full name; anything else is `other`, so that
    /// no caller can create label values.
    pub enum RpcMethod {
        /// otp.v1.OtpService/SendCode.
        SendCode = "otp.v1.OtpService/SendCode",
        /// otp.v1.OtpService/VerifyCode.
        VerifyCode = "otp.v1.OtpService/VerifyCode",
        /// otp.v1.SupervisorService/LookupCode.
        LookupCode = "otp.v1.SupervisorService/LookupCode",
        /// otp.v1.SupervisorService/GetPhoneStatus.
        GetPhoneStatus = "otp.v1.SupervisorService/GetPhoneStatus",
        /// otp.v1.SupervisorService/UnlockPhone.
        UnlockPhone = "otp.v1.SupervisorService/UnlockPhone",
        /// otp.v1.SupervisorService/ListAuditEvents.
        ListAuditEvents = "otp.v1.SupervisorService/ListAuditEvents",
        /// otp.v1.SupervisorService/VerifyAuditChain.
        VerifyAuditChain = "otp.v1.SupervisorService/VerifyAuditChain",
        /// otp.v1.SupervisorService/WhoAmI.
        WhoAmI = "otp.v1.SupervisorService/WhoAmI",
        /// otp.v1.SupervisorService/ListMyCalls.
        ListMyCalls = "otp.v1.SupervisorService/ListMyCalls",
        /// otp.v1.SupervisorService/LiftSignInLock.
        LiftSignInLock = "otp.v1.SupervisorService/LiftSignInLock",
        /// otp.v1.SupervisorService/Diagnose.
        Diagnose = "otp.v1.SupervisorService/Diagnose",
        /// otp.v1.SupervisorService/SetPrefixGuard.
        SetPrefixGuard = "otp.v1.SupervisorService/SetPrefixGuard",
        /// otp.v1.SupervisorService/GetPrefixGuard.
        GetPrefixGuard = "otp.v1.SupervisorService/GetPrefixGuard",
        /// otp.v1.SignInService/ListSignInFactors.
        ListSignInFactors = "otp.v1.SignInService/ListSignInFactors",
        /// otp.v1.SignInService/StartSignIn.
        StartSignIn = "otp.v1.SignInService/StartSignIn",
        /// otp.v1.SignInService/FinishSignIn.
        FinishSignIn = "otp.v1.SignInService/FinishSignIn",
        /// otp.v1.SignInService/SignOut.
        SignOut = "otp.v1.SignInService/SignOut",
        /// otp.v1.SignInService/StartPasskeyEnrolment.
        StartPasskeyEnrolment = "otp.v1.SignInService/StartPasskeyEnrolment",
        /// otp.v1.SignInService/FinishPasskeyEnrolment.
        FinishPasskeyEnrolment = "otp.v1.SignInService/FinishPasskeyEnrolment",
        /// grpc.health.v1.Health/Check.
        HealthCheck = "grpc.health.v1.Health/Check",
        /// grpc.health.v1.Health/Watch.
        HealthWatch = "grpc.health.v1.Health/Watch",
        /// Server reflection, v1.
        ReflectionV1 = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        /// Server reflection, v1alpha.
        ReflectionV1alpha = "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        /// Any other path.
        Other = "other",
    }
}

impl RpcMethod {
    /// The method a request path (`/package.Service/Method`) names.
    pub fn from_path(path: &str) -> Self {
        let name = path.strip_prefix('/').unwrap_or(path);
        Self::ALL.iter().copied().find(|m| *m != Self::Other && m.as_str() == name).unwrap_or(Self::Other)
    }
}

label_enum! {
    /// `rpc.response.status_code`: the gRPC status code's name.
    pub enum GrpcStatus {
        /// 0.
        Ok = "OK",
        /// 1.
        Cancelled = "CANCELLED",
        /// 2.
        Unknown = "UNKNOWN",
        /// 3.
        InvalidArgument = "INVALID_ARGUMENT",
        /// 4.
        DeadlineExceeded = "DEADLINE_EXCEEDED",
        /// 5.
        NotFound = "NOT_FOUND",
        /// 6.
        AlreadyExists = "ALREADY_EXISTS",
        /// 7.
        PermissionDenied = "PERMISSION_DENIED",
        /// 8.
        ResourceExhausted = "RESOURCE_EXHAUSTED",
        /// 9.
        FailedPrecondition = "FAILED_PRECONDITION",
        /// 10.
        Aborted = "ABORTED",
        /// 11.
        OutOfRange = "OUT_OF_RANGE",
        /// 12.
        Unimplemented = "UNIMPLEMENTED",
        /// 13.
        Internal = "INTERNAL",
        /// 14.
        Unavailable = "UNAVAILABLE",
        /// 15.
        DataLoss = "DATA_LOSS",
        /// 16.
        Unauthenticated = "UNAUTHENTICATED",
    }
}

impl GrpcStatus {
    /// The status with this number (a `grpc-status` value); an unknown number is `UNKNOWN`, as gRPC reads it.
    pub fn from_number(n: i32) -> Self {
        usize::try_from(n).ok().and_then(|i| Self::ALL.get(i)).copied().unwrap_or(Self::Unknown)
    }
}

label_enum! {
    /// What became of a send (SendCode, or a code issued by a supervisor lookup).
    pub enum SendResult {
        /// The provider accepted the SMS (channel `sms`), or the code was given to the team lead (`supervisor`).
        Delivered = "delivered",
        /// Handed to the provider, not confirmed before the caller's deadline: it may arrive; it counts.
        Unconfirmed = "unconfirmed",
        /// The provider refused or failed it: the code is revoked; it counts toward the caps.
        Failed = "failed",
        /// Never handed to the provider (breaker open, deadline ran out first): nothing counted.
        NotSent = "not_sent",
        /// A staging test number: nothing sent.
        TestNumber = "test_number",
        /// The number is locked.
        Locked = "locked",
        /// Within the resend cooldown.
        Cooldown = "cooldown",
        /// Over the number's hourly or daily cap.
        SendLimit = "send_limit",
        /// A front-line limit on the destination (prefix, replica SMS rate).
        RateLimited = "rate_limited",
        /// The SIM's number differs.
        SimMismatch = "sim_mismatch",
        /// The caller's deadline was too short to try.
        DeadlineTooShort = "deadline_too_short",
        /// The hashing queue was full, or the deadline passed in it.
        Overloaded = "overloaded",
        /// The database, hashing or the service failed.
        Error = "error",
    }
}

label_enum! {
    /// What a VerifyCode that reached the service came to.
    pub enum VerifyResult {
        /// The code matched.
        Approved = "approved",
        /// No live code matched (counted toward the lockout).
        WrongCode = "wrong_code",
        /// Every code had expired.
        Expired = "expired",
        /// The number is locked: nothing evaluated.
        Locked = "locked",
        /// Nothing pending for the number and purpose.
        NoPendingVerification = "no_pending_verification",
        /// Already approved.
        AlreadyVerified = "already_verified",
        /// The hashing queue was full, or the deadline passed in it.
        Overloaded = "overloaded",
        /// The database, hashing or the service failed.
        Error = "error",
    }
}

label_enum! {
    /// A SupervisorService method.
    pub enum SupervisorAction {
        /// LookupCode.
        LookupCode = "lookup_code",
        /// GetPhoneStatus.
        GetPhoneStatus = "get_phone_status",
        /// UnlockPhone.
        UnlockPhone = "unlock_phone",
        /// ListAuditEvents.
        ListAuditEvents = "list_audit_events",
        /// VerifyAuditChain.
        VerifyAuditChain = "verify_audit_chain",
        /// SetPrefixGuard.
        SetPrefixGuard = "set_prefix_guard",
        /// A path that is none of them.
        Other = "other",
    }
}

impl From<Option<AuditAction>> for SupervisorAction {
    fn from(action: Option<AuditAction>) -> Self {
        match action {
            Some(AuditAction::LookupCode) => Self::LookupCode,
            Some(AuditAction::GetPhoneStatus) => Self::GetPhoneStatus,
            Some(AuditAction::UnlockPhone) => Self::UnlockPhone,
            Some(AuditAction::ListAuditEvents) => Self::ListAuditEvents,
            Some(AuditAction::VerifyAuditChain) => Self::VerifyAuditChain,
            Some(AuditAction::PrefixGuardSet) => Self::SetPrefixGuard,
            Some(
                AuditAction::PhoneLocked
                | AuditAction::SupervisorAdded
                | AuditAction::SupervisorDisabled
                | AuditAction::SupervisorAgentSet
                | AuditAction::SignIn
                | AuditAction::SignOut
                | AuditAction::SupervisorContactSet
                | AuditAction::SignInLockLifted
                | AuditAction::PasskeyEnrolled
                | AuditAction::PasskeyEnrolmentCodeIssued,
            )
            | None => Self::Other,
        }
    }
}

label_enum! {
    /// What a supervisor call came to.
    pub enum SupervisorOutcome {
        /// Done.
        Granted = "granted",
        /// A malformed request.
        InvalidArgument = "invalid_argument",
        /// No valid token.
        Unauthenticated = "unauthenticated",
        /// The token's supervisor is disabled.
        SupervisorDisabled = "supervisor_disabled",
        /// The role does not allow the call.
        RoleNotAllowed = "role_not_allowed",
        /// A lookup for another number than the driver's.
        ThirdPartyNumber = "third_party_number",
        /// A lookup naming a call the phone system never reported.
        CallNotFound = "call_not_found",
        /// A lookup naming another agent's call (or by a supervisor without an agent id).
        CallNotYours = "call_not_yours",
        /// A lookup naming a call that ended longer ago than the grace.
        CallEnded = "call_ended",
        /// A lookup without a call where one is required (or with one where calls are off).
        CallRequired = "call_required",
        /// A lookup with no recent send.
        NoPendingVerification = "no_pending_verification",
        /// A lookup for a locked number.
        PhoneLocked = "phone_locked",
        /// The supervisor's lookup quota is used up.
        LookupQuota = "lookup_quota",
        /// The audit log could not be written: nothing was done.
        AuditUnavailable = "audit_unavailable",
        /// The hashing queue was full.
        Overloaded = "overloaded",
        /// The database is unreachable.
        Unavailable = "unavailable",
        /// Anything else that failed.
        Error = "error",
    }
}

label_enum! {
    /// What one HTTP request to the SMS provider came to.
    pub enum GatewayAttempt {
        /// 2xx: the provider took the message.
        Accepted = "accepted",
        /// 4xx (not 429): the provider refused it.
        Rejected = "rejected",
        /// Timeout, connection error, 5xx or 429.
        Failed = "failed",
        /// Cut short by the caller's deadline: says nothing about the provider.
        CutShort = "cut_short",
    }
}

label_enum! {
    /// Why a delivery (all of one SMS's attempts) failed.
    pub enum GatewayFailure {
        /// The provider failed (timeouts, connection errors, 5xx after the retries).
        Unavailable = "unavailable",
        /// The provider refused the message.
        Rejected = "rejected",
        /// The circuit breaker was open: the provider was not called.
        CircuitOpen = "circuit_open",
        /// The deadline passed before the message reached the provider.
        NotSent = "not_sent",
        /// Handed over, not confirmed before the caller's deadline.
        Unconfirmed = "unconfirmed",
    }
}

label_enum! {
    /// The circuit breaker's state; the gauge holds the value's index (0 closed, 1 open, 2 half-open).
    pub enum BreakerState {
        /// Calls go through.
        Closed = "closed",
        /// Calls fail fast.
        Open = "open",
        /// One probe is out.
        HalfOpen = "half_open",
    }
}

label_enum! {
    /// A delivery route of `--delivery`: a channel on a provider (every one otpd can build).
    pub enum Route {
        /// KakaoTalk AlimTalk through NHN Cloud Bizmessage.
        AlimTalkNhn = "alimtalk@nhn",
        /// SMS through NHN Cloud.
        SmsNhn = "sms@nhn",
        /// SMS through Naver Cloud SENS.
        SmsSens = "sms@sens",
        /// SMS through Solapi.
        SmsSolapi = "sms@solapi",
        /// SMS through the generic `http:` protocol.
        SmsHttp = "sms@http",
        /// SMS into a file (development).
        SmsFile = "sms@file",
        /// SMS onto standard output (development).
        SmsLog = "sms@log",
        /// Any other gateway.
        Other = "other",
    }
}

impl Route {
    /// The value of a route label (`sms@nhn`).
    pub fn of(label: &str) -> Self {
        Self::ALL.iter().copied().find(|r| r.as_str() == label).unwrap_or(Self::Other)
    }
}

label_enum! {
    /// What one route's attempt came to.
    pub enum RouteOutcome {
        /// The provider took it.
        Accepted = "accepted",
        /// The provider refused it.
        Refused = "refused",
        /// The provider failed (after the retries).
        Failed = "failed",
        /// Handed over; the caller's deadline ended the wait.
        Unconfirmed = "unconfirmed",
        /// Not handed over: its breaker was open, or the deadline passed first.
        NotTried = "not_tried",
    }
}

label_enum! {
    /// Why a route was tried after the others for one number (issue 22, section 4).
    pub enum RouteDemotion {
        /// Its last verdict for the number was a failed receipt or a refusal.
        FailedForNumber = "failed_for_number",
        /// It accepted the number's last code and no receipt came within `--receipt-wait`.
        NoReceipt = "no_receipt",
    }
}

label_enum! {
    /// A front-line (per-replica) limit.
    pub enum FrontLimit {
        /// SendCode calls per client IP.
        SendClientIp = "send_client_ip",
        /// VerifyCode calls per client IP.
        VerifyClientIp = "verify_client_ip",
        /// SMS per destination prefix.
        DestinationPrefix = "destination_prefix",
        /// SMS for the whole replica.
        GlobalSms = "global_sms",
    }
}

label_enum! {
    /// What an argon2 computation was for.
    pub enum HashOperation {
        /// Hashing a new code.
        Hash = "hash",
        /// Checking a guess.
        Verify = "verify",
    }
}

label_enum! {
    /// Why work was refused by the hashing queue.
    pub enum HashRefusal {
        /// The queue was full.
        Overloaded = "overloaded",
        /// The caller's deadline passed while it waited.
        DeadlinePassedInQueue = "deadline_passed_in_queue",
    }
}

label_enum! {
    /// One of otpd's listeners.
    pub enum ListenerName {
        /// The public gRPC listener (`--listen`).
        Public = "public",
        /// The admin listener (`--admin-listen`).
        Admin = "admin",
        /// The delivery-receipt listener (`--webhook-listen`).
        Webhook = "webhook",
        /// The Prometheus endpoint (`--metrics-listen`).
        Metrics = "metrics",
    }
}

label_enum! {
    /// Why otpd closed a connection itself.
    pub enum ConnectionClose {
        /// The client's address is not in `--admin-allow`: closed at once, before TLS or HTTP.
        AddressNotAllowed = "address_not_allowed",
        /// The listener had `--max-connections` open: closed at once.
        ListenerFull = "listener_full",
        /// The client's address had `--max-connections-per-address` open: closed at once.
        AddressFull = "address_full",
        /// The client's address had `--max-handshakes-per-address` TLS handshakes in progress: closed at once.
        HandshakesFull = "handshakes_full",
        /// No finished TLS handshake within `--tls-handshake-timeout`.
        HandshakeTimeout = "handshake_timeout",
        /// No whole request head within `--header-timeout`.
        HeaderTimeout = "header_timeout",
        /// No new request within `--idle-timeout`.
        IdleTimeout = "idle_timeout",
    }
}

label_enum! {
    /// A store error's kind.
    pub enum DbErrorKind {
        /// No usable database (connection, pool, serialization failure): retryable.
        Unavailable = "unavailable",
        /// A statement failed.
        Query = "query",
        /// Migrations failed.
        Migrate = "migrate",
        /// A row held a value the code does not know.
        Corrupt = "corrupt",
    }
}

label_enum! {
    /// A store operation (a method of the Store, SupervisionStore or SignInStore trait).
    pub enum StoreOperation {
        /// Store::migrate.
        Migrate = "migrate",
        /// Store::ping.
        Ping = "ping",
        /// Store::send_history.
        SendHistory = "send_history",
        /// Store::issue_code.
        IssueCode = "issue_code",
        /// Store::record_delivery.
        RecordDelivery = "record_delivery",
        /// Store::withdraw_code.
        WithdrawCode = "withdraw_code",
        /// Store::check_state.
        CheckState = "check_state",
        /// Store::reserve_attempt.
        ReserveAttempt = "reserve_attempt",
        /// Store::approve.
        Approve = "approve",
        /// Store::release_attempt.
        ReleaseAttempt = "release_attempt",
        /// Store::purge.
        Purge = "purge",
        /// Store::record_attempts.
        RecordAttempts = "record_attempts",
        /// Store::record_receipt.
        RecordReceipt = "record_receipt",
        /// Store::record_fallback.
        RecordFallback = "record_fallback",
        /// Store::awaiting_receipts.
        AwaitingReceipts = "awaiting_receipts",
        /// SupervisionStore::add_supervisor.
        AddSupervisor = "add_supervisor",
        /// SupervisionStore::list_supervisors.
        ListSupervisors = "list_supervisors",
        /// SupervisionStore::disable_supervisor.
        DisableSupervisor = "disable_supervisor",
        /// SupervisionStore::token_holder.
        TokenHolder = "token_holder",
        /// SupervisionStore::lookup_target.
        LookupTarget = "lookup_target",
        /// SupervisionStore::issue_supervisor_code.
        IssueSupervisorCode = "issue_supervisor_code",
        /// SupervisionStore::append_audit.
        AppendAudit = "append_audit",
        /// SupervisionStore::phone_status.
        PhoneStatus = "phone_status",
        /// SupervisionStore::unlock_phone.
        UnlockPhone = "unlock_phone",
        /// SupervisionStore::audit_events.
        AuditEvents = "audit_events",
        /// SupervisionStore::audit_chain.
        AuditChain = "audit_chain",
        /// Store::record_notice.
        RecordNotice = "record_notice",
        /// Store::route_history.
        RouteHistory = "route_history",
        /// Store::delivery_outcomes.
        DeliveryOutcomes = "delivery_outcomes",
        /// SupervisionStore::set_agent.
        SetAgent = "set_agent",
        /// SupervisionStore::record_call_event.
        RecordCallEvent = "record_call_event",
        /// SupervisionStore::call.
        Call = "call",
        /// SupervisionStore::agent_calls.
        AgentCalls = "agent_calls",
        /// SignInStore::sign_in_account.
        SignInAccount = "sign_in_account",
        /// SignInStore::set_contact.
        SetContact = "set_contact",
        /// SignInStore::sign_in_lock.
        SignInLock = "sign_in_lock",
        /// SignInStore::record_failure.
        RecordFailure = "record_failure",
        /// SignInStore::clear_failures.
        ClearFailures = "clear_failures",
        /// SignInStore::lift_sign_in_lock.
        LiftSignInLock = "lift_sign_in_lock",
        /// SignInStore::start_challenge.
        StartChallenge = "start_challenge",
        /// SignInStore::challenge.
        Challenge = "challenge",
        /// SignInStore::wrong_answer.
        WrongAnswer = "wrong_answer",
        /// SignInStore::spend_challenge.
        SpendChallenge = "spend_challenge",
        /// SignInStore::open_session.
        OpenSession = "open_session",
        /// SignInStore::use_session.
        UseSession = "use_session",
        /// SignInStore::end_session.
        EndSession = "end_session",
        /// SignInStore::passkeys.
        Passkeys = "passkeys",
        /// SignInStore::add_passkey.
        AddPasskey = "add_passkey",
        /// SignInStore::passkey_used.
        PasskeyUsed = "passkey_used",
        /// KeyStore::claim_key.
        ClaimKey = "claim_key",
        /// KeyStore::key_record.
        KeyRecord = "key_record",
        /// KeyStore::take_over_key.
        TakeOverKey = "take_over_key",
        /// KeyStore::renew_key.
        RenewKey = "renew_key",
        /// KeyStore::key_progress.
        KeyProgress = "key_progress",
        /// KeyStore::finish_key.
        FinishKey = "finish_key",
        /// KeyStore::release_key.
        ReleaseKey = "release_key",
        /// GuardStore::charge_budgets.
        ChargeBudgets = "charge_budgets",
        /// GuardStore::guard_figures.
        GuardFigures = "guard_figures",
        /// GuardStore::count_guard.
        CountGuard = "count_guard",
        /// GuardStore::set_guard_override.
        SetGuardOverride = "set_guard_override",
        /// GuardStore::purge_guard.
        PurgeGuard = "purge_guard",
    }
}

/// `rpc_server_call_duration_seconds`, `rpc_server_calls_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RpcLabels {
    /// Always `grpc`.
    pub rpc_system_name: RpcSystem,
    /// The method.
    pub rpc_method: RpcMethod,
    /// The gRPC status code.
    pub rpc_response_status_code: GrpcStatus,
}

/// `otpd_sends_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SendLabels {
    /// What for.
    pub purpose: Purpose,
    /// SMS or supervisor.
    pub channel: Channel,
    /// What became of it.
    pub outcome: SendResult,
}

/// `otpd_verifications_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VerifyLabels {
    /// What for.
    pub purpose: Purpose,
    /// What it came to.
    pub result: VerifyResult,
}

/// Metrics labelled by purpose only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PurposeLabels {
    /// What for.
    pub purpose: Purpose,
}

/// `otpd_supervisor_calls_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SupervisorLabels {
    /// The method.
    pub action: SupervisorAction,
    /// What it came to.
    pub outcome: SupervisorOutcome,
}

/// `otpd_sms_gateway_attempts_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AttemptLabels {
    /// What the request came to.
    pub result: GatewayAttempt,
}

/// `otpd_sms_gateway_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    /// Why.
    pub kind: GatewayFailure,
}

/// `otpd_delivery_route_attempts_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route.
    pub route: Route,
    /// What the attempt came to.
    pub outcome: RouteOutcome,
}

/// `otpd_delivery_route_breaker_state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteBreakerLabels {
    /// The route.
    pub route: Route,
}

/// `otpd_delivery_route_demotions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteDemotionLabels {
    /// The route tried later.
    pub route: Route,
    /// Why.
    pub why: RouteDemotion,
}

label_enum! {
    /// `--pumping-guard` as a label (off never decides).
    pub enum GuardModeLabel {
        /// Decides and records, refuses nothing.
        Shadow = "shadow",
        /// Refuses what it guards.
        Enforce = "enforce",
    }
}

label_enum! {
    /// The pumping guard's decision for one send.
    pub enum GuardDecision {
        /// Nothing tripped.
        Clear = "clear",
        /// An admin exempted the prefix.
        Exempt = "exempt",
        /// The prefix's or country's conversion tripped the guard.
        Guarded = "guarded",
        /// An admin blocked the prefix.
        Blocked = "blocked",
    }
}

label_enum! {
    /// An SMS budget shared across replicas.
    pub enum SharedBudget {
        /// Per destination prefix (`--sms-limit-per-prefix`).
        Prefix = "prefix",
        /// For the whole service (`--global-sms-limit`).
        Service = "service",
    }
}

/// `otpd_pumping_guard_decisions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GuardLabels {
    /// Shadow or enforce.
    pub mode: GuardModeLabel,
    /// What it decided.
    pub decision: GuardDecision,
}

/// `otpd_shared_budget_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BudgetLabels {
    /// Which budget.
    pub budget: SharedBudget,
}

/// `otpd_front_line_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LimitLabels {
    /// Which limit.
    pub limit: FrontLimit,
}

/// `otpd_hash_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HashLabels {
    /// Hash or verify.
    pub operation: HashOperation,
}

/// `otpd_hash_queue_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HashRefusalLabels {
    /// Why.
    pub reason: HashRefusal,
}

/// `otpd_connections_closed_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Which listener.
    pub listener: ListenerName,
    /// Why.
    pub reason: ConnectionClose,
}

/// `otpd_database_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DbErrorLabels {
    /// The store method.
    pub operation: StoreOperation,
    /// The error's kind.
    pub kind: DbErrorKind,
}

/// `otpd_audit_appends_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuditLabels {
    /// The audited action.
    pub action: AuditAction,
    /// Granted or denied.
    pub outcome: AuditOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_known_methods_or_other() {
        assert_eq!(RpcMethod::from_path("/otp.v1.OtpService/SendCode"), RpcMethod::SendCode);
        assert_eq!(RpcMethod::from_path("/grpc.health.v1.Health/Watch"), RpcMethod::HealthWatch);
        assert_eq!(RpcMethod::from_path("/otp.v1.OtpService/010-1234-5678"), RpcMethod::Other);
        assert_eq!(RpcMethod::from_path("/other"), RpcMethod::Other);
        assert_eq!(RpcMethod::from_path(""), RpcMethod::Other);
    }

    #[test]
    fn every_served_method_has_its_own_label() {
        use prost::Message;
        let mut names = Vec::new();
        for set in [crate::pb::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let set = prost_types::FileDescriptorSet::decode(set).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        names.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                    }
                }
            }
        }
        assert!(names.len() >= 8, "{names:?}");
        for name in names {
            assert_ne!(RpcMethod::from_path(&name), RpcMethod::Other, "{name} needs an RpcMethod");
        }
    }

    #[test]
    fn status_numbers_map_to_names() {
        assert_eq!(GrpcStatus::from_number(0), GrpcStatus::Ok);
        assert_eq!(GrpcStatus::from_number(16), GrpcStatus::Unauthenticated);
        assert_eq!(GrpcStatus::from_number(17), GrpcStatus::Unknown);
        assert_eq!(GrpcStatus::from_number(-1), GrpcStatus::Unknown);
        assert_eq!(GrpcStatus::ALL.len(), 17);
    }
}
