//! Scenario files (TOML): who moves how, what radios they have, what traffic they send, and
//! how the mesh routes it. Every key has a default; `sim/scenarios/` has examples.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of every random choice (mobility, traffic, keys, session salts).
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Number of nodes.
    pub nodes: u32,
    /// Where contacts come from.
    pub mobility: Mobility,
    /// The radio every node has.
    pub radio: Radio,
    /// Traffic.
    pub workload: Workload,
    /// Routing and buffers.
    pub routing: RoutingConfig,
    /// The payments workload.
    pub payments: Payments,
    /// Host groups with their own speeds, radio and router ([`crate::groups`]); none: one
    /// group of all the nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<crate::groups::Group>,
}

/// The payments workload: vendors, gateways and shoppers with real wallets (node indices in
/// that order); the last `clones` shoppers are copies of the first ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Payments {
    /// Run it.
    pub enabled: bool,
    /// Vendors.
    pub vendors: u32,
    /// Gateways (nodes that reach the issuer).
    pub gateways: u32,
    /// Chance that a shopper meeting a vendor pays.
    pub pay_prob: f64,
    /// Smallest payment.
    pub amount_min: u64,
    /// Largest payment.
    pub amount_max: u64,
    /// Each shopper's allowance.
    pub allowance: u64,
    /// Cloned wallets.
    pub clones: u32,
}

impl Default for Payments {
    fn default() -> Self {
        Self {
            enabled: false,
            vendors: 10,
            gateways: 2,
            pay_prob: 0.5,
            amount_min: 50,
            amount_max: 500,
            allowance: 50_000,
            clones: 0,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "scenario".into(),
            seed: 1,
            duration_s: 43_200.0,
            nodes: 100,
            mobility: Mobility::default(),
            radio: Radio::default(),
            workload: Workload::default(),
            routing: RoutingConfig::default(),
            payments: Payments::default(),
            groups: Vec::new(),
        }
    }
}

/// Where contacts come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Mobility {
    /// Random waypoint (Johnson and Maltz 1996, as in The ONE): each node walks at a uniform
    /// random speed to a uniform random point, pauses a uniform random time, and again.
    RandomWaypoint {
        /// Width of the area in metres.
        width_m: f64,
        /// Height of the area in metres.
        height_m: f64,
        /// Slowest speed, m/s.
        speed_min: f64,
        /// Fastest speed, m/s.
        speed_max: f64,
        /// Longest pause at a waypoint, s.
        pause_max_s: f64,
        /// Time resolution of the contacts, s: they come up and go down at multiples of it, as
        /// a scan this often would see them (they are solved from the legs, so a finer step
        /// costs no time).
        step_s: f64,
        /// Seconds the nodes walk before the run starts (The ONE's `MovementModel.warmup`):
        /// the run begins with them spread as random waypoint leaves them, not uniformly.
        #[serde(default)]
        warmup_s: f64,
    },
    /// Random walk (as The ONE's `RandomWalk`): each leg goes from where the node is, in a
    /// uniform random direction, a uniform random distance up to `distance_max_m`, redrawn
    /// until it ends inside the area; then a uniform random pause.
    RandomWalk {
        /// Width of the area in metres.
        width_m: f64,
        /// Height of the area in metres.
        height_m: f64,
        /// Slowest speed, m/s.
        speed_min: f64,
        /// Fastest speed, m/s.
        speed_max: f64,
        /// Longest leg, m (The ONE's default: 50).
        distance_max_m: f64,
        /// Longest pause after a leg, s.
        pause_max_s: f64,
        /// Time resolution of the contacts, s: they come up and go down at multiples of it, as
        /// a scan this often would see them (they are solved from the legs, so a finer step
        /// costs no time).
        step_s: f64,
        /// Seconds the nodes walk before the run starts.
        #[serde(default)]
        warmup_s: f64,
    },
    /// Shortest paths on a road map (The ONE's `ShortestPathMapBasedMovement`): each node
    /// starts at a random map point, walks the shortest path to another at a uniform random
    /// speed, pauses a uniform random time, and again. Maps are The ONE's WKT files
    /// (`LINESTRING`, `MULTILINESTRING`), Helsinki's included, read as one map.
    Map {
        /// The WKT files.
        files: Vec<PathBuf>,
        /// Slowest speed, m/s.
        speed_min: f64,
        /// Fastest speed, m/s.
        speed_max: f64,
        /// Longest pause at a destination, s.
        pause_max_s: f64,
        /// Time resolution of the contacts, s: they come up and go down at multiples of it, as
        /// a scan this often would see them (they are solved from the legs, so a finer step
        /// costs no time).
        step_s: f64,
        /// Seconds the nodes walk before the run starts.
        #[serde(default)]
        warmup_s: f64,
    },
    /// A market day. Nodes in the order of `[payments]`: vendors sit at stalls laid out on a
    /// grid in the market; gateways stand at the place with signal, `signal_distance_m` east
    /// of the market; the first `agents` shoppers walk between the market and the signal and
    /// wait there; the other shoppers walk from stall to stall and browse.
    Market {
        /// Market width, m.
        width_m: f64,
        /// Market depth, m.
        height_m: f64,
        /// From the market's east edge to the place with signal, m.
        signal_distance_m: f64,
        /// Shoppers who commute to the signal instead of shopping.
        agents: u32,
        /// Slowest walking speed, m/s.
        speed_min: f64,
        /// Fastest walking speed, m/s.
        speed_max: f64,
        /// Longest stay at a stall, s.
        browse_max_s: f64,
        /// How long an agent stays at the signal, s.
        agent_wait_s: f64,
        /// Time step, s.
        step_s: f64,
    },
    /// Contacts replayed from a file in The ONE's connection-event format
    /// (`<time> CONN <host1> <host2> [<interface>] up|down`, the state in either case).
    Trace {
        /// The trace file.
        path: PathBuf,
    },
}

