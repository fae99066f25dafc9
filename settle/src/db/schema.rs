//! The tables, per engine. Version 1 is written once for both engines (`SERIALKEY` and
//! `BYTES` are replaced per engine); version 2 adds the range rules, which the engines express
//! differently.
//!
//! `sqlx::migrate!` would fit one engine's directory of SQL files; here one schema history
//! serves two engines whose DDL differs (SQLite rebuilds its tables `STRICT`, PostgreSQL adds
//! constraints), and databases made so far record their versions in `schema_migrations`, not in
//! sqlx's `_sqlx_migrations` with checksums. Two migration directories and a conversion of the
//! version table would be more code than [`super::Db`]'s twenty lines of migration, not less.

/// Schema version 1 (kept as it was, so databases made by it migrate the same way).
pub(super) const TABLES: &str = "
CREATE TABLE accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE transfers (seq SERIALKEY, src TEXT NOT NULL, dst TEXT NOT NULL, amount BIGINT NOT NULL,
    kind TEXT NOT NULL, reference TEXT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE escrows (id BYTES PRIMARY KEY, holder BYTES NOT NULL, cert BYTES NOT NULL,
    limit_amount BIGINT NOT NULL, settled BIGINT NOT NULL, released BIGINT NOT NULL,
    settle_by BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE slots (allowance BYTES NOT NULL, counter BIGINT NOT NULL, iou BYTES NOT NULL,
    digest BYTES NOT NULL, sig BYTES NOT NULL, amount BIGINT NOT NULL, verdict BIGINT NOT NULL,
    PRIMARY KEY (allowance, counter));
CREATE TABLE records (seq SERIALKEY, id BYTES NOT NULL UNIQUE, status BIGINT NOT NULL,
    receipt BYTES NOT NULL, decided_at BIGINT NOT NULL);
CREATE TABLE frauds (seq SERIALKEY, allowance BYTES NOT NULL UNIQUE, proof BYTES NOT NULL,
    found_at BIGINT NOT NULL);
CREATE TABLE revocations (seq SERIALKEY, allowance BYTES NOT NULL UNIQUE, revocation BYTES NOT NULL,
    at BIGINT NOT NULL);
CREATE TABLE nonces (device BYTES NOT NULL, nonce BYTES NOT NULL, at BIGINT NOT NULL,
    PRIMARY KEY (device, nonce));
INSERT INTO accounts (name, balance, created_at) VALUES ('external', 0, 0);
";

/// The range rules every amount column keeps (schema version 2): money columns hold integers
/// only, user and escrow balances never go below zero, and escrows never settle past their
/// limit. On SQLite the tables are rebuilt `STRICT`, so a value that is not an integer (a
/// float from an overflowing expression, say) is refused instead of stored.
pub(super) const STRICT_SQLITE: &str = "
CREATE TABLE accounts2 (name TEXT PRIMARY KEY, balance INTEGER NOT NULL
        CHECK (name = 'external' OR balance >= 0),
    created_at INTEGER NOT NULL) STRICT;
INSERT INTO accounts2 SELECT name, balance, created_at FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts2 RENAME TO accounts;
CREATE TABLE transfers2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, src TEXT NOT NULL,
    dst TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0), kind TEXT NOT NULL,
    reference TEXT NOT NULL, at INTEGER NOT NULL) STRICT;
INSERT INTO transfers2 SELECT seq, src, dst, amount, kind, reference, at FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers2 RENAME TO transfers;
CREATE TABLE escrows2 (id BLOB PRIMARY KEY, holder BLOB NOT NULL, cert BLOB NOT NULL,
    limit_amount INTEGER NOT NULL CHECK (limit_amount > 0),
    settled INTEGER NOT NULL CHECK (settled >= 0 AND settled <= limit_amount),
    released INTEGER NOT NULL, settle_by INTEGER NOT NULL, created_at INTEGER NOT NULL) STRICT;
INSERT INTO escrows2 SELECT id, holder, cert, limit_amount, settled, released, settle_by, created_at FROM escrows;
DROP TABLE escrows;
ALTER TABLE escrows2 RENAME TO escrows;
CREATE TABLE slots2 (allowance BLOB NOT NULL, counter INTEGER NOT NULL, iou BLOB NOT NULL,
    digest BLOB NOT NULL, sig BLOB NOT NULL, amount INTEGER NOT NULL CHECK (amount >= 0),
    verdict INTEGER NOT NULL, PRIMARY KEY (allowance, counter)) STRICT;
INSERT INTO slots2 SELECT allowance, counter, iou, digest, sig, amount, verdict FROM slots;
DROP TABLE slots;
ALTER TABLE slots2 RENAME TO slots;
CREATE TABLE records2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE,
    status INTEGER NOT NULL, receipt BLOB NOT NULL, decided_at INTEGER NOT NULL) STRICT;
INSERT INTO records2 SELECT seq, id, status, receipt, decided_at FROM records;
DROP TABLE records;
ALTER TABLE records2 RENAME TO records;
CREATE TABLE frauds2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, allowance BLOB NOT NULL UNIQUE,
    proof BLOB NOT NULL, found_at INTEGER NOT NULL) STRICT;
INSERT INTO frauds2 SELECT seq, allowance, proof, found_at FROM frauds;
DROP TABLE frauds;
ALTER TABLE frauds2 RENAME TO frauds;
CREATE TABLE revocations2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, allowance BLOB NOT NULL UNIQUE,
    revocation BLOB NOT NULL, at INTEGER NOT NULL) STRICT;
INSERT INTO revocations2 SELECT seq, allowance, revocation, at FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations2 RENAME TO revocations;
CREATE TABLE nonces2 (device BLOB NOT NULL, nonce BLOB NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (device, nonce)) STRICT;
INSERT INTO nonces2 SELECT device, nonce, at FROM nonces;
DROP TABLE nonces;
ALTER TABLE nonces2 RENAME TO nonces;
CREATE INDEX nonces_at ON nonces (at);
";

/// Schema version 2 on PostgreSQL: its `BIGINT` columns already refuse anything but 64-bit
/// integers (an overflowing expression is an error, never a float); add the range rules.
pub(super) const STRICT_POSTGRES: &str = "
ALTER TABLE accounts ADD CONSTRAINT accounts_balance CHECK (name = 'external' OR balance >= 0);
ALTER TABLE transfers ADD CONSTRAINT transfers_amount CHECK (amount > 0);
ALTER TABLE escrows ADD CONSTRAINT escrows_amounts
    CHECK (limit_amount > 0 AND settled >= 0 AND settled <= limit_amount);
ALTER TABLE slots ADD CONSTRAINT slots_amount CHECK (amount >= 0);
CREATE INDEX nonces_at ON nonces (at);
";
