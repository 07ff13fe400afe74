//! The per-client table: open connections and the upgrade bucket of every client address, shared by all workers.
//!
//! Owns: turning an address into its client key (masked to the configured prefix, IPv4-mapped IPv6 as IPv4),
//! counting a client's connections against its cap, its upgrade bucket, and which entry a new client may take.
//! Does not own: deciding who is exempt, answering the client, or time (callers pass `now`).
//!
//! # Why one process-wide table of atomics
//! SO_REUSEPORT spreads one client's connections over the workers, so a per-worker count would let a client hold
//! `workers ×` its cap, and dividing the cap by the worker count would refuse a client whose connections happened to
//! land on one worker. So there is one table for the process, created at start and kept across reloads (replaced
//! only when `table_size` changes; connections counted in the old table release into it). It is touched only at
//! accept, at an upgrade and at close, never per message, and no operation takes a lock: a slot is two `AtomicU64`s,
//! one packing `tag << 24 | open connections`, one holding the upgrade bucket's state (see [`super::bucket`]),
//! both updated by compare-and-swap. A client's connections on different workers meet in the same slot, so its count
//! is exact, not partitioned.
//!
//! # Bounded memory and eviction
//! The table has a fixed number of slots, grouped in sets of [`WAYS`] (one cache line of count words). A client's key
//! is hashed with a per-process random key (SipHash): its set by the low bits, its 40-bit tag by the high bits, so an
//! attacker can neither aim addresses at one set nor predict collisions. A new client takes a slot of its set only if
//! that slot holds **no open connection**: an entry with live connections is never evicted, so a busy client's count
//! cannot be pushed out and it cannot exceed its cap by being forgotten. Among the free slots, one whose bucket is
//! full again (nothing to forget) is preferred; otherwise the one closest to full. An attacker cycling addresses only
//! ever recycles free slots: memory stays at `table_size` slots whatever it does.
//!
//! When all [`WAYS`] slots of a set hold live connections, the new client is admitted *untracked* (not counted, no
//! upgrade rate) and the event is counted: refusing it would let anyone holding connections from 8 addresses that
//! share a set lock out strangers, while admitting it is still bounded by the global `max_connections`. With the
//! default 65,536 slots and at most 10,000 connections a full set is practically impossible by chance, and the set is
//! unguessable by design.
//!
//! Two different clients whose keys share set and tag (odds 2^-40 per pair of a set) share one count; two first
//! connections of one new client on two workers at the same instant may take two slots of its set — the check sums
//! every slot of the set with the client's tag, so the cap still holds up to that one race.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::bucket::{Nanos, Rate, RetryAfter};

/// Slots per set.
pub(crate) const WAYS: usize = 8;
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Masks that turn an address into its client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefixes {
    pub(crate) v4: u8,
    pub(crate) v6: u8,
}

/// A client's identity in the table: its masked address, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientKey {
    set: usize,
    tag: u64,
}

/// What [`ClientTable::claim`] decided.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Counted in a slot until the [`ClientSlot`] is dropped.
    Counted(ClientSlot),
    /// The client already holds its cap of connections.
    AtCap,
    /// Every slot of the client's set holds live connections: admitted without a per-client count.
    Untracked,
}

/// The table; see the module docs.
pub(crate) struct ClientTable {
    words: Box<[AtomicU64]>,
    tats: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTable")
            .field("slots", &self.words.len())
            .finish()
    }
}

impl ClientTable {
    /// A table of at least `slots` slots (a power of two, at least one set).
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.max(WAYS).next_power_of_two();
        Self {
            words: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            tats: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Slots in the table (what memory it holds: 16 bytes each).
    pub(crate) fn capacity(&self) -> usize {
        self.words.len()
    }

    /// The key of `ip`: IPv4 (and IPv4-mapped IPv6) masked to `prefixes.v4`, IPv6 to `prefixes.v6`.
    pub(crate) fn key(&self, ip: IpAddr, prefixes: Prefixes) -> ClientKey {
        let mut h = self.hasher.build_hasher();
        match ip {
            IpAddr::V4(v4) => mask_v4(u32::from(v4), prefixes.v4, &mut h),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => mask_v4(u32::from(v4), prefixes.v4, &mut h),
                None => {
                    let bits = u128::from(v6);
                    let len = u32::from(prefixes.v6.min(128));
                    let masked = if len == 0 {
                        0
                    } else {
                        bits & (u128::MAX << (128 - len))
                    };
                    (6u8, masked, len).hash(&mut h);
                }
            },
        }
        let hash = h.finish();
        let sets = self.words.len() / WAYS;
        ClientKey {
            set: (hash as usize) & (sets - 1),
            // 40 bits; 0 marks a never-used slot.
            tag: (hash >> COUNT_BITS).max(1),
        }
    }