/// The settings every walker model shares: speeds, pauses, the time step and the warm-up.
fn check_walkers(
    speed_min: f64,
    speed_max: f64,
    pause_max_s: f64,
    step_s: f64,
    warmup_s: f64,
) -> Result<(), ScenarioError> {
    let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
    if !(warmup_s.is_finite() && warmup_s >= 0.0) {
        return bad("warmup_s: 0 or more seconds");
    }
    if !(speed_min > 0.0 && speed_max >= speed_min) {
        return bad("speeds: 0 < speed_min <= speed_max");
    }
    if pause_max_s.is_nan() || pause_max_s < 0.0 || step_s.is_nan() || step_s <= 0.0 {
        return bad("pause_max_s >= 0 and step_s > 0");
    }
    Ok(())
}

impl Mobility {
    /// How walkers walk, for the models that have them (random waypoint, random walk, map).
    pub fn walking(&self) -> Option<crate::groups::Walking> {
        match self {
            Mobility::RandomWaypoint {
                speed_min,
                speed_max,
                pause_max_s,
                ..
            }
            | Mobility::RandomWalk {
                speed_min,
                speed_max,
                pause_max_s,
                ..
            }
            | Mobility::Map {
                speed_min,
                speed_max,
                pause_max_s,
                ..
            } => Some(crate::groups::Walking {
                speed_min: *speed_min,
                speed_max: *speed_max,
                pause_max: *pause_max_s,
            }),
            Mobility::Market { .. } | Mobility::Trace { .. } => None,
        }
    }
}

impl Default for Mobility {
    fn default() -> Self {
        Mobility::RandomWaypoint {
            width_m: 1000.0,
            height_m: 1000.0,
            speed_min: 0.5,
            speed_max: 1.5,
            pause_max_s: 120.0,
            step_s: 1.0,
            warmup_s: 0.0,
        }
    }
}

