//! Link messages: what two devices say to each other over any link (libp2p, Bluetooth LE, a
//! test pipe). Every exchange is one request and one response.
//!
//! A message is an envelope `[version, kind, body]` whose body is the encoding of the kind's
//! object, decoded under that object's own size limit and rules. Links carry messages as
//! opaque frames of at most [`MAX_MESSAGE`] bytes.
//!
//! | kind | request | response |
//! |---|---|---|
//! | 1 | `ask`: please make me a payment request for this amount | `request`: a [`PaymentRequest`] |
//! | 2 | `pay`: an IOU, with the allowance certificate on first contact | `ack`: a [`PaymentAck`], or `refused` |
//! | 3 | `sync`: a [`SyncMessage`] of a bundle sync session | `sync`: the peer's next [`SyncMessage`] |
//! | — | anything the peer cannot read | `error` |

use crate::codec::{self, Blob, DecodeError, VERSION, Wire, check_version};
use crate::iou::Iou;
use crate::objects::{AllowanceCert, Amount, PaymentAck, PaymentRequest, Reason, valid_currency};
use crate::sync::SyncMessage;
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

/// Largest message a link carries, in bytes.
pub const MAX_MESSAGE: usize = 2048;

/// The envelope of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
struct Envelope {
    version: u8,
    kind: u8,
    body: Blob,
}

impl Wire for Envelope {
    const KIND: &'static str = "message";
    const MAX_SIZE: usize = MAX_MESSAGE;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)
    }
}

/// Asks a payee for a payment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Ask {
    /// Format version.
    pub version: u8,
    /// Amount the payer wants to pay.
    pub amount: Amount,
    /// Currency.
    pub currency: String,
    /// Free text for the payee, at most 80 bytes.
    pub memo: String,
}

impl Wire for Ask {
    const KIND: &'static str = "ask";
    const MAX_SIZE: usize = 128;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if self.amount == 0
            || !crate::objects::amount_in_range(self.amount)
            || !valid_currency(&self.currency)
            || self.memo.len() > 80
        {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "amount, currency or memo",
            });
        }
        Ok(())
    }
}

/// An IOU, with the certificate of its allowance when the payee may not have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Pay {
    /// Format version.
    pub version: u8,
    /// The payment.
    pub iou: Iou,
    /// Its allowance certificate (`null` if the payee is known to hold it).
    pub cert: Option<AllowanceCert>,
}

impl Wire for Pay {
    const KIND: &'static str = "pay";
    const MAX_SIZE: usize = 512;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        self.iou.check()?;
        if let Some(c) = &self.cert {
            c.check()?;
        }
        Ok(())
    }
}

/// A payee's refusal of an IOU or of an ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
struct Refusal {
    version: u8,
    reason: u16,
}

impl Wire for Refusal {
    const KIND: &'static str = "refusal";
    const MAX_SIZE: usize = 16;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if Reason::from_code(self.reason).is_none() {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "unknown reason code",
            });
        }
        Ok(())
    }
}

/// What a peer could not do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request did not decode.
    BadMessage,
    /// The peer does not serve this kind of request (a relay asked to take a payment, …).
    Unsupported,
    /// The peer failed internally (storage); try again later.
    Unavailable,
    /// The payee already holds as many unpaid requests asked by this payer as it keeps; they
    /// expire, or are paid, before it makes more.
    TooManyRequests,
}

impl ErrorCode {
    fn code(self) -> u16 {
        match self {
            ErrorCode::BadMessage => 1,
            ErrorCode::Unsupported => 2,
            ErrorCode::Unavailable => 3,
            ErrorCode::TooManyRequests => 4,
        }
    }

    fn from_code(c: u16) -> Option<Self> {
        match c {
            1 => Some(ErrorCode::BadMessage),
            2 => Some(ErrorCode::Unsupported),
            3 => Some(ErrorCode::Unavailable),
            4 => Some(ErrorCode::TooManyRequests),
            _ => None,
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ErrorCode::BadMessage => "the peer could not read the message",
            ErrorCode::Unsupported => "the peer does not take this kind of request",
            ErrorCode::Unavailable => "the peer could not serve the request right now",
            ErrorCode::TooManyRequests => {
                "the payee holds too many unpaid payment requests you asked for; pay one, or wait until they expire"
            }
        })
    }
}

/// A request from one device to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Make me a payment request.
    Ask(Ask),
    /// Take this payment.
    Pay(Box<Pay>),
    /// A bundle sync step.
    Sync(Box<SyncMessage>),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A payment request, answering [`Request::Ask`].
    Request(PaymentRequest),
    /// The payment is accepted and stored, answering [`Request::Pay`].
    Ack(PaymentAck),
    /// Refused, with the reason.
    Refused(Reason),
    /// The request could not be served.
    Error(ErrorCode),
    /// The next bundle sync step, answering [`Request::Sync`].
    Sync(Box<SyncMessage>),
}

const KIND_ASK: u8 = 1;
const KIND_PAY: u8 = 2;
const KIND_SYNC: u8 = 3;
const KIND_REQUEST: u8 = 16;
const KIND_ACK: u8 = 17;
const KIND_REFUSED: u8 = 18;
const KIND_ERROR: u8 = 19;
const KIND_SYNC_ANSWER: u8 = 20;

