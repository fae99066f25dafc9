//! Host groups, as The ONE's `Group` settings: the nodes of a run split into groups, each with
//! its own name prefix, walking speeds, radio and router.
//!
//! ```toml
//! nodes = 100
//! [[groups]]
//! id = "w"            # walkers: hosts w0..w79
//! nodes = 80
//! [[groups]]
//! id = "t"            # trams: hosts t80..t99, faster, with a longer radio and PRoPHET
//! nodes = 20
//! speed_min = 7.0
//! speed_max = 10.0
//! range_m = 30.0
//! routing = "prophet"
//! ```
//!
//! Hosts are numbered across the groups in order, as in The ONE (`w0`…`w79`, then `t80`…).
//! Every key but `nodes` is optional and falls back to the scenario's own: `speed_min`,
//! `speed_max` and `pause_max_s` to the mobility model's (random waypoint, random walk and
//! map; `speed_max = 0` makes the group stationary: its hosts stay where they start),
//! `range_m` and `bitrate_bps` to `[radio]`, `routing`, `copies` and `buffer_kb` to
//! `[routing]`. Two hosts are in contact within the shorter of their ranges and a link between
//! them runs at the slower of their bit rates, as between The ONE's interfaces. A router is a
//! host's own: a group's hosts route by it whoever they meet (spray-and-wait's copies count
//! from where a message is made).

use crate::mobility::{Leg, uniform};
use crate::scenario::{Scenario, ScenarioError};
use meshpay_protocol::sync::Routing;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// One group of hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Prefix of the group's host names in reports (The ONE's `groupID`).
    #[serde(default = "default_id")]
    pub id: String,
    /// Hosts in the group.
    pub nodes: u32,
    /// Slowest speed, m/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_min: Option<f64>,
    /// Fastest speed, m/s (0: the group stays where it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_max: Option<f64>,
    /// Longest pause, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_max_s: Option<f64>,
    /// Radio range, m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_m: Option<f64>,
    /// Bit rate, bits per second (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_bps: Option<u64>,
    /// Router, by the names `[routing] routing` takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// Copies under spray-and-wait and spray-and-focus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<u32>,
    /// Buffer per host, kilobytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_kb: Option<u64>,
}

fn default_id() -> String {
    "p".into()
}

/// How a group's hosts walk: slowest and fastest speed and longest pause; a fastest speed of
/// 0 keeps them where they start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Walking {
    /// Slowest speed, m/s.
    pub speed_min: f64,
    /// Fastest speed, m/s.
    pub speed_max: f64,
    /// Longest pause, s.
    pub pause_max: f64,
}

impl Walking {
    /// Whether the hosts stay where they start.
    pub fn stationary(&self) -> bool {
        self.speed_max <= 0.0
    }

    /// A leg's speed: uniform between the bounds, or 0 (stay) for a stationary group.
    pub fn speed(&self, rng: &mut ChaCha20Rng) -> f64 {
        if self.stationary() {
            0.0
        } else {
            uniform(rng, self.speed_min, self.speed_max)
        }
    }

    /// A leg to `(x, y)` at a drawn speed, then a drawn pause.
    pub fn leg(&self, rng: &mut ChaCha20Rng, (x, y): (f64, f64), first: bool) -> Leg {
        let speed = self.speed(rng);
        Leg {
            x,
            y,
            speed,
            pause: self.pause(rng, first),
        }
    }

    /// A pause at a leg's end: uniform up to the longest, none before the first leg.
    pub fn pause(&self, rng: &mut ChaCha20Rng, first: bool) -> f64 {
        if first {
            0.0
        } else {
            uniform(rng, 0.0, self.pause_max)
        }
    }
}

/// A group's settings, its own over the scenario's.
#[derive(Debug, Clone)]
pub struct Settled {
    /// Name prefix.
    pub id: String,
    /// Walking, where the mobility model has walkers.
    pub walking: Option<Walking>,
    /// Radio range, m.
    pub range_m: f64,
    /// Bit rate (0: unlimited).
    pub bitrate_bps: u64,
    /// Router.
    pub routing: Routing,
    /// Buffer, kilobytes.
    pub buffer_kb: u64,
}

/// Every host's group and each group's settings.
#[derive(Debug, Clone)]
pub struct Hosts {
    groups: Vec<Settled>,
    group_of: Vec<u32>,
}

