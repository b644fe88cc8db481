//! What differs between the two SQL backends, and the column types whose encoding differs. Everything else in
//! the store is written once, generic over `sqlx::Database` (see [`super::SqlStore`]).

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

/// What one backend does its own way. See the list in `store/mod.rs` for why each item is here.
pub trait Dialect: Database<Connection: sqlx::migrate::Migrate> + Sized {
    /// The statement that opens a transaction that will write: `BEGIN` (PostgreSQL serialises writers with row
    /// locks) or `BEGIN IMMEDIATE` (SQLite takes its single write lock up front, so writers queue instead of
    /// failing to upgrade a read lock).
    const BEGIN_WRITE: &'static str;
    /// The statements whose text differs; every other statement is shared.
    const SQL: Statements;

    /// How a point in time is stored ([`Ts`]): `timestamptz` or integer milliseconds.
    type Time: Column<Self>;
    /// How a UUID is stored ([`Uid`]): `uuid` or text.
    type Uuid: Column<Self>;

    /// A point in time as stored.
    fn time(at: DateTime<Utc>) -> Self::Time;
    /// A stored point in time.
    fn from_time(at: Self::Time) -> Result<DateTime<Utc>, CorruptValue>;
    /// A UUID as stored.
    fn uuid(id: uuid::Uuid) -> Self::Uuid;
    /// A stored UUID.
    fn from_uuid(id: Self::Uuid) -> Result<uuid::Uuid, CorruptValue>;

    /// The backend's migrations (`migrations/{postgres,sqlite}/`).
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// Rows a statement changed: sqlx has no backend-independent accessor.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// The statements whose text differs between the backends: a lock only PostgreSQL needs (`None` where SQLite's
/// write lock, taken by [`Dialect::BEGIN_WRITE`], already serialises), `GREATEST` / `MAX`, `FOR UPDATE SKIP
/// LOCKED`, `COUNT(*) FILTER`, and PostgreSQL's casts of parameters it cannot type from a bare `$n IS NULL` or a
/// `UNION` of literals. Each binds the same parameters, in the same order, on both backends.
#[derive(Debug, Clone, Copy)]
pub struct Statements {
    /// [`crate::store::Store::send_history`]: `$1` phone, `$2` now, `$3` a day ago, `$4` purpose.
    pub send_history: &'static str,
    /// Extends a pending verification for a resend: `$1` id, `$2` expires at, `$3` now.
    pub extend_verification: &'static str,
    /// Locks the number's row of a code before it is withdrawn: `$1` code id.
    pub lock_phone_of_code: Option<&'static str>,
    /// Locks the number's row before an approval: `$1` phone.
    pub lock_phone: Option<&'static str>,
    /// Gives back a reserved attempt: `$1` phone, `$2` epoch, `$3` the lock it set, `$4` now.
    pub release_attempt: &'static str,
    /// Forgets a batch of idle numbers: `$1` before, `$2` now, `$3` batch size.
    pub forget_idle_numbers: &'static str,
    /// Takes the lock that serialises audit appends: `$1` [`AUDIT_LOCK`].
    pub lock_audit: Option<&'static str>,
    /// The pending verification a lookup would use: `$1` phone, `$2` purpose or NULL.
    pub lookup_candidate: &'static str,
    /// The number's lock, read under a row lock before a supervisor code: `$1` phone.
    pub lookup_lock: &'static str,
    /// Extends a pending verification for a supervisor code: `$1` id, `$2` expires at.
    pub extend_for_lookup: &'static str,
    /// SMS of the last hour and day: `$1` phone, `$2` an hour ago, `$3` a day ago.
    pub sms_counts: &'static str,
    /// The number's count and lock, read under a row lock before an unlock: `$1` phone.
    pub unlock_state: &'static str,
    /// The `WHERE` clause of an audit listing: `$1` since, `$2` until, `$3` actor, `$4` phone key, `$5` action,
    /// `$6` before seq (each NULL for any).
    pub audit_filter: &'static str,
    /// Serialises the sign-in codes sent to one person, so their cooldown and hourly cap hold across replicas:
    /// `$1` the person's name.
    pub lock_sign_in: Option<&'static str>,
}

/// The advisory lock key that serialises audit appends where the dialect takes one ("otpd_aud").
pub const AUDIT_LOCK: i64 = 0x6f74_7064_5f61_7564;

/// A value sqlx can bind and read on `DB`: one name for the bounds each column type needs.
pub trait Column<DB: Database>: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send + Sync {}

impl<DB: Database, T> Column<DB> for T where T: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send + Sync {}

/// A value the dialect stores in its own representation ([`StoredBy`]): the operations bind and read
/// `Db(DateTime<Utc>)` and `Db(Uuid)` alike on both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Db<T>(pub T);

/// A point in time as the dialect stores it ([`Dialect::Time`]).
pub type Ts = Db<DateTime<Utc>>;

/// A UUID as the dialect stores it ([`Dialect::Uuid`]).
pub type Uid = Db<uuid::Uuid>;

/// A stored value the code cannot read (a decode error that becomes [`crate::store::StoreError::Corrupt`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CorruptValue(pub String);

/// A Rust type that each dialect stores in a representation of its own.
pub trait StoredBy<DB: Dialect>: Sized + Send + Sync {
    /// The representation.
    type As: Column<DB>;
    /// The value as stored.
    fn to_stored(self) -> Self::As;
    /// The value a stored one holds.
    fn from_stored(stored: Self::As) -> Result<Self, CorruptValue>;
}

impl<DB: Dialect> StoredBy<DB> for DateTime<Utc> {
    type As = DB::Time;

    fn to_stored(self) -> DB::Time {
        DB::time(self)
    }

    fn from_stored(stored: DB::Time) -> Result<Self, CorruptValue> {
        DB::from_time(stored)
    }
}

impl<DB: Dialect> StoredBy<DB> for uuid::Uuid {
    type As = DB::Uuid;

    fn to_stored(self) -> DB::Uuid {
        DB::uuid(self)
    }

    fn from_stored(stored: DB::Uuid) -> Result<Self, CorruptValue> {
        DB::from_uuid(stored)
    }
}

impl<DB: Dialect, T: StoredBy<DB>> Type<DB> for Db<T> {
    fn type_info() -> DB::TypeInfo {
        <T::As as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <T::As as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Dialect, T: StoredBy<DB> + Copy> Encode<'q, DB> for Db<T> {
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        <T::As as Encode<'q, DB>>::encode(self.0.to_stored(), buf)
    }
}

impl<'r, DB: Dialect, T: StoredBy<DB>> Decode<'r, DB> for Db<T> {
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(T::from_stored(<T::As as Decode<'r, DB>>::decode(value)?)?))
    }
}