    /// Counts one more connection of `key` unless it holds `cap` already (`None`: no cap, but counted, for the
    /// upgrade bucket). `now` decides which free slot a new client takes.
    pub(crate) fn claim(self: &Arc<Self>, key: ClientKey, cap: Option<u32>, now: Nanos) -> Claim {
        let cap = cap.map_or(COUNT_MASK, |c| u64::from(c).min(COUNT_MASK));
        let first = key.set * WAYS;
        let set = first..first + WAYS;
        loop {
            let mut mine: Option<(usize, u64)> = None;
            let mut elsewhere = 0;
            // The free slot to take: (index, word, rank); lower rank is better.
            let mut free: Option<(usize, u64, u64)> = None;
            for i in set.clone() {
                let word = self.words[i].load(Ordering::Acquire);
                if word >> COUNT_BITS == key.tag {
                    match mine {
                        None => mine = Some((i, word)),
                        Some(_) => elsewhere += word & COUNT_MASK,
                    }
                } else if word & COUNT_MASK == 0 {
                    // A full bucket (or a never-used slot) forgets nothing; else the sooner full, the better.
                    let tat = self.tats[i].load(Ordering::Relaxed);
                    let rank = tat.saturating_sub(now);
                    if free.is_none_or(|(_, _, r)| rank < r) {
                        free = Some((i, word, rank));
                    }
                }
            }
            if let Some((i, word)) = mine {
                if (word & COUNT_MASK) + elsewhere >= cap {
                    return Claim::AtCap;
                }
                if self.words[i]
                    .compare_exchange(word, word + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Claim::Counted(self.slot(i));
                }
                continue;
            }
            let Some((i, word, _)) = free else {
                return Claim::Untracked;
            };
            if cap == 0 {
                return Claim::AtCap;
            }
            if self.words[i]
                .compare_exchange(
                    word,
                    key.tag << COUNT_BITS | 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                // A new client starts with a full bucket. (A concurrent first upgrade of the same client may read
                // the previous owner's state for this instant: at most one upgrade judged by a stale bucket.)
                self.tats[i].store(0, Ordering::Relaxed);
                return Claim::Counted(self.slot(i));
            }
        }
    }

    fn slot(self: &Arc<Self>, index: usize) -> ClientSlot {
        ClientSlot {
            table: self.clone(),
            index,
        }
    }

    #[cfg(test)]
    /// Open connections counted in every slot.
    fn total(&self) -> u64 {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed) & COUNT_MASK)
            .sum()
    }

    #[cfg(test)]
    /// Open connections counted for `key`.
    fn count(&self, key: ClientKey) -> u64 {
        let first = key.set * WAYS;
        self.words[first..first + WAYS]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .filter(|w| w >> COUNT_BITS == key.tag)
            .map(|w| w & COUNT_MASK)
            .sum()
    }
}

fn mask_v4(bits: u32, prefix: u8, h: &mut impl Hasher) {
    let len = u32::from(prefix.min(32));
    let masked = if len == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - len))
    };
    (4u8, masked, len).hash(h);
}

/// One connection counted for its client, until dropped (exactly one release, on every path).
pub(crate) struct ClientSlot {
    table: Arc<ClientTable>,
    index: usize,
}

impl std::fmt::Debug for ClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSlot")
            .field("index", &self.index)
            .finish()
    }
}

