//! Why an IOU was refused, and what a settlement receipt says happened to a record: the
//! stable numeric codes that payees, the settlement server and receipts share (SPEC.md §4.10).

/// Why an IOU was refused, by a payee or by the settlement server. The numeric code is what
/// receipts carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The IOU's signature does not verify under the allowance holder's key.
    BadSignature,
    /// The allowance certificate's signature does not verify.
    BadCertificate,
    /// The allowance's issuer is not one this node trusts, or not one the request accepts.
    UnknownIssuer,
    /// No certificate is known for the IOU's allowance.
    UnknownAllowance,
    /// The allowance is not valid yet.
    NotYetValid,
    /// The allowance's validity window is over.
    Expired,
    /// The running total would pass the allowance limit.
    OverLimit,
    /// The payment is over the allowance's per-payment maximum.
    OverPaymentLimit,
    /// The IOU pays someone else.
    WrongPayee,
    /// The IOU's nonce matches no open request.
    NonceMismatch,
    /// The request has expired.
    RequestExpired,
    /// The allowance was revoked by its issuer.
    Revoked,
    /// A fraud proof against the allowance is known: it is refused everywhere.
    KnownFraud,
    /// The request was already paid by another IOU.
    Replay,
    /// Another IOU holds the same counter: a double spend.
    CounterConflict,
    /// The IOU's `prev` does not name the known spend before it.
    ChainBreak,
    /// The currency is not the request's.
    CurrencyMismatch,
    /// The amount is not the request's.
    AmountMismatch,
    /// The record arrived after the allowance's settle-by time.
    LateSettlement,
    /// The sealed record did not open or did not decode.
    Malformed,
    /// The record is sealed for another issuer.
    ForeignIssuer,
    /// The payee has no account at the issuer.
    UnknownPayee,
    /// The issuer could not decide the record now (its storage failed on this record alone);
    /// upload it again later.
    RetryLater,
}

impl Reason {
    const ALL: [Reason; 23] = [
        Reason::BadSignature,
        Reason::BadCertificate,
        Reason::UnknownIssuer,
        Reason::UnknownAllowance,
        Reason::NotYetValid,
        Reason::Expired,
        Reason::OverLimit,
        Reason::OverPaymentLimit,
        Reason::WrongPayee,
        Reason::NonceMismatch,
        Reason::RequestExpired,
        Reason::Revoked,
        Reason::KnownFraud,
        Reason::Replay,
        Reason::CounterConflict,
        Reason::ChainBreak,
        Reason::CurrencyMismatch,
        Reason::AmountMismatch,
        Reason::LateSettlement,
        Reason::Malformed,
        Reason::ForeignIssuer,
        Reason::UnknownPayee,
        Reason::RetryLater,
    ];

    /// The stable wire code (1-based; 0 means settled in a receipt).
    pub fn code(self) -> u16 {
        let i = Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is listed in ALL");
        u16::try_from(i + 1).expect("fewer than 65535 reasons")
    }

    /// The reason with wire code `code`.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The reason with this [`Reason::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// A short machine name (snake case), for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::BadCertificate => "bad_certificate",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownAllowance => "unknown_allowance",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::OverLimit => "over_limit",
            Reason::OverPaymentLimit => "over_payment_limit",
            Reason::WrongPayee => "wrong_payee",
            Reason::NonceMismatch => "nonce_mismatch",
            Reason::RequestExpired => "request_expired",
            Reason::Revoked => "revoked",
            Reason::KnownFraud => "known_fraud",
            Reason::Replay => "replay",
            Reason::CounterConflict => "counter_conflict",
            Reason::ChainBreak => "chain_break",
            Reason::CurrencyMismatch => "currency_mismatch",
            Reason::AmountMismatch => "amount_mismatch",
            Reason::LateSettlement => "late_settlement",
            Reason::Malformed => "malformed",
            Reason::ForeignIssuer => "foreign_issuer",
            Reason::UnknownPayee => "unknown_payee",
            Reason::RetryLater => "retry_later",
        }
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a receipt says happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Settled: the payee was credited.
    Settled,
    /// Refused, with the reason.
    Rejected(Reason),
}

impl ReceiptStatus {
    /// Whether the receipt is the issuer's last word on the record. `malformed` and
    /// `foreign_issuer` describe the bytes that were uploaded, which anyone can pair with any
    /// record id, `unknown_payee` lasts only until the payee opens an account, and
    /// `retry_later` only until the issuer's storage recovers: nodes keep carrying a record
    /// after such a receipt, and wallets do not change a payment's state on it.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ReceiptStatus::Rejected(
                Reason::Malformed
                    | Reason::ForeignIssuer
                    | Reason::UnknownPayee
                    | Reason::RetryLater
            )
        )
    }

    /// Wire code: 0 for settled, else the reason's code.
    pub fn code(self) -> u16 {
        match self {
            ReceiptStatus::Settled => 0,
            ReceiptStatus::Rejected(r) => r.code(),
        }
    }

    /// The status with wire code `code`.
    pub fn from_code(code: u16) -> Option<Self> {
        if code == 0 {
            Some(ReceiptStatus::Settled)
        } else {
            Reason::from_code(code).map(ReceiptStatus::Rejected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_stable_and_round_trip() {
        assert_eq!(Reason::BadSignature.code(), 1);
        assert_eq!(Reason::CounterConflict.code(), 15);
        assert_eq!(Reason::UnknownPayee.code(), 22);
        assert_eq!(Reason::RetryLater.code(), 23);
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(
                ReceiptStatus::from_code(r.code()),
                Some(ReceiptStatus::Rejected(r))
            );
        }
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(24), None);
        assert_eq!(ReceiptStatus::from_code(0), Some(ReceiptStatus::Settled));
    }
}
