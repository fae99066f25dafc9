//! `meshpay issuer …` and `meshpay settle …`: running an issuer. The server itself is the
//! `meshpay-settle` crate; this is its command line (built with the `settle` feature).

use crate::keystore;
use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::{
    DescriptorBody, IssuerDescriptor, IssuerSecret, PrintableKey as _, SealKey, decode, encode,
};
use meshpay_settle::db::Db;
use meshpay_settle::http::UploadLimits;
use meshpay_settle::httpd::{self, ServeLimits};
use meshpay_settle::{Clock, JunkBudget, Policy, RiskRules, Server, serve};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Issuer key management.
#[derive(Subcommand)]
pub enum IssuerCmd {
    /// Create an issuer: keys sealed under a passphrase ($MESHPAY_ISSUER_PASSPHRASE) in
    /// DIR/issuer.key, and the signed descriptor in DIR/descriptor.cbor.
    Init {
        /// Directory for the issuer's files.
        #[arg(long)]
        dir: PathBuf,
        /// Display name.
        #[arg(long, default_value = "meshpay issuer")]
        name: String,
        /// Currency issued (repeatable).
        #[arg(long, default_values_t = ["KES".to_owned()])]
        currency: Vec<String>,
        /// Public URL of the settlement server (repeatable).
        #[arg(long)]
        url: Vec<String>,
        /// Largest allowance, in minor units.
        #[arg(long, default_value_t = 1_000_000)]
        max_allowance: u64,
        /// Largest single payment, in minor units.
        #[arg(long, default_value_t = 100_000)]
        max_payment: u64,
        /// Days the descriptor is valid.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

/// Running the settlement server.
#[derive(Subcommand)]
pub enum SettleCmd {
    /// Serve the settlement API and the issuer console (/console). The admin token comes from
    /// $MESHPAY_ADMIN_TOKEN; the console signs in with it.
    ///
    /// The risk rules' alerts show in the console, in GET /admin/risk and as the gauge
    /// meshpay_risk_alerts{rule} on /metrics. Fraud proofs, revocations and allowances near
    /// their limit are read from the database; velocity, forked payees and sources of junk are
    /// counted in memory, over the last hour, and start empty when the server starts.
    Serve {
        /// The issuer's directory (from `meshpay issuer init`).
        #[arg(long)]
        dir: PathBuf,
        /// Database: sqlite://PATH (default: DIR/settlement.db) or postgres://…
        #[arg(long)]
        db: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Seconds between escrow releases.
        #[arg(long, default_value_t = 60)]
        release_every: u64,
        /// TEST ONLY: let the admin API set the server's clock.
        #[arg(long)]
        test_clock: bool,
        /// Serve HTTPS with this certificate chain (PEM; the server's certificate first).
        /// Without it the server speaks plain HTTP: put it behind a TLS reverse proxy then
        /// (docs/api.md, "Deployment").
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Most connections open at once (also kept under the open-file limit).
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Most connections open at once from one address.
        #[arg(long, default_value_t = 64)]
        max_connections_per_source: usize,
        /// Seconds a client has to send a request's headers (also the keep-alive idle time):
        /// slower clients are disconnected.
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        header_timeout: u64,
        /// Uploads judged at once (CPU work and database writes); more wait in a short queue.
        #[arg(long, default_value_t = 2)]
        settle_concurrency: usize,
        /// Uploads being read or waiting to be judged, in all (each holds up to 2 MiB); past
        /// it, uploads get 503 with Retry-After.
        #[arg(long, default_value_t = 32)]
        uploads_in_flight: usize,
        /// … and from one address (behind a reverse proxy every gateway shares the proxy's).
        #[arg(long, default_value_t = 4)]
        uploads_per_source: usize,
        /// Inputs that do not open (not a record of this issuer, forged ciphertext) one
        /// source may upload in a burst, then per second; past it its uploads get 429.
        #[arg(long, default_value_t = 1024)]
        junk_burst: u32,
        /// … refilled at this many a second.
        #[arg(long, default_value_t = 128)]
        junk_per_sec: u32,
        /// Risk rule `velocity`: alert when one allowance settles at least this many payments
        /// within an hour, as seen at settlement (a cloned or stolen wallet spends fast).
        /// 0 turns it off.
        #[arg(long, value_name = "PAYMENTS", default_value_t = RiskRules::default().velocity_payments)]
        risk_velocity_payments: u64,
        /// Risk rule `velocity`, by value: alert when one allowance settles at least this many
        /// minor units within an hour. 0 turns it off.
        #[arg(long, value_name = "MINOR_UNITS", default_value_t = RiskRules::default().velocity_value)]
        risk_velocity_value: u64,
        /// Risk rule `near_limit`: alert when an allowance still open has settled at least this
        /// percent of its limit (its escrow is nearly spent; past it the next IOUs are
        /// refused `over_limit`). 1 to 100; 0 turns it off.
        #[arg(long, value_name = "PERCENT", default_value_t = RiskRules::default().near_limit_percent,
            value_parser = clap::value_parser!(u64).range(0..=100))]
        risk_near_limit_percent: u64,
        /// Risk rule `junk_source`: alert when one source uploads at least this many inputs
        /// that do not open (not a record of this issuer, or forged) within an hour. Alerts
        /// only: --junk-burst is what refuses such a source. 0 turns it off.
        #[arg(long, value_name = "INPUTS", default_value_t = RiskRules::default().junk_per_hour)]
        risk_junk_per_hour: u64,
        /// Print one JSON line when ready.
        #[arg(long)]
        json: bool,
    },
}

