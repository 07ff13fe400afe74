//! Connections the gateway holds to each upstream server, counted across workers, for `servers[].max_connections`.
//!
//! Owns: one `AtomicU32` per (pool name, server address), created on the main thread for each config and carried
//! over by a reload or a re-resolve for the servers it keeps (so connections opened under the previous config still
//! count and still release into the same counter). Does not own: the cap's policy (the balancer skips full servers
//! and counts through its guards) or any I/O.
//!
//! Why shared atomics rather than a per-worker share of the cap: a pool's connections are few and long-lived
//! (WebSockets), so dividing a cap of, say, 100 over 8 workers would refuse a worker's 13th connection while the
//! server has room for 87 more. One counter per server costs one atomic add at connect and one at close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use ringway_config::Config;

/// One pool's counters: its name and, per server (indexed like its `servers`), the address and the counter.
type PoolCounts = (String, Vec<(SocketAddr, Arc<AtomicU32>)>);

/// Per pool (indexed like `config.upstreams`): the open-connection counter of each server.
#[derive(Debug, Default)]
pub(crate) struct ServerCounts {
    pools: Vec<PoolCounts>,
}

impl ServerCounts {
    /// Counters for `config`'s servers; servers `previous` also had (same pool name and address) keep theirs.
    pub(crate) fn new(config: &Config, previous: Option<&ServerCounts>) -> Self {
        let pools = config
            .upstreams
            .iter()
            .map(|u| {
                let servers = u
                    .servers
                    .iter()
                    .map(|s| {
                        let kept = previous.and_then(|p| p.get(&u.name, s.address));
                        (s.address, kept.unwrap_or_default())
                    })
                    .collect();
                (u.name.clone(), servers)
            })
            .collect();
        Self { pools }
    }

    fn get(&self, pool: &str, address: SocketAddr) -> Option<Arc<AtomicU32>> {
        self.pools
            .iter()
            .find(|(name, _)| name == pool)?
            .1
            .iter()
            .find(|(a, _)| *a == address)
            .map(|(_, c)| c.clone())
    }

    /// The counters of pool `pool`, indexed like its servers (empty for an unknown pool).
    pub(crate) fn pool(&self, pool: usize) -> Vec<Arc<AtomicU32>> {
        self.pools
            .get(pool)
            .map(|(_, s)| s.iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn config(servers: &str) -> Config {
        ringway_config::parse(
            &format!(
                "listeners: [{{name: p, bind: 127.0.0.1:8080}}]\nupstreams:\n  u:\n    servers: [{servers}]\n\
                 routes: [{{upstream: u}}]\n"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn a_reload_keeps_the_counters_of_the_servers_it_keeps() {
        let first = ServerCounts::new(&config("127.0.0.1:1, 127.0.0.1:2"), None);
        first.pool(0)[1].store(5, Ordering::Relaxed);
        let next = ServerCounts::new(&config("127.0.0.1:2, 127.0.0.1:3"), Some(&first));
        let counters = next.pool(0);
        assert_eq!(counters[0].load(Ordering::Relaxed), 5);
        assert!(Arc::ptr_eq(&counters[0], &first.pool(0)[1]));
        assert_eq!(counters[1].load(Ordering::Relaxed), 0);
        assert!(next.pool(7).is_empty());
    }
}
