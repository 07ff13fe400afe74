//! Upstream servers written as host names, resolved again while the gateway runs (`resolve_interval`, default
//! 30 s; the system resolver reports no TTL) and on every reload (loading the file resolves them).
//!
//! Owns: deciding which servers changed address ([`refreshed`], sans-IO: the resolver is passed in) and the thread
//! that asks the system resolver and publishes a changed config the way a reload does, so new connections use the
//! new address and live ones keep theirs. Does not own: the first resolution (`ringway_config`), or swapping the
//! config in (each worker's control loop).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ringway_config::Config;

use super::health::HealthBoard;
use crate::runtime::process::{Loaded, ProcessState};

/// `config` with every named server at its current address, and a line per change; `None` when nothing moved.
/// A server whose name does not resolve keeps its address (a resolver hiccup must not empty a pool).
pub(crate) fn refreshed(
    config: &Config,
    resolve: impl Fn(&str, u16) -> Vec<SocketAddr>,
) -> Option<(Config, Vec<String>)> {
    let mut next = config.clone();
    let mut changes = Vec::new();
    for upstream in &mut next.upstreams {
        for server in &mut upstream.servers {
            if !is_name(&server.host) {
                continue;
            }
            let found = resolve(&server.host, server.address.port());
            if found.is_empty() || found.contains(&server.address) {
                continue;
            }
            // Stay in the address family the file resolved to first, if the name still has one there.
            let pick = found
                .iter()
                .find(|a| a.is_ipv4() == server.address.is_ipv4())
                .or_else(|| found.first())
                .copied();
            if let Some(address) = pick {
                changes.push(format!(
                    "{} server {}: {} -> {address}",
                    upstream.name, server.host, server.address
                ));
                server.address = address;
            }
        }
    }
    (!changes.is_empty()).then_some((next, changes))
}

/// Whether `host` is a name the resolver may move (not an IP literal, not `localhost`).
fn is_name(host: &str) -> bool {
    host.parse::<IpAddr>().is_err() && !host.eq_ignore_ascii_case("localhost")
}

/// Whether any upstream server is written as a name to resolve again.
pub(crate) fn has_names(config: &Config) -> bool {
    config
        .upstreams
        .iter()
        .flat_map(|u| &u.servers)
        .any(|s| is_name(&s.host))
}

fn system_resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default()
}

/// Starts the re-resolving thread (only when some server is a name); it ends with the drain.
pub(crate) fn spawn(process: Arc<ProcessState>) {
    if !has_names(&process.loaded().config) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ringway-resolve".into())
        .spawn(move || {
            loop {
                let loaded = process.loaded();
                std::thread::sleep(loaded.config.resolve_interval);
                if process.draining() {
                    return;
                }
                let generation = process.config_generation();
                let loaded = process.loaded();
                let Some((config, changes)) = refreshed(&loaded.config, system_resolve) else {
                    continue;
                };
                let next = Loaded {
                    health: Arc::new(HealthBoard::new(&config, Some(&loaded.health))),
                    limits: Arc::new(crate::limits::SharedLimits::new(
                        &config,
                        Some(&loaded.limits),
                    )),
                    upstream_tls: loaded.upstream_tls.clone(),
                    config: Arc::new(config),
                };
                // A reload that landed meanwhile wins; its own load resolved the names anyway.
                if process.publish_if_current(generation, next) {
                    for change in changes {
                        tracing::info!("upstream address changed: {change}");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the resolver thread; upstream names are resolved on reload only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        ringway_config::parse(
            "listeners: [{name: a, bind: '127.0.0.1:0'}]\n\
             upstreams: {up: {servers: ['127.0.0.1:9000', 'localhost:9001']}}\n\
             routes: [{path: /, upstream: up}]\n",
            "t.yaml",
        )
        .expect("config")
    }

    /// A config whose second server is named `api.internal` (the loader would resolve a real name).
    fn named() -> Config {
        let mut c = config();
        c.upstreams[0].servers[1].host = "api.internal".into();
        c
    }

    #[test]
    fn a_name_that_moved_is_swapped_and_the_rest_stays() {
        let moved: SocketAddr = "10.0.0.9:9001".parse().expect("addr");
        let (next, changes) = refreshed(&named(), |host, port| {
            assert_eq!(
                (host, port),
                ("api.internal", 9001),
                "IP literals are not resolved"
            );
            vec![moved]
        })
        .expect("a change");
        assert_eq!(next.upstreams[0].servers[1].address, moved);
        assert_eq!(
            next.upstreams[0].servers[0].address,
            named().upstreams[0].servers[0].address
        );
        assert_eq!(
            changes,
            vec!["up server api.internal: 127.0.0.1:9001 -> 10.0.0.9:9001".to_owned()]
        );
    }

    #[test]
    fn unchanged_or_unresolvable_names_change_nothing() {
        let current = named().upstreams[0].servers[1].address;
        assert!(
            refreshed(&named(), |_, _| vec![
                current,
                "10.0.0.1:1".parse().expect("a")
            ])
            .is_none()
        );
        assert!(
            refreshed(&named(), |_, _| Vec::new()).is_none(),
            "a failed lookup keeps the address"
        );
        assert!(!has_names(&config()));
        assert!(has_names(&named()));
    }

    #[test]
    fn the_address_family_is_kept_when_the_name_has_both() {
        let v6: SocketAddr = "[2001:db8::1]:9001".parse().expect("v6");
        let v4: SocketAddr = "10.0.0.2:9001".parse().expect("v4");
        let (next, _) = refreshed(&named(), |_, _| vec![v6, v4]).expect("a change");
        assert_eq!(next.upstreams[0].servers[1].address, v4);
    }
}