impl ClientSlot {
    /// Takes one upgrade from the client's bucket at `rate`. The bucket is the client's, whatever the route: a
    /// route's own rate says what an upgrade on it costs (its interval) and how far ahead the client may run.
    pub(crate) fn take_upgrade(&self, rate: &Rate, now: Nanos) -> Result<(), RetryAfter> {
        rate.try_take_shared(&self.table.tats[self.index], now)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        // The slot holds at least this connection, so it cannot have been given to another client.
        self.table.words[self.index].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    const P: Prefixes = Prefixes { v4: 32, v6: 64 };

    fn table(slots: usize) -> Arc<ClientTable> {
        Arc::new(ClientTable::new(slots))
    }

    fn counted(c: Claim) -> ClientSlot {
        match c {
            Claim::Counted(s) => s,
            other => panic!("not counted: {other:?}"),
        }
    }

    #[test]
    fn keys_mask_to_the_prefix_and_mapped_ipv6_is_ipv4() {
        let t = table(1024);
        let v4 = |s: &str| t.key(s.parse().unwrap(), P);
        assert_eq!(v4("192.0.2.7"), v4("::ffff:192.0.2.7"));
        assert_ne!(v4("192.0.2.7"), v4("192.0.2.8"));
        assert_eq!(v4("2001:db8:1:2::1"), v4("2001:db8:1:2:ffff::9"));
        assert_ne!(v4("2001:db8:1:2::1"), v4("2001:db8:1:3::1"));
        let p24 = Prefixes { v4: 24, v6: 48 };
        assert_eq!(
            t.key(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), p24),
            t.key(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 200)), p24)
        );
        assert_eq!(
            t.key(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1)),
                p24
            ),
            t.key(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 9, 0, 0, 0, 1)),
                p24
            )
        );
    }

    #[test]
    fn the_cap_holds_and_a_release_frees_a_place() {
        let t = table(64);
        let k = t.key("192.0.2.1".parse().unwrap(), P);
        let a = counted(t.claim(k, Some(2), 0));
        let _b = counted(t.claim(k, Some(2), 0));
        assert!(matches!(t.claim(k, Some(2), 0), Claim::AtCap));
        drop(a);
        let _c = counted(t.claim(k, Some(2), 0));
        assert_eq!(t.count(k), 2);
    }

    #[test]
    fn live_entries_are_never_evicted_and_a_full_set_admits_untracked() {
        // One set: 8 busy clients fill it; a ninth is untracked, and the busy ones keep their counts.
        let t = table(WAYS);
        let keys: Vec<ClientKey> = (0..8u32)
            .map(|i| t.key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), P))
            .collect();
        let held: Vec<ClientSlot> = keys
            .iter()
            .map(|k| counted(t.claim(*k, Some(5), 0)))
            .collect();
        let stranger = t.key("198.51.100.1".parse().unwrap(), P);
        assert!(matches!(t.claim(stranger, Some(5), 0), Claim::Untracked));
        for k in &keys {
            assert_eq!(t.count(*k), 1);
        }
        drop(held);
        let _s = counted(t.claim(stranger, Some(5), 0));
        assert_eq!(t.count(stranger), 1);
    }

    #[test]
    fn a_flooder_keeps_its_bucket_while_free_slots_with_full_buckets_exist() {
        let t = table(WAYS);
        let rate = Rate::new(1, 1);
        let flooder = t.key("203.0.113.9".parse().unwrap(), P);
        let s = counted(t.claim(flooder, None, 0));
        assert!(s.take_upgrade(&rate, 0).is_ok());
        assert!(s.take_upgrade(&rate, 0).is_err());
        drop(s);
        // Seven other clients come and go: they take the never-used slots, not the flooder's.
        for i in 0..7u32 {
            let k = t.key(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)), P);
            drop(counted(t.claim(k, None, 0)));
        }
        let s = counted(t.claim(flooder, None, 1));
        assert!(s.take_upgrade(&rate, 1).is_err(), "its debt was kept");
    }

    #[test]
    fn one_client_over_many_threads_never_exceeds_its_cap() {
        let t = table(1024);
        let k = t.key("192.0.2.77".parse().unwrap(), P);
        let cap = 16;
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (t, peak) = (t.clone(), peak.clone());
                s.spawn(move || {
                    for _ in 0..2000 {
                        if let Claim::Counted(slot) = t.claim(k, Some(cap), 0) {
                            peak.fetch_max(t.count(k), Ordering::Relaxed);
                            drop(slot);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= u64::from(cap));
        assert_eq!(t.total(), 0);
    }

    proptest! {
        /// Any sequence of claims and releases from many addresses: counts match the live slots (nothing goes
        /// negative, nothing leaks), no client exceeds its cap, and the table never grows.
        #[test]
        fn counts_never_leak_and_caps_hold(
            ops in proptest::collection::vec((0u32..40, any::<bool>()), 1..600),
        ) {
            let t = table(64);
            let cap = 3;
            let mut live: Vec<(u32, ClientSlot)> = Vec::new();
            for (who, release) in ops {
                if release {
                    if let Some(pos) = live.iter().position(|(w, _)| *w == who) {
                        live.swap_remove(pos);
                    }
                } else {
                    let k = t.key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + who)), P);
                    match t.claim(k, Some(cap), 0) {
                        Claim::Counted(s) => live.push((who, s)),
                        Claim::AtCap => {
                            let held = live.iter().filter(|(w, _)| *w == who).count();
                            prop_assert_eq!(held, cap as usize);
                        }
                        Claim::Untracked => {}
                    }
                }
                prop_assert_eq!(t.total(), live.len() as u64);
                prop_assert_eq!(t.capacity(), 64);
            }
            live.clear();
            prop_assert_eq!(t.total(), 0);
        }
    }
}
