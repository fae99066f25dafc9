//! `meshpay issuer …` and `meshpay settle …`: running an issuer.

use super::{Clock, Policy, Server, db::Db, http};
use crate::keystore;
use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::{
    DescriptorBody, IssuerDescriptor, IssuerSecret, PrintableKey as _, SealKey, encode,
};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
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
    /// Serve the settlement API. The admin token comes from $MESHPAY_ADMIN_TOKEN.
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
        /// Print one JSON line when ready.
        #[arg(long)]
        json: bool,
    },
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
        json,
    } = cmd;
    let token = std::env::var("MESHPAY_ADMIN_TOKEN").unwrap_or_default();
    if token.len() < 16 {
        bail!("set MESHPAY_ADMIN_TOKEN to a secret of at least 16 characters");
    }
    let (secret, descriptor) = super::load_issuer(&dir, &issuer_passphrase()?)?;
    let url = db.unwrap_or_else(|| format!("sqlite://{}", dir.join("settlement.db").display()));
    let db = Db::open(&url).await?;
    let server = Arc::new(Server::new(
        db,
        secret,
        descriptor,
        Clock::new(test_clock),
        Policy::default(),
    ));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = http::router(http::AppState {
        server: Arc::clone(&server),
        admin_token: Arc::new(token),
    });
    let releaser = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_secs(release_every.max(1)));
            loop {
                tick.tick().await;
                if let Err(e) = server.release_expired().await {
                    tracing::error!(error = %e, "escrow release failed");
                }
            }
        })
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "ready", "url": format!("http://{addr}"), "issuer": server.descriptor.body().issuer.to_text()})
        );
    } else {
        println!(
            "settlement server for {} on http://{addr}",
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    releaser.abort();
    server.db.close().await;
    Ok(())
}