fn envelope(kind: u8, body: Vec<u8>) -> Vec<u8> {
    codec::encode(&Envelope {
        version: VERSION,
        kind,
        body: Blob(body),
    })
}

fn open(bytes: &[u8]) -> Result<(u8, Vec<u8>), DecodeError> {
    let e: Envelope = codec::decode(bytes)?;
    Ok((e.kind, e.body.0))
}

fn unknown_kind() -> DecodeError {
    DecodeError::InvalidField {
        kind: "message",
        field: "unknown message kind",
    }
}

impl Request {
    /// Encodes the request as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Ask(a) => envelope(KIND_ASK, codec::encode(a)),
            Request::Pay(p) => envelope(KIND_PAY, codec::encode(p.as_ref())),
            Request::Sync(m) => envelope(KIND_SYNC, codec::encode(m.as_ref())),
        }
    }

    /// Decodes a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (kind, body) = open(bytes)?;
        match kind {
            KIND_ASK => Ok(Request::Ask(codec::decode(&body)?)),
            KIND_PAY => Ok(Request::Pay(Box::new(codec::decode(&body)?))),
            KIND_SYNC => Ok(Request::Sync(Box::new(codec::decode(&body)?))),
            _ => Err(unknown_kind()),
        }
    }
}

impl Response {
    /// Encodes the response as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Request(r) => envelope(KIND_REQUEST, codec::encode(r)),
            Response::Ack(a) => envelope(KIND_ACK, codec::encode(a)),
            Response::Refused(r) => envelope(
                KIND_REFUSED,
                codec::encode(&Refusal {
                    version: VERSION,
                    reason: r.code(),
                }),
            ),
            Response::Sync(m) => envelope(KIND_SYNC_ANSWER, codec::encode(m.as_ref())),
            Response::Error(e) => envelope(
                KIND_ERROR,
                codec::encode(&ErrorBody {
                    version: VERSION,
                    code: e.code(),
                }),
            ),
        }
    }

    /// Decodes a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (kind, body) = open(bytes)?;
        match kind {
            KIND_REQUEST => Ok(Response::Request(codec::decode(&body)?)),
            KIND_ACK => Ok(Response::Ack(codec::decode(&body)?)),
            KIND_SYNC_ANSWER => Ok(Response::Sync(Box::new(codec::decode(&body)?))),
            KIND_REFUSED => {
                let r: Refusal = codec::decode(&body)?;
                Ok(Response::Refused(
                    Reason::from_code(r.reason).expect("checked at decode"),
                ))
            }
            KIND_ERROR => {
                let e: ErrorBody = codec::decode(&body)?;
                ErrorCode::from_code(e.code)
                    .map(Response::Error)
                    .ok_or(DecodeError::InvalidField {
                        kind: "error",
                        field: "unknown error code",
                    })
            }
            _ => Err(unknown_kind()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
struct ErrorBody {
    version: u8,
    code: u16,
}

impl Wire for ErrorBody {
    const KIND: &'static str = "error";
    const MAX_SIZE: usize = 16;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)
    }
}

impl Ask {
    /// An ask for `amount` of `currency`.
    pub fn new(amount: Amount, currency: &str, memo: &str) -> Self {
        Self {
            version: VERSION,
            amount,
            currency: currency.to_owned(),
            memo: memo.to_owned(),
        }
    }
}

impl Pay {
    /// A payment message.
    pub fn new(iou: Iou, cert: Option<AllowanceCert>) -> Self {
        Self {
            version: VERSION,
            iou,
            cert,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{T0, allowance, device, issuer, pay, request, wallet};

    #[test]
    fn messages_round_trip() {
        let iss = issuer();
        let (alice, bob) = (device(1), device(2));
        let cert = allowance(&iss, 1, &alice, 1000);
        let req = request(&bob, 10, 1);
        let iou = pay(&mut wallet([cert.clone()]), &alice, &req);
        let requests = [
            Request::Ask(Ask::new(10, "KES", "tea")),
            Request::Pay(Box::new(Pay::new(iou.clone(), Some(cert)))),
            Request::Pay(Box::new(Pay::new(iou.clone(), None))),
        ];
        for r in requests {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        let responses = [
            Response::Request(req),
            Response::Ack(PaymentAck::sign(&bob, iou.id(), T0)),
            Response::Refused(Reason::CounterConflict),
            Response::Error(ErrorCode::Unsupported),
        ];
        for r in responses {
            assert_eq!(Response::decode(&r.encode()), Ok(r));
        }
        // A whole first payment: pay message with certificate, and the ack.
        let first = Request::Pay(Box::new(Pay::new(
            iou.clone(),
            Some(allowance(&iss, 1, &alice, 1000)),
        )));
        assert!(first.encode().len() < 400, "{}", first.encode().len());
    }

    #[test]
    fn unknown_kinds_and_garbage_are_errors() {
        let bytes = envelope(9, vec![1, 2, 3]);
        assert!(Request::decode(&bytes).is_err());
        assert!(Response::decode(&bytes).is_err());
        assert!(Request::decode(&[0xff; 10]).is_err());
        assert!(Response::decode(&Response::Refused(Reason::Replay).encode()[..5]).is_err());
    }
}