/// Reads the issuer's files in `dir`: `issuer.key` (sealed) and `descriptor.cbor`.
pub fn load_issuer(dir: &Path, passphrase: &str) -> Result<(IssuerSecret, IssuerDescriptor)> {
    let blob = std::fs::read(dir.join("issuer.key")).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (create it with `meshpay issuer init`)",
            dir.join("issuer.key").display()
        )
    })?;
    let secret = IssuerSecret::from_bytes(&*keystore::open::<64>(&blob, passphrase)?);
    let descriptor: IssuerDescriptor = decode(&std::fs::read(dir.join("descriptor.cbor"))?)
        .map_err(|e| anyhow::anyhow!("descriptor.cbor: {e}"))?;
    if descriptor.body().issuer != secret.id() {
        bail!("descriptor.cbor belongs to another issuer than issuer.key");
    }
    Ok((secret, descriptor))
}

fn issuer_passphrase() -> Result<String> {
    if let Ok(p) = std::env::var("MESHPAY_ISSUER_PASSPHRASE") {
        return Ok(p);
    }
    rpassword::prompt_password("issuer passphrase: ")
        .context("set MESHPAY_ISSUER_PASSPHRASE for scripts")
}

/// Runs `meshpay issuer …`.
pub fn issuer(cmd: IssuerCmd) -> Result<()> {
    match cmd {
        IssuerCmd::Init {
            dir,
            name,
            currency,
            url,
            max_allowance,
            max_payment,
            days,
        } => {
            if dir.join("issuer.key").exists() {
                bail!("{} already holds an issuer", dir.display());
            }
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            let pass = issuer_passphrase()?;
            crate::cli::check_passphrase(&pass, false)?;
            let secret = IssuerSecret::generate(&mut rand_core::OsRng);
            let now = crate::daemon::now();
            let d = IssuerDescriptor::issue(
                &secret,
                DescriptorBody {
                    version: VERSION,
                    issuer: secret.id(),
                    seal_key: SealKey::default(),
                    name,
                    currencies: currency,
                    urls: url,
                    valid_from: now.saturating_sub(3600),
                    valid_until: now + days * 86_400,
                    max_allowance,
                    max_payment,
                },
            );
            meshpay_protocol::decode::<IssuerDescriptor>(&encode(&d))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let blob =
                keystore::seal(secret.to_bytes().as_ref(), &pass, keystore::Cost::default())?;
            std::fs::write(dir.join("issuer.key"), blob)?;
            std::fs::set_permissions(
                dir.join("issuer.key"),
                std::fs::Permissions::from_mode(0o600),
            )?;
            std::fs::write(dir.join("descriptor.cbor"), encode(&d))?;
            println!("{}", secret.id().to_text());
            Ok(())
        }
    }
}

/// Runs `meshpay settle …`.
pub async fn settle(cmd: SettleCmd) -> Result<()> {
    let SettleCmd::Serve {
        dir,
        db,
        listen,
        release_every,
        test_clock,
        tls_cert,
        tls_key,
        max_connections,
        max_connections_per_source,
        header_timeout,
        settle_concurrency,
        uploads_in_flight,
        uploads_per_source,
        junk_burst,
        junk_per_sec,
        risk_velocity_payments,
        risk_velocity_value,
        risk_near_limit_percent,
        risk_junk_per_hour,
        json,
    } = cmd;
    let token = std::env::var("MESHPAY_ADMIN_TOKEN").unwrap_or_default();
    if token.len() < 16 {
        bail!("set MESHPAY_ADMIN_TOKEN to a secret of at least 16 characters");
    }
    let tls = match (&tls_cert, &tls_key) {
        (Some(c), Some(k)) => Some(httpd::tls_acceptor(c, k)?),
        _ => None,
    };
    let (secret, descriptor) = load_issuer(&dir, &issuer_passphrase()?)?;
    let url = db.unwrap_or_else(|| format!("sqlite://{}", dir.join("settlement.db").display()));
    let db = Db::open(&url)
        .await
        .with_context(|| format!("cannot open the settlement database {}", redact(&url)))?;
    let mut server = Server::new(
        db,
        secret,
        descriptor,
        Clock::new(test_clock),
        Policy::default(),
    );
    server.junk = JunkBudget::new(junk_burst, junk_per_sec);
    server.set_risk_rules(RiskRules {
        velocity_payments: risk_velocity_payments,
        velocity_value: risk_velocity_value,
        near_limit_percent: risk_near_limit_percent,
        junk_per_hour: risk_junk_per_hour,
    });
    let server = Arc::new(server);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "ready", "url": format!("{scheme}://{addr}"), "issuer": server.descriptor.body().issuer.to_text()})
        );
    } else {
        println!(
            "settlement server for {} on {scheme}://{addr}",
            server.descriptor.body().issuer.to_text()
        );
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let options = serve::Options {
        admin_token: token,
        limits: ServeLimits {
            max_connections,
            max_per_source: max_connections_per_source,
            header_timeout: std::time::Duration::from_secs(header_timeout.max(1)),
            ..ServeLimits::default()
        },
        uploads: UploadLimits {
            judged: settle_concurrency.max(1),
            in_flight: uploads_in_flight.max(1),
            in_flight_per_source: uploads_per_source.max(1),
        },
        release_every: std::time::Duration::from_secs(release_every.max(1)),
        tls,
    };
    serve::run(server, listener, options, shutdown).await?;
    Ok(())
}

/// A database URL with its password hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