/// A radio profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Radio {
    /// Range in metres.
    pub range_m: f64,
    /// Application throughput, bits per second (0: unlimited).
    pub bitrate_bps: u64,
    /// Seconds from coming into range to the first byte (discovery, connection, handshake).
    pub setup_s: f64,
    /// Fraction of frames lost on the air (0 to 0.9). The link layer resends them, so a
    /// link carries `1 − loss` of its bit rate.
    pub loss: f64,
    /// `"half"`: a node's radio sends or receives, one message at a time, whatever the
    /// number of peers in range (BLE and Wi-Fi radios are half-duplex); `"full"`: it sends
    /// one message and receives another at the same time.
    pub duplex: Duplex,
    /// Whether the sync messages' own bytes (reconciliation, want lists, hand-over receipts)
    /// take air time. `false` counts only the bundles, as The ONE models a link.
    pub control_on_air: bool,
}

/// Whether a radio sends and receives at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Duplex {
    /// One message at a time, either way.
    #[default]
    Half,
    /// One message out and one in at a time.
    Full,
}

impl Default for Radio {
    fn default() -> Self {
        Self {
            range_m: 10.0,
            bitrate_bps: 250_000,
            setup_s: 1.0,
            loss: 0.0,
            duplex: Duplex::Half,
            control_on_air: true,
        }
    }
}

impl Radio {
    /// A Bluetooth LE-like radio: 10 m, 100 kbit/s of application data, 2 s to connect.
    ///
    /// The figures match the node's BLE link on its emulated radio
    /// (`cargo bench -p meshpay-transports --bench ble`): over a 100 kbit/s radio the framed,
    /// encrypted link delivers 93–94 kbit/s at ATT MTU 185–247 (67 at MTU 23), and the Noise
    /// handshake with a first payment takes 0.2–0.3 s, well inside the connection set-up.
    pub fn ble() -> Self {
        Self {
            range_m: 10.0,
            bitrate_bps: 100_000,
            setup_s: 2.0,
            loss: 0.05,
            duplex: Duplex::Half,
            control_on_air: true,
        }
    }

    /// A Wi-Fi-like radio: 50 m, 5 Mbit/s, 1 s to associate.
    pub fn wifi() -> Self {
        Self {
            range_m: 50.0,
            bitrate_bps: 5_000_000,
            setup_s: 1.0,
            loss: 0.02,
            duplex: Duplex::Half,
            control_on_air: true,
        }
    }
}

/// Traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Plain unicast messages between random pairs, one after each gap, as The ONE's
    /// `MessageEventGenerator` draws them: whole-second bounds give whole seconds from `min`
    /// up to but not including `max`; other bounds a uniform draw between them.
    pub messages: bool,
    /// Shortest gap between two messages, s.
    pub interval_min_s: f64,
    /// Longest gap between two messages, s.
    pub interval_max_s: f64,
    /// Message size in bytes, exactly: up to 981 the one bundle's encoded size; larger
    /// messages (to 16 MiB) travel in bundles of at most 981 bytes and arrive with the last.
    pub size: u32,
    /// Message lifetime, s (0: the whole run).
    pub ttl_s: f64,
    /// Messages from a trace in The ONE's format (`<time> C <msgId> <from> <to> <size>`)
    /// instead of generated ones.
    pub trace: Option<PathBuf>,
    /// Stop creating messages after this many seconds (0: until the end).
    pub until_s: f64,
    /// Each generated message asks for a response of this many bytes (0: none): its
    /// destination sends one back on delivery, `R_<id>`, as The ONE's request messages do,
    /// and the report's `response_prob` and `rtt_*` measure them. A message trace gives it
    /// per message (an optional last column).
    pub response_size: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            messages: true,
            interval_min_s: 25.0,
            interval_max_s: 35.0,
            size: 500,
            ttl_s: 0.0,
            trace: None,
            until_s: 0.0,
            response_size: 0,
        }
    }
}

