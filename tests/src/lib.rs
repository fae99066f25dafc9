//! Integration tests across meshpay's crates and processes live in `tests/tests/`.