impl Hosts {
    /// The hosts of a checked scenario: its groups, or one group `p` of all its nodes.
    pub fn of(s: &Scenario) -> Result<Self, ScenarioError> {
        let bad = |m: String| ScenarioError::Invalid(m);
        let walking = s.mobility.walking();
        let whole = [Group {
            id: default_id(),
            nodes: s.nodes,
            ..Group::default()
        }];
        let list = if s.groups.is_empty() {
            &whole[..]
        } else {
            &s.groups[..]
        };
        let total: u64 = list.iter().map(|g| u64::from(g.nodes)).sum();
        if total != u64::from(s.nodes) {
            return Err(bad(format!(
                "groups: their nodes add up to {total}, but nodes = {}",
                s.nodes
            )));
        }
        let mut groups = Vec::with_capacity(list.len());
        let mut group_of = Vec::with_capacity(s.nodes as usize);
        for (k, g) in list.iter().enumerate() {
            let name = format!("groups[{k}] ({})", g.id);
            if g.id.is_empty() || !g.id.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(bad(format!("{name}: id is one or more ASCII letters")));
            }
            if g.nodes == 0 {
                return Err(bad(format!("{name}: nodes at least 1")));
            }
            let walking = match walking {
                Some(w) => {
                    let w = Walking {
                        speed_min: g.speed_min.unwrap_or(w.speed_min),
                        speed_max: g.speed_max.unwrap_or(w.speed_max),
                        pause_max: g.pause_max_s.unwrap_or(w.pause_max),
                    };
                    let moving = w.speed_min > 0.0 && w.speed_max >= w.speed_min;
                    let still = w.stationary() && w.speed_min >= 0.0;
                    if !(still || moving) || w.pause_max.is_nan() || w.pause_max < 0.0 {
                        return Err(bad(format!(
                            "{name}: 0 < speed_min <= speed_max (or speed_max = 0 to stay), pause_max_s >= 0"
                        )));
                    }
                    Some(w)
                }
                None if g.speed_min.is_some()
                    || g.speed_max.is_some()
                    || g.pause_max_s.is_some() =>
                {
                    return Err(bad(format!(
                        "{name}: speeds and pauses are for random-waypoint, random-walk and map mobility"
                    )));
                }
                None => None,
            };
            let range_m = g.range_m.unwrap_or(s.radio.range_m);
            if !(range_m > 0.0 && range_m.is_finite()) {
                return Err(bad(format!("{name}: range_m > 0")));
            }
            let router = g.routing.as_deref().unwrap_or(&s.routing.routing);
            let copies = g.copies.unwrap_or(s.routing.copies);
            let routing = Routing::named(router, copies, &s.routing.spray_mode)
                .ok_or_else(|| bad(format!("{name}: no router named {router:?}")))?;
            groups.push(Settled {
                id: g.id.clone(),
                walking,
                range_m,
                bitrate_bps: g.bitrate_bps.unwrap_or(s.radio.bitrate_bps),
                routing,
                buffer_kb: g.buffer_kb.unwrap_or(s.routing.buffer_kb),
            });
            let k = u32::try_from(k).expect("fewer groups than nodes");
            group_of.extend(std::iter::repeat_n(k, g.nodes as usize));
        }
        Ok(Self { groups, group_of })
    }

    /// Host `i`'s group settings.
    pub fn of_host(&self, i: u32) -> &Settled {
        &self.groups[self.group_of[i as usize] as usize]
    }

    /// Host `i`'s name, as The ONE writes it (`p12`).
    pub fn name(&self, i: u32) -> String {
        format!("{}{i}", self.of_host(i).id)
    }

    /// Every host's radio range.
    pub fn ranges(&self) -> Vec<f64> {
        self.group_of
            .iter()
            .map(|&g| self.groups[g as usize].range_m)
            .collect()
    }

    /// The bit rate of a link between `a` and `b`: the slower of theirs (0: unlimited).
    pub fn bitrate(&self, a: u32, b: u32) -> u64 {
        match (self.of_host(a).bitrate_bps, self.of_host(b).bitrate_bps) {
            (0, r) | (r, 0) => r,
            (x, y) => x.min(y),
        }
    }
}
