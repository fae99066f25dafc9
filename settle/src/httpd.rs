//! Serving HTTP to strangers: the accept loop with per-connection and per-source limits, and
//! bounded body reads, shared with the node's web app ([`meshpay_transports::http`]).

pub use meshpay_transports::http::*;
