//! Why a server call failed: one variant per cause a caller can act on, each with the one-line
//! message the HTTP API answers (`docs/api.md` lists the codes; [`ServerError::kind`] is the
//! class the HTTP status and code follow).

use crate::db::DbError;
use meshpay_protocol::AllowanceId;
use meshpay_protocol::objects::MAX_AMOUNT;

/// Why a server call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Storage failed; nothing was changed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A wallet request is invalid (refused before its nonce is spent, except where said).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// An admin amount is 0 or past [`MAX_AMOUNT`].
    #[error("amount must be 1 to {MAX_AMOUNT} minor units")]
    AmountOutOfRange,
    /// An admin transfer's reference is over 200 bytes.
    #[error("reference: at most 200 bytes")]
    ReferenceTooLong,
    /// A credit would take the account past what a 64-bit balance holds.
    #[error("the books cannot take this amount: {0} would pass the largest balance they hold")]
    BooksFull(String),
    /// The wallet request's nonce was used before.
    #[error("this request was already used")]
    Replay,
    /// A debit asks for more than the account holds.
    #[error("{0} has too little money")]
    Insufficient(String),
    /// An allowance asks for more than the device's account holds.
    #[error("the account holds less than {0}")]
    CannotEscrow(u64),
    /// No such account.
    #[error("no account {0}")]
    NoAccount(String),
    /// The device of a wallet request has no account.
    #[error("this device has no account here")]
    NoDeviceAccount,
    /// No such allowance.
    #[error("no allowance {0}")]
    NoAllowance(AllowanceId),
    /// Other servers kept winning the race for the same records; try again.
    #[error("too much contention on these records; try again")]
    Busy,
    /// The CPU pool stopped (the server is shutting down).
    #[error("the server is shutting down")]
    Stopping,
}

/// What is wrong with a wallet request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The device's signature does not verify.
    #[error("the request's signature does not verify")]
    Signature,
    /// Addressed to another issuer.
    #[error("the request is for another issuer")]
    OtherIssuer,
    /// Its time is too far off the server's clock.
    #[error(
        "the request's time is {0}s off the server's clock (at most {max}s)",
        max = crate::server::REQUEST_WINDOW_SECS
    )]
    Clock(u64),
    /// Sent to the allowance route with another action.
    #[error("not an allowance request")]
    NotAllowance,
    /// Sent to the statement route with another action.
    #[error("not a statement request")]
    NotStatement,
    /// A currency this issuer does not issue.
    #[error("this issuer does not issue {0}")]
    Currency(String),
    /// More than the descriptor's largest allowance.
    #[error("at most {0} per allowance")]
    AmountTooLarge(u64),
    /// Longer validity than the policy grants.
    #[error("at most {0} seconds of validity")]
    ValidityTooLong(u64),
}

/// The classes of [`ServerError`], which decide the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is invalid (`400 bad_request`).
    Invalid,
    /// A wallet request replayed (`409 replay`).
    Replay,
    /// Too little money (`402 insufficient_funds`).
    Funds,
    /// Not found (`404 not_found`).
    NotFound,
    /// Try again shortly (`503 busy`).
    Busy,
    /// Storage failed (`500 storage`).
    Storage,
}

impl ServerError {
    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServerError::Request(_)
            | ServerError::AmountOutOfRange
            | ServerError::ReferenceTooLong
            | ServerError::BooksFull(_) => ErrorKind::Invalid,
            ServerError::Replay => ErrorKind::Replay,
            ServerError::Insufficient(_) | ServerError::CannotEscrow(_) => ErrorKind::Funds,
            ServerError::NoAccount(_)
            | ServerError::NoDeviceAccount
            | ServerError::NoAllowance(_) => ErrorKind::NotFound,
            ServerError::Busy | ServerError::Stopping => ErrorKind::Busy,
            ServerError::Db(_) => ErrorKind::Storage,
        }
    }

    /// Whether judging the batch again may succeed: another transaction won a race
    /// (a deadlock, a serialization failure or a unique key taken meanwhile).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            // A balance read in this batch was changed by a concurrent transaction.
            ServerError::Busy | ServerError::Db(DbError::Insufficient(_)) => true,
            ServerError::Db(DbError::Sql(sqlx::Error::Database(e))) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001" | "23505"))
            }
            _ => false,
        }
    }

    /// Whether the database refused a statement for what one record of the batch holds (a
    /// constraint, a value out of range, a trigger), as opposed to failing as a whole (out
    /// of disk or of reach): only such a failure is isolated by splitting the batch.
    pub(crate) fn is_record_failure(&self) -> bool {
        match self {
            ServerError::Db(DbError::TooLarge(_) | DbError::Overflow(_)) => true,
            ServerError::Db(DbError::Sql(sqlx::Error::Database(e))) => {
                let code = e.code().unwrap_or_default();
                match code.parse::<i32>() {
                    // SQLite: constraints (CHECK, NOT NULL, a trigger's RAISE, …) but unique
                    // keys (a race, judged again), and values too big, mistyped or out of range.
                    Ok(n) => {
                        (n & 0xff == 19 && n != 2067 && n != 1555) || matches!(n, 18 | 20 | 25)
                    }
                    // PostgreSQL: data exceptions, constraints but unique keys, RAISE.
                    Err(_) => {
                        code.starts_with("22")
                            || (code.starts_with("23") && code != "23505")
                            || code == "P0001"
                    }
                }
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for ServerError {
    fn from(e: sqlx::Error) -> Self {
        ServerError::Db(DbError::Sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_kinds_are_the_api_s() {
        let cases: [(ServerError, &str, ErrorKind); 6] = [
            (
                RequestError::Clock(400).into(),
                "the request's time is 400s off the server's clock (at most 300s)",
                ErrorKind::Invalid,
            ),
            (
                ServerError::AmountOutOfRange,
                "amount must be 1 to 9007199254740991 minor units",
                ErrorKind::Invalid,
            ),
            (
                ServerError::BooksFull("user:ab".into()),
                "the books cannot take this amount: user:ab would pass the largest balance they hold",
                ErrorKind::Invalid,
            ),
            (
                ServerError::CannotEscrow(500),
                "the account holds less than 500",
                ErrorKind::Funds,
            ),
            (
                ServerError::NoAllowance(AllowanceId([0xab; 16])),
                "no allowance abababababababababababababababab",
                ErrorKind::NotFound,
            ),
            (
                ServerError::Db(DbError::Corrupt("escrow id")),
                "the settlement database holds a corrupt escrow id",
                ErrorKind::Storage,
            ),
        ];
        for (e, message, kind) in cases {
            assert_eq!(e.to_string(), message);
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
