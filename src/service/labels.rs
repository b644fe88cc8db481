//! The metric labels of the flows' outcomes. `metrics` sits below the flows and knows only domain values, so the
//! mapping from a flow's result to its label lives here, beside the types it reads.

use crate::hashing::HashError;
use crate::metrics::{SendResult, SupervisorOutcome, VerifyResult};
use crate::service::{SendOutcome, ServiceError, VerifyOutcome};
use crate::store::StoreError;

impl SendResult {
    /// The result of a SendCode that decided nothing more precise itself.
    pub fn of(result: &Result<SendOutcome, ServiceError>) -> Self {
        match result {
            Ok(_) => Self::Delivered,
            Err(error) => match error {
                ServiceError::DeliveryUnconfirmed => Self::Unconfirmed,
                ServiceError::SmsDeliveryFailed { .. } => Self::Failed,
                ServiceError::PhoneLocked { .. } => Self::Locked,
                ServiceError::ResendCooldown { .. } => Self::Cooldown,
                ServiceError::SendLimit { .. } => Self::SendLimit,
                ServiceError::RateLimited { .. } => Self::RateLimited,
                ServiceError::SimMismatch => Self::SimMismatch,
                ServiceError::DeadlineTooShort { .. } => Self::DeadlineTooShort,
                ServiceError::Hash(HashError::Overloaded | HashError::CallerGone) => Self::Overloaded,
                _ => Self::Error,
            },
        }
    }
}

impl VerifyResult {
    /// The result of a VerifyCode.
    pub fn of(result: &Result<VerifyOutcome, ServiceError>) -> Self {
        match result {
            Ok(VerifyOutcome::Approved { .. }) => Self::Approved,
            Ok(VerifyOutcome::WrongCode { .. }) => Self::WrongCode,
            Ok(VerifyOutcome::Expired { .. }) => Self::Expired,
            Err(ServiceError::PhoneLocked { .. }) => Self::Locked,
            Err(ServiceError::NoPendingVerification) => Self::NoPendingVerification,
            Err(ServiceError::AlreadyVerified) => Self::AlreadyVerified,
            Err(ServiceError::Hash(HashError::Overloaded | HashError::CallerGone)) => Self::Overloaded,
            Err(_) => Self::Error,
        }
    }
}

impl SupervisorOutcome {
    /// The outcome of a call that ended with `error`, or was granted.
    pub fn of(error: Option<&ServiceError>) -> Self {
        let Some(error) = error else { return Self::Granted };
        match error {
            ServiceError::InvalidArgument(_) => Self::InvalidArgument,
            ServiceError::Unauthenticated => Self::Unauthenticated,
            ServiceError::SupervisorDisabled => Self::SupervisorDisabled,
            ServiceError::WrongRole => Self::RoleNotAllowed,
            ServiceError::ThirdPartyNumber => Self::ThirdPartyNumber,
            ServiceError::CallNotFound => Self::CallNotFound,
            ServiceError::CallNotYours => Self::CallNotYours,
            ServiceError::CallEnded => Self::CallEnded,
            ServiceError::CallRequired | ServiceError::CallEvidenceOff => Self::CallRequired,
            ServiceError::NoRecentSend => Self::NoPendingVerification,
            ServiceError::LookupLocked { .. } => Self::PhoneLocked,
            ServiceError::LookupQuota { .. } => Self::LookupQuota,
            ServiceError::AuditUnavailable => Self::AuditUnavailable,
            ServiceError::Hash(HashError::Overloaded | HashError::CallerGone) => Self::Overloaded,
            ServiceError::Store(StoreError::Unavailable(_)) => Self::Unavailable,
            _ => Self::Error,
        }
    }
}
