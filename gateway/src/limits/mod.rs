//! Limits on who may open what: per client address (connections, upgrade rate) and per upstream server
//! (connections), counted across workers.
//!
//! Owns: the token bucket ([`bucket`], also for per-connection rates), the process-wide per-client table
//! ([`clients`]), the per-server connection counters ([`servers`]), and [`SharedLimits`], the part of them a config
//! generation carries (kept across reloads). Does not own: answering refused clients (`crate::conn`, `crate::ws`) or
//! choosing servers (`crate::upstream::balancer`, which reads the server counters).

pub(crate) mod bucket;
pub(crate) mod clients;
pub(crate) mod servers;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ringway_config::{Config, UpgradeRate};

use bucket::{Nanos, Rate, RetryAfter};
use clients::{Claim, ClientSlot, ClientTable, Prefixes};
use servers::ServerCounts;

/// The limit state all workers share for one config generation.
#[derive(Debug)]
pub(crate) struct SharedLimits {
    /// The per-client table: the same table across reloads unless `table_size` changes.
    pub(crate) clients: Arc<ClientTable>,
    pub(crate) servers: ServerCounts,
}

impl SharedLimits {
    /// The state for `config`, keeping `previous`'s table (if its size still fits) and its servers' counters.
    pub(crate) fn new(config: &Config, previous: Option<&SharedLimits>) -> Self {
        let want = config.limits.per_client.table_size;
        let clients = match previous {
            Some(p) if p.clients.capacity() == ClientTable::new_capacity(want) => p.clients.clone(),
            _ => Arc::new(ClientTable::new(want)),
        };
        Self {
            clients,
            servers: ServerCounts::new(config, previous.map(|p| &p.servers)),
        }
    }
}

impl ClientTable {
    /// The capacity a table asked for `slots` gets.
    pub(crate) fn new_capacity(slots: usize) -> usize {
        slots.max(clients::WAYS).next_power_of_two()
    }
}

/// What the per-client check at accept decided.
#[derive(Debug)]
pub(crate) enum ClientAdmission {
    /// Counted against the client until the slot is dropped; `None`: not counted (an exempt peer, or no
    /// per-client limit configured).
    Admitted(Option<ClientSlot>),
    /// The client's set of the table is full of live entries (see [`clients`]): admitted, not counted.
    Untracked,
    /// The client holds its `max_connections` already.
    AtCap(u32),
}

/// Counts a new connection from `ip` against its per-client cap. Exempt peers (`limits.per_client.exempt`,
/// `trusted_proxies`: they speak for many clients) and a config with neither a cap nor any upgrade rate are not
/// counted.
pub(crate) fn admit_client(
    config: &Config,
    table: &Arc<ClientTable>,
    ip: IpAddr,
) -> ClientAdmission {
    let per = &config.limits.per_client;
    let rated = per.upgrades.is_some() || config.routes.iter().any(|r| r.upgrade_rate.is_some());
    if (per.max_connections == 0 && !rated)
        || per.exempt.iter().any(|n| n.contains(&ip))
        || config.trusted_proxies.iter().any(|n| n.contains(&ip))
    {
        return ClientAdmission::Admitted(None);
    }
    let prefixes = Prefixes {
        v4: per.ipv4_prefix,
        v6: per.ipv6_prefix,
    };
    let key = table.key(ip, prefixes);
    let cap = (per.max_connections > 0).then_some(per.max_connections);
    match table.claim(key, cap, now_nanos()) {
        Claim::Counted(slot) => ClientAdmission::Admitted(Some(slot)),
        Claim::AtCap => ClientAdmission::AtCap(per.max_connections),
        Claim::Untracked => ClientAdmission::Untracked,
    }
}

/// Takes one upgrade at `rate` for the client of `slot` (no slot: not limited).
pub(crate) fn take_upgrade(
    slot: Option<&ClientSlot>,
    rate: Option<UpgradeRate>,
) -> Result<(), RetryAfter> {
    match (slot, rate) {
        (Some(slot), Some(r)) => {
            slot.take_upgrade(&Rate::new(r.per_second.get(), r.burst.get()), now_nanos())
        }
        _ => Ok(()),
    }
}

/// The upgrade rate of a client the connection does not stand for: behind a trusted proxy the connection is the
/// proxy's (exempt), and the client is the one its `X-Forwarded-For` names (`Forwarding::client`). Its table entry
/// is found (or taken, as for a new connection) just for the bucket and let go at once: it holds no connection.
pub(crate) fn take_forwarded_upgrade(
    config: &Config,
    table: &Arc<ClientTable>,
    client: IpAddr,
    rate: Option<UpgradeRate>,
) -> Result<(), RetryAfter> {
    let Some(r) = rate else {
        return Ok(());
    };
    let per = &config.limits.per_client;
    if per.exempt.iter().any(|n| n.contains(&client))
        || config.trusted_proxies.iter().any(|n| n.contains(&client))
    {
        return Ok(());
    }
    let key = table.key(
        client,
        Prefixes {
            v4: per.ipv4_prefix,
            v6: per.ipv6_prefix,
        },
    );
    let now = now_nanos();
    match table.claim(key, None, now) {
        Claim::Counted(slot) => {
            slot.take_upgrade(&Rate::new(r.per_second.get(), r.burst.get()), now)
        }
        Claim::AtCap | Claim::Untracked => Ok(()),
    }
}

/// Nanoseconds since the process's first call: the epoch every shared bucket is kept in.
pub(crate) fn now_nanos() -> Nanos {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
