//! The command line without a daemon: help that teaches, clear one-line errors, `init`.

use std::process::Command;

fn meshpay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshpay"));
    c.env_remove("MESHPAY_HOME")
        .env("MESHPAY_PASSPHRASE", "a passphrase of some length");
    c
}

#[test]
fn help_names_every_command() {
    let out = meshpay().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "init",
        "run",
        "id",
        "peers",
        "request",
        "pay",
        "balance",
        "history",
        "allowance",
        "trust",
    ] {
        assert!(text.contains(cmd), "--help does not mention {cmd}");
    }
}

#[test]
fn commands_without_a_daemon_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = meshpay()
        .arg("--home")
        .arg(dir.path())
        .args(["balance", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no meshpay daemon is running"), "{err}");
}

#[test]
fn init_once_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("w");
    let out = meshpay()
        .arg("--home")
        .arg(&home)
        .args(["init", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["device_key"].as_str().unwrap().starts_with("mpdev1"));
    let db = std::fs::read(home.join("wallet.db")).unwrap();
    // The secret seed never appears in clear.
    assert!(home.join("config.toml").exists());
    let again = meshpay()
        .arg("--home")
        .arg(&home)
        .arg("init")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a wallet"));
    assert!(!db.is_empty());
}

#[test]
fn a_short_passphrase_is_refused_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("w");
    for short in ["", "x", "1234567"] {
        let out = meshpay()
            .arg("--home")
            .arg(&home)
            .args(["init", "--json"])
            .env("MESHPAY_PASSPHRASE", short)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{short:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("at least 8 characters"), "{err}");
        assert!(!home.join("wallet.db").exists(), "nothing is created");
    }
    let out = meshpay()
        .arg("--home")
        .arg(&home)
        .args(["init", "--weak-passphrase", "--json"])
        .env("MESHPAY_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_truncated_wallet_is_never_given_an_empty_schema() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("w");
    let init = |home: &std::path::Path| {
        meshpay()
            .arg("--home")
            .arg(home)
            .args(["init", "--json"])
            .output()
            .unwrap()
    };
    assert!(init(&home).status.success());
    std::fs::write(home.join("wallet.db"), b"").unwrap();
    for extra in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("wallet.db{extra}")));
    }
    let run = meshpay()
        .arg("--home")
        .arg(&home)
        .args(["run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("holds no wallet"), "{err}");
    assert_eq!(
        std::fs::metadata(home.join("wallet.db")).unwrap().len(),
        0,
        "the failed start wrote into the truncated wallet"
    );
    // An empty database whose write-ahead log holds writes is not empty: `init` refuses.
    std::fs::write(home.join("wallet.db-wal"), b"not checkpointed").unwrap();
    let refused = init(&home);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("already holds a wallet"), "{err}");
    assert_eq!(
        std::fs::read(home.join("wallet.db-wal")).unwrap(),
        b"not checkpointed"
    );
    std::fs::remove_file(home.join("wallet.db-wal")).unwrap();
    // The empty file holds nothing to lose: `init` makes a new wallet over it.
    let again = init(&home);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_mistyped_key_is_pointed_at() {
    let out = meshpay()
        .args([
            "check-key",
            "mpdev1xmg2v83egv3gpyszjha64qxlundx4zat8whkcmr4kj834jxe4glq0nv7r7",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("typo"), "{err}");
}

#[test]
fn the_demo_runs_and_catches_the_clone() {
    let out = meshpay().arg("demo").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("alice pays the vendor 1250 for tea: IOU counter 1, acked."),
        "{text}"
    );
    assert!(text.contains("refused (counter_conflict)"), "{text}");
    assert!(text.contains("holds 1 fraud proof"), "{text}");
    let vendor = text.lines().find(|l| l.starts_with("vendor ")).unwrap();
    assert!(vendor.trim_end().ends_with("2850"), "{vendor}");
    // A relay carries the records to the server and the receipts back; copies are purged.
    assert!(text.contains("the gateway uploads 4 records"), "{text}");
    assert!(
        text.contains("the fraud proof also reached alice (1) and bob (1)"),
        "{text}"
    );
    let settled = text
        .lines()
        .rev()
        .find(|l| l.starts_with("vendor "))
        .unwrap();
    let cols: Vec<&str> = settled.split_whitespace().collect();
    assert_eq!(
        &cols[1..3],
        ["4", "0"],
        "vendor: 4 payments settled, 0 records held: {settled}"
    );
    let relay = text
        .lines()
        .rev()
        .find(|l| l.starts_with("relay "))
        .unwrap();
    assert_eq!(relay.split_whitespace().nth(2), Some("0"), "{relay}");
    // The records reach the settlement server and settle once; money is conserved.
    assert!(
        text.contains("4 records settled, 2850 KES paid out"),
        "{text}"
    );
    assert!(
        text.contains("= credited 16000 (conserved: true)"),
        "{text}"
    );
}
