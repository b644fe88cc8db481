//! The one place where domain values and their protobuf enums are converted, for the services and for otpctl.

use crate::domain::Purpose;
use crate::domain::audit::AuditAction;
use crate::pb::otp::v1 as pb;

/// A purpose where `UNSPECIFIED` means "any".
pub fn optional_purpose(value: i32) -> Result<Option<Purpose>, String> {
    match pb::Purpose::try_from(value) {
        Ok(pb::Purpose::Unspecified) => Ok(None),
        Ok(pb::Purpose::Login) => Ok(Some(Purpose::Login)),
        Ok(pb::Purpose::Signup) => Ok(Some(Purpose::Signup)),
        Ok(pb::Purpose::Reauth) => Ok(Some(Purpose::Reauth)),
        Ok(pb::Purpose::ChangePhone) => Ok(Some(Purpose::ChangePhone)),
        Err(_) => Err(format!("unknown purpose {value}")),
    }
}

/// A purpose as the API names it.
pub fn purpose_to_pb(purpose: Purpose) -> pb::Purpose {
    match purpose {
        Purpose::Login => pb::Purpose::Login,
        Purpose::Signup => pb::Purpose::Signup,
        Purpose::Reauth => pb::Purpose::Reauth,
        Purpose::ChangePhone => pb::Purpose::ChangePhone,
    }
}

/// An audit action as the API names it.
pub fn action_to_pb(action: AuditAction) -> pb::AuditAction {
    match action {
        AuditAction::LookupCode => pb::AuditAction::LookupCode,
        AuditAction::GetPhoneStatus => pb::AuditAction::GetPhoneStatus,
        AuditAction::UnlockPhone => pb::AuditAction::UnlockPhone,
        AuditAction::ListAuditEvents => pb::AuditAction::ListAuditEvents,
        AuditAction::PhoneLocked => pb::AuditAction::PhoneLocked,
        AuditAction::SupervisorAdded => pb::AuditAction::SupervisorAdded,
        AuditAction::SupervisorDisabled => pb::AuditAction::SupervisorDisabled,
        AuditAction::VerifyAuditChain => pb::AuditAction::VerifyAuditChain,
        AuditAction::SupervisorAgentSet => pb::AuditAction::SupervisorAgentSet,
        AuditAction::SignIn => pb::AuditAction::SignIn,
        AuditAction::SignOut => pb::AuditAction::SignOut,
        AuditAction::SupervisorContactSet => pb::AuditAction::SupervisorContactSet,
        AuditAction::SignInLockLifted => pb::AuditAction::SignInLockLifted,
        AuditAction::PasskeyEnrolled => pb::AuditAction::PasskeyEnrolled,
        AuditAction::PasskeyEnrolmentCodeIssued => pb::AuditAction::PasskeyEnrolmentCodeIssued,
        AuditAction::PrefixGuardSet => pb::AuditAction::PrefixGuardSet,
    }
}

/// An audit action filter; `UNSPECIFIED` means any.
pub fn action_from_pb(value: i32) -> Result<Option<AuditAction>, String> {
    Ok(match pb::AuditAction::try_from(value).map_err(|_| format!("unknown action {value}"))? {
        pb::AuditAction::Unspecified => None,
        pb::AuditAction::LookupCode => Some(AuditAction::LookupCode),
        pb::AuditAction::GetPhoneStatus => Some(AuditAction::GetPhoneStatus),
        pb::AuditAction::UnlockPhone => Some(AuditAction::UnlockPhone),
        pb::AuditAction::ListAuditEvents => Some(AuditAction::ListAuditEvents),
        pb::AuditAction::PhoneLocked => Some(AuditAction::PhoneLocked),
        pb::AuditAction::SupervisorAdded => Some(AuditAction::SupervisorAdded),
        pb::AuditAction::SupervisorDisabled => Some(AuditAction::SupervisorDisabled),
        pb::AuditAction::VerifyAuditChain => Some(AuditAction::VerifyAuditChain),
        pb::AuditAction::SupervisorAgentSet => Some(AuditAction::SupervisorAgentSet),
        pb::AuditAction::SignIn => Some(AuditAction::SignIn),
        pb::AuditAction::SignOut => Some(AuditAction::SignOut),
        pb::AuditAction::SupervisorContactSet => Some(AuditAction::SupervisorContactSet),
        pb::AuditAction::SignInLockLifted => Some(AuditAction::SignInLockLifted),
        pb::AuditAction::PasskeyEnrolled => Some(AuditAction::PasskeyEnrolled),
        pb::AuditAction::PasskeyEnrolmentCodeIssued => Some(AuditAction::PasskeyEnrolmentCodeIssued),
        pb::AuditAction::PrefixGuardSet => Some(AuditAction::PrefixGuardSet),
    })
}