/// Routing and buffers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
// The forwarding switches are independent options, one key each in the file.
#[allow(clippy::struct_excessive_bools)]
pub struct RoutingConfig {
    /// "epidemic" (meshpay's own, the default), "spray-and-wait", "direct", "prophet"
    /// (PRoPHET with Lindgren's and The ONE's parameters: `P_init` 0.75, β 0.25, γ 0.98 per
    /// 30 s), "spray-and-focus" (binary spray of `copies`, then the last copy goes to a
    /// peer with a greater PRoPHET predictability for the destination) or "maxprop" (MaxProp:
    /// copies as epidemic, what the peer is the destination of first, then by hop count under
    /// the adaptive threshold, then by path cost over the exchanged meeting likelihoods; the
    /// destination's signed acknowledgements delete the copies they reach).
    pub routing: String,
    /// Copies under spray-and-wait and spray-and-focus.
    pub copies: u32,
    /// How spray-and-wait shares copies: "binary" (a holder of `n > 1` gives half, so relays
    /// spray too) or "source" (only the source gives, one copy a peer; relays wait).
    pub spray_mode: String,
    /// Buffer per node, kilobytes.
    pub buffer_kb: u64,
    /// 0: a node that takes something new syncs again at once with every peer in range (as
    /// The ONE's routers do); otherwise peers in range sync again every `resync_s` seconds,
    /// as `meshpay run` does (`[mesh] sync_secs`). Dense crowds need the latter.
    pub resync_s: f64,
    /// Most bundles one sync message carries (0: as many as fit in a message, about 1.7 kB).
    /// A link that goes down loses the message on the air: with 1, only its one bundle.
    pub bundles_per_message: u32,
    /// Order of what a peer lacks: "meshpay" (urgent kinds first, then oldest made),
    /// "fifo" (first come, first sent) or "random" (a fresh order each session).
    pub order: String,
    /// Deliver before relaying, both ways: hand a peer what it is the destination of first,
    /// and relay only once the peer has nothing left for this node (The ONE's routers
    /// exchange deliverable messages before any other).
    pub destination_first: bool,
    /// The side relaying keeps the link until it has nothing more for its peer, then the
    /// other side relays (The ONE's routers start their next transfer as soon as one ends).
    pub keep_link: bool,
    /// A message that reached its destination is handed on from there too.
    pub relay_delivered: bool,
    /// Spray-and-wait halves a holder's copies on a hand-over to the destination too.
    pub halve_to_destination: bool,
    /// When a buffer is full: "meshpay" (refuse a newcomer rather than evict, with fair
    /// shares per sender), "oldest" (drop what arrived first, as The ONE does) or "maxprop"
    /// (drop what MaxProp would send last: the most hops or the costliest destination, as
    /// The ONE's `MaxPropRouter` does).
    pub drop: String,
}

