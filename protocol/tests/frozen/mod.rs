//! Frozen test vectors, shared by the protocol's and the transports' vector tests.

use serde_json::Value;
use std::path::Path;

/// Compares `vector` with the frozen file `<dir>/<name>.json`. A missing file (or
/// `MESHPAY_WRITE_VECTORS` in the environment) writes it and fails, so no vector is accepted
/// unseen.
pub(crate) fn frozen_vector(dir: &Path, name: &str, vector: &Value) {
    let path = dir.join(format!("{name}.json"));
    match std::fs::read_to_string(&path) {
        Ok(s) if std::env::var_os("MESHPAY_WRITE_VECTORS").is_none() => {
            let stored: Value = serde_json::from_str(&s).expect("vector files are JSON");
            assert_eq!(
                &stored, vector,
                "{name}: the code no longer produces the frozen vector"
            );
        }
        _ => {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(vector).expect("JSON") + "\n",
            )
            .expect("write vector");
            panic!("{name}: wrote {}; check it and run again", path.display());
        }
    }
}
