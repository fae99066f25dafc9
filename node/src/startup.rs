//! Starting a node: reading the wallet database, the mesh store and the restore sentinel
//! into the device machine's initial state, and the links' settings.

use crate::actor::settlement_of;
use crate::config::{Config, Home, Sentinel};
use crate::daemon::RunOptions;
use crate::mesh::MeshDisk;
use crate::store::Store;
use meshpay_protocol::DeviceSecret;
use meshpay_protocol::device::{DeviceInit, OpenRequest, ReceivedPayment};
use meshpay_protocol::store::StoreConfig;
use meshpay_protocol::wallet::{RestoreCheck, Wallet};
use meshpay_transports::LinkError;
use meshpay_transports::ble::BleConfig;
use meshpay_transports::p2p::P2pConfig;
use rand_core::{OsRng, RngCore};
use std::time::Duration;

/// Why the node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No wallet in the home.
    #[error("no wallet in {}: run `meshpay init` first (or pass --home)", .0.display())]
    NoWallet(std::path::PathBuf),
    /// The wallet database holds no device key.
    #[error("the wallet has no device key")]
    NoDeviceKey,
    /// The config file.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The wallet database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The passphrase does not open the device key, or its file is damaged.
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    /// The mesh store cannot be opened (or read).
    #[error("cannot open the mesh store {} ({error}); is another meshpay daemon running on this home?", path.display())]
    Mesh {
        /// Its directory.
        path: std::path::PathBuf,
        /// Why.
        error: sled::Error,
    },
    /// The restore sentinel cannot be read or written.
    #[error("the restore sentinel: {0}")]
    Sentinel(std::io::Error),
    /// A listen or peer address does not parse.
    #[error("bad multiaddress {0}: {1}")]
    Address(String, String),
    /// A link did not start.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// What the wallet database holds for the device at start.
pub(crate) async fn load(
    store: &Store,
    secret: DeviceSecret,
    wallet: Wallet,
    sentinel: &Sentinel,
    mesh: meshpay_protocol::store::BundleStore,
) -> Result<DeviceInit, StartError> {
    let sent = store.sent().await?;
    let received = store
        .received()
        .await?
        .into_iter()
        .map(|r| {
            let settlement = r.settlement.as_deref().and_then(settlement_of);
            ReceivedPayment {
                iou: r.iou,
                ack: r.ack,
                settlement,
            }
        })
        .collect();
    let requests = store
        .unpaid_requests()
        .await?
        .into_iter()
        .map(|(request, asked_by, created_at)| OpenRequest {
            request,
            asked_by,
            created_at,
        })
        .collect();
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    Ok(DeviceInit {
        secret,
        wallet,
        spent: sentinel
            .spent()
            .map_err(StartError::Sentinel)?
            .into_iter()
            .collect(),
        issuers: store.issuers().await?,
        certs: store.certs().await?,
        notices: store.notices().await?,
        frauds: store.frauds().await?.into_iter().map(|(p, _)| p).collect(),
        sent,
        received,
        requests,
        store: mesh,
        seed,
        secrets: Box::new(OsRng),
    })
}

/// Opens the mesh store in `home` and loads what it holds.
pub(crate) fn open_mesh(
    home: &Home,
    config: &Config,
    quota_bytes: u64,
) -> Result<(sled::Db, MeshDisk, meshpay_protocol::store::BundleStore), StartError> {
    let failed = |error| StartError::Mesh {
        path: home.mesh(),
        error,
    };
    let db = sled::Config::new()
        .path(home.mesh())
        .cache_capacity(8 << 20)
        .open()
        .map_err(failed)?;
    let (disk, store) = MeshDisk::open(
        &db,
        StoreConfig {
            max_bytes: quota_bytes,
            max_bundles: usize::try_from(quota_bytes / 100).unwrap_or(usize::MAX),
            max_bytes_per_origin: (config.mesh.quota_per_peer_mb << 20).min(quota_bytes),
            issuers: None,
            bodies_in_memory: false,
            accept_messages: false,
        },
    )
    .map_err(failed)?;
    Ok((db, disk, store))
}

pub(crate) fn ble_config(request_timeout: Duration) -> BleConfig {
    BleConfig {
        request_timeout,
        ..BleConfig::default()
    }
}

/// Opens the wallet with its restore check (SPEC.md §7): a wallet that may be a restored copy
/// has every allowance retired, durably, before the sentinel moves.
pub(crate) async fn open_wallet(
    store: &Store,
    sentinel: &Sentinel,
) -> Result<(Wallet, RestoreCheck), StartError> {
    let stored_epoch = store.epoch().await?;
    let sentinel_epoch = sentinel.read().map_err(StartError::Sentinel)?;
    let (wallet, restore) = Wallet::open(stored_epoch, store.allowances().await?, sentinel_epoch);
    if restore == RestoreCheck::Current {
        if sentinel_epoch != Some(wallet.epoch()) {
            sentinel
                .write(wallet.epoch())
                .map_err(StartError::Sentinel)?;
        }
    } else {
        store.retire_all(wallet.epoch()).await?;
        sentinel
            .write(wallet.epoch())
            .map_err(StartError::Sentinel)?;
        tracing::warn!(
            ?restore,
            "this wallet may be a restored copy: every allowance it held is retired; get a fresh allowance online"
        );
    }
    Ok((wallet, restore))
}

/// The libp2p link's settings: the config's, with `meshpay run`'s options over them.
pub(crate) fn p2p_config(config: &Config, opts: &RunOptions) -> Result<P2pConfig, StartError> {
    let mut listen = if opts.listen.is_empty() {
        config.network.listen.clone()
    } else {
        opts.listen.clone()
    };
    listen.dedup();
    let parse = |a: &String| {
        a.parse()
            .map_err(|e| StartError::Address(a.clone(), format!("{e}")))
    };
    Ok(P2pConfig {
        listen: listen.iter().map(parse).collect::<Result<_, _>>()?,
        peers: config
            .network
            .peers
            .iter()
            .chain(&opts.peers)
            .map(parse)
            .collect::<Result<_, _>>()?,
        mdns: config.network.mdns && !opts.no_mdns,
        request_timeout: Duration::from_secs(config.network.request_timeout_secs),
        ..P2pConfig::default()
    })
}
