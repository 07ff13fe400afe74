//! The route file exactly as written: serde types mirroring the YAML, with every key optional
//! where the file may omit it and every scalar kept as text ([`Scalar`]).
//!
//! This module only decides the *shape* (which keys exist, what is a list or a mapping) and
//! rejects unknown keys. It checks no values and applies no defaults; that is the job of the
//! conversion into the validated types in `lib.rs` ("parse, don't validate").

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::units::Scalar;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub workers: Option<Scalar>,
    pub driver: Option<Scalar>,
    pub listeners: Option<Vec<RawListener>>,
    pub limits: Option<RawLimits>,
    pub upstreams: Option<RawUpstreams>,
    pub routes: Option<Vec<RawRoute>>,
    pub trusted_proxies: Option<Vec<Scalar>>,
    pub admin: Option<RawAdmin>,
    pub drain: Option<RawDrain>,
    pub log_format: Option<Scalar>,
    pub log_interval: Option<Scalar>,
    pub redact_query: Option<Vec<Scalar>>,
    pub resolve_interval: Option<Scalar>,
}

/// `admin:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<Scalar>,
}

/// `drain:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrain {
    pub period: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub close_code: Option<Scalar>,
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Scalar>,
    pub bind: Option<Scalar>,
    pub tls: Option<RawListenerTls>,
    pub redirect_https: Option<Scalar>,
    pub proxy_protocol: Option<Scalar>,
}

/// `tls:` of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub unknown_sni: Option<Scalar>,
    pub min_version: Option<Scalar>,
    pub session_tickets: Option<Scalar>,
    pub session_cache: Option<Scalar>,
    pub client_auth: Option<RawClientAuth>,
}

/// One entry of `tls.certificates:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<Scalar>,
    pub key: Option<Scalar>,
    pub default: Option<Scalar>,
}

/// `tls.client_auth:` of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    pub ca: Option<Scalar>,
    pub mode: Option<Scalar>,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub handshake_timeout: Option<Scalar>,
    pub max_header_bytes: Option<Scalar>,
    pub max_headers: Option<Scalar>,
    pub max_connections: Option<Scalar>,
    pub close_timeout: Option<Scalar>,
    pub body_timeout: Option<Scalar>,
    pub body_min_rate: Option<Scalar>,
    pub proxy_protocol_timeout: Option<Scalar>,
    pub per_client: Option<RawPerClient>,
    pub messages: Option<RawMessageLimits>,
}

/// `limits.per_client:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerClient {
    pub max_connections: Option<Scalar>,
    pub upgrades_per_second: Option<Scalar>,
    pub upgrade_burst: Option<Scalar>,
    pub ipv4_prefix: Option<Scalar>,
    pub ipv6_prefix: Option<Scalar>,
    pub table_size: Option<Scalar>,
    pub exempt: Option<Vec<Scalar>>,
}

/// `limits:` of a route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    pub per_client: Option<RawRoutePerClient>,
}

/// `limits.per_client:` of a route: what a route may set for itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutePerClient {
    pub upgrades_per_second: Option<Scalar>,
    pub upgrade_burst: Option<Scalar>,
}

/// `limits.messages:` (the default for every WebSocket route) and `websocket.limits:` of a route (its override).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessageLimits {
    pub from_client: Option<RawRateLimit>,
    pub from_upstream: Option<RawRateLimit>,
}

/// One direction's rates in `limits.messages:` or `websocket.limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub messages_per_second: Option<Scalar>,
    pub message_burst: Option<Scalar>,
    pub bytes_per_second: Option<Scalar>,
    pub byte_burst: Option<Scalar>,
    pub on_excess: Option<Scalar>,
}

/// `upstreams:`, a mapping from name to pool, in file order.
#[derive(Debug, Default)]
pub struct RawUpstreams(pub Vec<(String, RawUpstream)>);

/// One upstream pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Option<Vec<RawServer>>,
    pub balance: Option<Scalar>,
    pub hash_key: Option<Scalar>,
    pub connect_timeout: Option<Scalar>,
    pub fail_cooldown: Option<Scalar>,
    pub max_attempts: Option<Scalar>,
    pub tls: Option<RawUpstreamTls>,
    pub health: Option<RawHealth>,
}

/// `health:` of an upstream pool (active checks).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(rename = "type")]
    pub kind: Option<Scalar>,
    pub path: Option<Scalar>,
    pub interval: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub healthy_after: Option<Scalar>,
    pub unhealthy_after: Option<Scalar>,
}

/// `tls:` of an upstream pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub server_name: Option<Scalar>,
    pub ca: Option<Scalar>,
    pub insecure_skip_verify: Option<Scalar>,
}

/// One server: either the short form `127.0.0.1:9001` or `{ address, weight }`.
#[derive(Debug)]
pub struct RawServer {
    pub address: Option<Scalar>,
    pub weight: Option<Scalar>,
    pub max_connections: Option<Scalar>,
}

/// The long form of a server entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerLong {
    address: Option<Scalar>,
    weight: Option<Scalar>,
    max_connections: Option<Scalar>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Scalar>,
    pub path: Option<Scalar>,
    pub header: Option<RawHeader>,
    pub upstream: Option<Scalar>,
    pub echo: Option<Scalar>,
    pub websocket: Option<RawWebSocket>,
    pub client_cert_header: Option<Scalar>,
    /// `auth:` (its shape lives with its conversion, in `crate::auth`).
    pub auth: Option<crate::auth::RawAuth>,
    pub limits: Option<RawRouteLimits>,
}

/// `header: { name, value }` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: Option<Scalar>,
    pub value: Option<Scalar>,
}

/// `websocket:` of a route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub idle_timeout: Option<Scalar>,
    pub ping_interval: Option<Scalar>,
    pub pong_timeout: Option<Scalar>,
    pub max_frame_size: Option<Scalar>,
    pub max_message_size: Option<Scalar>,
    pub allowed_origins: Option<Vec<Scalar>>,
    pub allowed_subprotocols: Option<Vec<Scalar>>,
    pub validate_utf8: Option<Scalar>,
    pub limits: Option<RawMessageLimits>,
}

impl<'de> Deserialize<'de> for RawUpstreams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUpstreams;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from upstream name to upstream")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawUpstreams, E> {
                Ok(RawUpstreams::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawUpstreams, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<Scalar>()? {
                    let upstream = map.next_value::<RawUpstream>()?;
                    out.push((name.0, upstream));
                }
                Ok(RawUpstreams(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "`host:port` or a mapping with `address`, `weight` and `max_connections`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServer, E> {
                Ok(RawServer {
                    address: Some(Scalar(v.to_owned())),
                    weight: None,
                    max_connections: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
                let long = RawServerLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawServer {
                    address: long.address,
                    weight: long.weight,
                    max_connections: long.max_connections,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}