impl RoutingConfig {
    /// The sessions' forwarding policy, if `order` is known.
    pub fn policy(&self) -> Option<meshpay_protocol::sync::Policy> {
        use meshpay_protocol::sync::{Order, Policy};
        Some(Policy {
            per_message: self.bundles_per_message,
            order: match self.order.as_str() {
                "meshpay" => Order::Priority,
                "fifo" => Order::Fifo,
                "random" => Order::Random,
                _ => return None,
            },
            destination_first: self.destination_first,
            keep_link: self.keep_link,
            relay_delivered: self.relay_delivered,
            halve_to_destination: self.halve_to_destination,
        })
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            routing: "epidemic".into(),
            copies: 6,
            spray_mode: "binary".into(),
            buffer_kb: 5 * 1024,
            resync_s: 0.0,
            bundles_per_message: 0,
            order: "meshpay".into(),
            destination_first: false,
            keep_link: false,
            relay_delivered: true,
            halve_to_destination: false,
            drop: "meshpay".into(),
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file does not parse.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses a scenario file's text and checks its values.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// Checks the mobility model's ranges.
    fn check_mobility(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if let Mobility::Market {
            width_m,
            height_m,
            speed_min,
            speed_max,
            step_s,
            ..
        } = &self.mobility
        {
            if !(*width_m > 0.0
                && *height_m > 0.0
                && *speed_min > 0.0
                && speed_max >= speed_min
                && *step_s > 0.0)
            {
                return bad("market: positive sizes, 0 < speed_min <= speed_max, step_s > 0");
            }
        }
        match &self.mobility {
            Mobility::RandomWaypoint {
                width_m,
                height_m,
                speed_min,
                speed_max,
                pause_max_s,
                step_s,
                warmup_s,
            }
            | Mobility::RandomWalk {
                width_m,
                height_m,
                speed_min,
                speed_max,
                pause_max_s,
                step_s,
                warmup_s,
                ..
            } => {
                if !(*width_m > 0.0 && *height_m > 0.0) {
                    return bad("width_m and height_m: positive");
                }
                check_walkers(*speed_min, *speed_max, *pause_max_s, *step_s, *warmup_s)?;
                if let Mobility::RandomWalk { distance_max_m, .. } = &self.mobility
                    && (distance_max_m.is_nan() || *distance_max_m <= 0.0)
                {
                    return bad("distance_max_m: positive");
                }
            }
            Mobility::Map {
                files,
                speed_min,
                speed_max,
                pause_max_s,
                step_s,
                warmup_s,
            } => {
                if files.is_empty() {
                    return bad("map: at least one file");
                }
                check_walkers(*speed_min, *speed_max, *pause_max_s, *step_s, *warmup_s)?;
            }
            Mobility::Market { .. } | Mobility::Trace { .. } => {}
        }
        Ok(())
    }

    /// Checks ranges.
    pub fn check(&self) -> Result<(), ScenarioError> {
        self.check_hosts().map(drop)
    }

    /// Checks ranges, and returns the hosts' settings it settled on the way.
    pub(crate) fn check_hosts(&self) -> Result<crate::groups::Hosts, ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if self.nodes < 2 {
            return bad("nodes: at least 2");
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 {
            return bad("duration_s: positive");
        }
        self.check_mobility()?;
        if self.radio.range_m.is_nan()
            || self.radio.range_m <= 0.0
            || self.radio.setup_s < 0.0
            || !(0.0..=0.9).contains(&self.radio.loss)
        {
            return bad("radio: range_m > 0, setup_s >= 0, 0 <= loss <= 0.9");
        }
        let w = &self.workload;
        if w.messages
            && w.trace.is_none()
            && !(w.interval_min_s > 0.0 && w.interval_max_s >= w.interval_min_s)
        {
            return bad("workload: 0 < interval_min_s <= interval_max_s");
        }
        if w.response_size != 0 && !(86..=crate::setup::MAX_MESSAGE).contains(&w.response_size) {
            return bad("workload.response_size: 0 (none), or 86 bytes to 16 MiB");
        }
        if !(86..=crate::setup::MAX_MESSAGE).contains(&w.size) {
            return bad(
                "workload.size: 86 bytes to 16 MiB (over 981 bytes, a message travels in several bundles)",
            );
        }
        let p = &self.payments;
        if p.enabled
            && (p.vendors == 0
                || p.vendors + p.gateways >= self.nodes
                || !(0.0..=1.0).contains(&p.pay_prob)
                || p.amount_min == 0
                || p.amount_max < p.amount_min
                || p.allowance < p.amount_max)
        {
            return bad(
                "payments: vendors >= 1, vendors + gateways < nodes, 0 <= pay_prob <= 1, 1 <= amount_min <= amount_max <= allowance",
            );
        }
        if !matches!(self.routing.drop.as_str(), "meshpay" | "oldest" | "maxprop") {
            return bad("routing.drop: \"meshpay\", \"oldest\" or \"maxprop\"");
        }
        if self.routing.policy().is_none() {
            return bad("routing.order: \"meshpay\", \"fifo\" or \"random\"");
        }
        if !matches!(self.routing.spray_mode.as_str(), "binary" | "source") {
            return bad("routing.spray_mode: \"binary\" or \"source\"");
        }
        if self.routing().is_none() {
            return bad(
                "routing: \"epidemic\", \"spray-and-wait\", \"direct\", \"prophet\", \"spray-and-focus\" or \"maxprop\"",
            );
        }
        if !self.groups.is_empty() && matches!(self.mobility, Mobility::Market { .. }) {
            return bad("groups: not with market mobility, whose roles are its own");
        }
        crate::groups::Hosts::of(self)
    }

    /// The routing choice.
    pub fn routing(&self) -> Option<meshpay_protocol::sync::Routing> {
        let r = &self.routing;
        meshpay_protocol::sync::Routing::named(&r.routing, r.copies, &r.spray_mode)
    }
}
