//! `meshpay dev`: tools for tests and development. **Not for money.**
//!
//! A development issuer is a key pair kept in plain text in a directory. It signs allowance
//! certificates with no escrow behind them. A wallet accepts them only after its user trusts
//! that issuer's descriptor explicitly; no real issuer's key is involved, so nothing made here
//! can pass for a real issuer's allowance. Real allowances come from the settlement server.

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DescriptorBody, DeviceKey, IssuerDescriptor,
    IssuerSecret, PrintableKey, SealKey, encode,
};
use rand_core::{OsRng, RngCore};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Development tools.
#[derive(Subcommand)]
pub enum Dev {
    /// TEST ONLY: create a development issuer (plain-text key) in DIR.
    IssuerInit {
        /// Directory for `issuer.secret` and `descriptor.cbor`.
        #[arg(long)]
        dir: PathBuf,
        /// Display name.
        #[arg(long, default_value = "Development issuer (not for money)")]
        name: String,
        /// Currency.
        #[arg(long, default_value = "KES")]
        currency: String,
    },
    /// TEST ONLY: sign an allowance for a device with a development issuer, without escrow.
    IssueAllowance {
        /// The development issuer's directory.
        #[arg(long)]
        issuer_dir: PathBuf,
        /// The holder's device key (mpdev1…).
        #[arg(long)]
        holder: String,
        /// Limit in minor units.
        #[arg(long)]
        limit: u64,
        /// Largest single payment [default: the limit].
        #[arg(long)]
        max_payment: Option<u64>,
        /// Currency.
        #[arg(long, default_value = "KES")]
        currency: String,
        /// Start of validity, Unix seconds [default: now - 1 hour].
        #[arg(long)]
        valid_from: Option<u64>,
        /// End of validity, Unix seconds [default: now + 7 days].
        #[arg(long)]
        valid_until: Option<u64>,
        /// Where to write the certificate.
        #[arg(long)]
        out: PathBuf,
    },
}

fn load_issuer(dir: &Path) -> Result<IssuerSecret> {
    let text = std::fs::read_to_string(dir.join("issuer.secret"))
        .with_context(|| format!("no development issuer in {}", dir.display()))?;
    let bytes = hex::decode(text.trim()).context("issuer.secret is not hex")?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("issuer.secret must hold 64 bytes"))?;
    Ok(IssuerSecret::from_bytes(&bytes))
}

/// Runs a dev command.
pub fn run(cmd: Dev) -> Result<()> {
    let now = crate::daemon::now();
    match cmd {
        Dev::IssuerInit {
            dir,
            name,
            currency,
        } => {
            std::fs::create_dir_all(&dir)?;
            let secret_path = dir.join("issuer.secret");
            if secret_path.exists() {
                bail!("{} already holds an issuer", dir.display());
            }
            let issuer = IssuerSecret::generate(&mut OsRng);
            std::fs::write(&secret_path, hex::encode(issuer.to_bytes().as_ref()))?;
            std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600))?;
            let d = IssuerDescriptor::issue(
                &issuer,
                DescriptorBody {
                    version: VERSION,
                    issuer: issuer.id(),
                    seal_key: SealKey::default(),
                    name,
                    currencies: vec![currency],
                    urls: Vec::new(),
                    valid_from: now.saturating_sub(3600),
                    valid_until: now + 365 * 86_400,
                    max_allowance: u64::from(u32::MAX),
                    max_payment: u64::from(u32::MAX),
                },
            );
            meshpay_protocol::decode::<IssuerDescriptor>(&encode(&d))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            std::fs::write(dir.join("descriptor.cbor"), encode(&d))?;
            println!("{}", issuer.id().to_text());
        }
        Dev::IssueAllowance {
            issuer_dir,
            holder,
            limit,
            max_payment,
            currency,
            valid_from,
            valid_until,
            out,
        } => {
            let issuer = load_issuer(&issuer_dir)?;
            let holder = DeviceKey::from_text(&holder)?;
            let mut id = [0u8; 16];
            OsRng.fill_bytes(&mut id);
            let valid_from = valid_from.unwrap_or(now.saturating_sub(3600));
            let valid_until = valid_until.unwrap_or(now + 7 * 86_400);
            let cert = AllowanceCert::issue(
                &issuer,
                AllowanceBody {
                    version: VERSION,
                    id: AllowanceId(id),
                    issuer: issuer.id(),
                    holder,
                    currency,
                    limit,
                    max_payment: max_payment.unwrap_or(limit),
                    valid_from,
                    valid_until,
                    settle_by: valid_until + 7 * 86_400,
                },
            );
            meshpay_protocol::decode::<AllowanceCert>(&encode(&cert))
                .map_err(|e| anyhow::anyhow!("invalid allowance: {e}"))?;
            std::fs::write(&out, encode(&cert))?;
            println!("{}", cert.id().to_hex());
        }
    }
    Ok(())
}
