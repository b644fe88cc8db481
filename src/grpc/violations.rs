//! Collects every invalid field of a request, so the caller learns all of them at once.

use super::convert::optional_purpose;
use crate::domain::{AllowedCountries, PhoneError, PhoneNumber, Purpose, TicketId};
use crate::service::{FieldViolation, ServiceError};

/// The invalid fields found so far.
#[derive(Default)]
pub(super) struct Violations(pub(super) Vec<FieldViolation>);

impl Violations {
    /// Records `r`'s error against `field`, or returns its value.
    pub(super) fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        reason: &'static str,
        r: Result<T, E>,
    ) -> Option<T> {
        r.map_err(|e| self.0.push(FieldViolation { field, reason, description: e.to_string() })).ok()
    }

    /// A number codes can be sent to (`UNSUPPORTED_DESTINATION` for landlines and other countries).
    pub(super) fn phone(
        &mut self,
        field: &'static str,
        input: &str,
        countries: &AllowedCountries,
    ) -> Option<PhoneNumber> {
        let parsed = PhoneNumber::parse(input, countries);
        let reason = match &parsed {
            Err(PhoneError::Unsupported(_)) => "UNSUPPORTED_DESTINATION",
            _ => "INVALID_PHONE_NUMBER",
        };
        self.check(field, reason, parsed)
    }

    /// A purpose that must be given.
    pub(super) fn purpose(&mut self, value: i32) -> Option<Purpose> {
        let purpose = match optional_purpose(value) {
            Ok(Some(purpose)) => Ok(purpose),
            Ok(None) => Err("purpose is required".to_owned()),
            Err(e) => Err(e),
        };
        self.check("purpose", "INVALID_PURPOSE", purpose)
    }

    /// A ticket id.
    pub(super) fn ticket(&mut self, input: &str) -> Option<TicketId> {
        self.check("ticket_id", "INVALID_TICKET_ID", TicketId::parse(input))
    }

    /// Whether every field was valid.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The error for the fields found, if any.
    pub(super) fn into_error(self) -> Option<ServiceError> {
        (!self.0.is_empty()).then_some(ServiceError::InvalidArgument(self.0))
    }
}
