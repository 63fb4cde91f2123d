//! Several clients, the in-memory relay and a virtual clock; faults and a hostile relay on demand.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sotto_client_core::store::{decode_message, tables};
use sotto_client_core::{
    Client, Config, Event, Message, NewAccount, RelayAnswer, RelayCall, RelayFailure, StoreOp,
};
use sotto_crypto::keys::IdentityKeyPair;
use sotto_wire::Envelope;

use crate::relay::Relay;

/// A store that applies the core's writes like the encrypted store does (minus the encryption).
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub rows: BTreeMap<(String, Vec<u8>, u64), Vec<u8>>,
}

impl MemStore {
    pub fn apply(&mut self, ops: Vec<StoreOp>) {
        for op in ops {
            match op {
                StoreOp::Put {
                    table,
                    partition,
                    sort,
                    value,
                } => {
                    self.rows
                        .insert((table.to_owned(), partition, sort), value.to_vec());
                }
                StoreOp::Delete {
                    table,
                    partition,
                    sort,
                } => {
                    self.rows.remove(&(table.to_owned(), partition, sort));
                }
            }
        }
    }

    pub fn restore_rows(&self) -> Vec<(&str, &[u8])> {
        self.rows
            .iter()
            .filter(|((t, _, _), _)| tables::RESTORED.contains(&t.as_str()))
            .map(|((t, _, _), v)| (t.as_str(), v.as_slice()))
            .collect()
    }

    /// A history page: newest first, strictly before `before`.
    pub fn history(&self, partition: &[u8], before: Option<u64>, limit: usize) -> Vec<Message> {
        self.rows
            .iter()
            .filter(|((t, p, s), _)| {
                t == tables::MESSAGES && p == partition && before.is_none_or(|b| *s < b)
            })
            .rev()
            .take(limit)
            .map(|(_, v)| decode_message(v).unwrap())
            .collect()
    }
}

/// A hook that can rewrite the relay's answer to a call (hostile relay).
pub type Tamper = Box<dyn FnMut(&str, &RelayCall, &mut Result<RelayAnswer, RelayFailure>)>;

pub struct Node {
    pub name: String,
    pub user: String,
    pub device: u32,
    pub client: Client,
    pub store: MemStore,
    pub events: Vec<Event>,
    pub online: bool,
    /// Envelopes pushed on the current connection and not yet acked.
    in_flight: Vec<u64>,
    /// Every request this node sent, for checking what left the device.
    pub sent: Vec<RelayCall>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// Per mille of pushed envelopes lost (never reach the client; redelivered on reconnect).
    pub drop: u32,
    /// Per mille pushed twice.
    pub duplicate: u32,
    /// Shuffle each batch.
    pub reorder: bool,
}

pub struct Net {
    pub relay: Relay,
    pub nodes: Vec<Node>,
    pub now: u64,
    pub rng: ChaCha20Rng,
    pub faults: Faults,
    pub tamper: Option<Tamper>,
    pub config: Config,
    seed: u64,
}

impl Net {
    pub fn new(seed: u64) -> Self {
        let now = 1_764_000_000_000;
        Self {
            relay: Relay {
                now,
                ..Relay::default()
            },
            nodes: Vec::new(),
            now,
            rng: ChaCha20Rng::seed_from_u64(seed),
            faults: Faults::default(),
            tamper: None,
            config: Config::default(),
            seed,
        }
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s[0] ^= self.seed as u8;
        s
    }

    /// A new account with its first device; returns the node index.
    pub fn user(&mut self, name: &str) -> usize {
        self.device(name, None)
    }

    /// Another device of `name`'s account, with the identity of node `from` (a linked device).
    pub fn link(&mut self, name: &str, from: usize) -> usize {
        let bytes = self.nodes[from].client.identity_key_pair().to_bytes();
        self.device(name, Some(IdentityKeyPair::from_bytes(&bytes).unwrap()))
    }

    fn device(&mut self, name: &str, identity: Option<IdentityKeyPair>) -> usize {
        let device = self
            .relay
            .users
            .get(name)
            .map(|u| u.devices.keys().max().copied().unwrap_or(0) + 1)
            .unwrap_or(1);
        let registration_id = 1000 + self.nodes.len() as u32;
        self.relay.add_device(name, device, registration_id);
        let seed = self.seed();
        let client = Client::create(
            NewAccount {
                user_id: name.to_owned(),
                device_id: device,
                registration_id,
                identity,
            },
            self.config,
            self.now,
            seed,
        )
        .unwrap();
        self.nodes.push(Node {
            name: format!("{name}.{device}"),
            user: name.to_owned(),
            device,
            client,
            store: MemStore::default(),
            events: Vec::new(),
            online: true,
            in_flight: Vec::new(),
            sent: Vec::new(),
        });
        let i = self.nodes.len() - 1;
        self.run();
        i
    }

    /// Reinstalls a device: a new identity (and registration id) on the same address.
    pub fn reinstall(&mut self, node: usize) {
        let (user, device) = (self.nodes[node].user.clone(), self.nodes[node].device);
        let registration_id = 5000 + node as u32;
        self.relay.add_device(&user, device, registration_id);
        let seed = self.seed();
        self.nodes[node].client = Client::create(
            NewAccount {
                user_id: user,
                device_id: device,
                registration_id,
                identity: None,
            },
            self.config,
            self.now,
            seed,
        )
        .unwrap();
        self.nodes[node].store = MemStore::default();
        self.nodes[node].events.clear();
        self.nodes[node].in_flight.clear();
        self.run();
    }

    /// Rebuilds a node's client from its store (an app restart), dropping its connection.
    pub fn restart(&mut self, node: usize) {
        let seed = self.seed();
        let n = &mut self.nodes[node];
        n.client = Client::restore(n.store.restore_rows(), self.config, seed).unwrap();
        n.in_flight.clear();
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.relay.now = self.now;
        for n in &mut self.nodes {
            n.client.handle_timeout(self.now);
        }
    }

    pub fn set_online(&mut self, node: usize, online: bool) {
        self.nodes[node].online = online;
        if !online {
            self.nodes[node].in_flight.clear();
        }
    }

    /// Runs until nothing moves (bounded).
    pub fn run(&mut self) {
        for _ in 0..200 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                moved |= self.step(i);
            }
            if !moved {
                return;
            }
        }
        panic!("network did not settle");
    }

    fn step(&mut self, i: usize) -> bool {
        let mut moved = false;
        // Requests.
        while let Some(req) = self.nodes[i].client.poll_request() {
            moved = true;
            let (user, device) = (self.nodes[i].user.clone(), self.nodes[i].device);
            self.nodes[i].sent.push(req.call.clone());
            let mut answer = match &req.call {
                RelayCall::Ephemeral(e) => {
                    self.ephemeral(&user, device, e);
                    Ok(RelayAnswer::NoContent)
                }
                call => self.relay.handle((&user, device), call),
            };
            if let Some(t) = self.tamper.as_mut() {
                t(&user, &req.call, &mut answer);
            }
            let now = self.now;
            self.nodes[i].client.handle_response(now, req.id, answer);
        }
        // Deliveries.
        if self.nodes[i].online {
            let (user, device) = (self.nodes[i].user.clone(), self.nodes[i].device);
            let mut batch: Vec<Envelope> = self
                .relay
                .mailbox(&user, device)
                .into_iter()
                .filter(|e| !self.nodes[i].in_flight.contains(&e.seq))
                .collect();
            if self.faults.reorder {
                for k in (1..batch.len()).rev() {
                    let j = (self.rng.next_u32() as usize) % (k + 1);
                    batch.swap(k, j);
                }
            }
            for env in batch {
                moved = true;
                self.nodes[i].in_flight.push(env.seq);
                if self.rng.next_u32() % 1000 < self.faults.drop {
                    continue;
                }
                let copies = if self.rng.next_u32() % 1000 < self.faults.duplicate {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let now = self.now;
                    self.nodes[i].client.handle_envelope(now, env.clone());
                }
            }
        }
        // Commit, then ack.
        let n = &mut self.nodes[i];
        let writes = n.client.take_writes();
        if !writes.is_empty() {
            moved = true;
        }
        n.store.apply(writes);
        let acks = n.client.take_acks();
        while let Some(e) = n.client.poll_event() {
            n.events.push(e);
        }
        let (user, device) = (n.user.clone(), n.device);
        for seq in acks {
            self.relay.ack(&user, device, seq);
        }
        moved
    }

    fn ephemeral(&mut self, from: &str, device: u32, e: &sotto_wire::EphemeralRequest) {
        if let (Some(group), Some(content)) = (&e.group_id, &e.content) {
            let members = self.relay.groups.get(group).cloned().unwrap_or_default();
            let env = sotto_wire::EphemeralEnvelope {
                source_user_id: from.to_owned(),
                source_device_id: device,
                group_id: Some(group.clone()),
                timestamp: e.timestamp,
                content: content.clone(),
            };
            let now = self.now;
            for n in self.nodes.iter_mut() {
                let me = n.user == from && n.device == device;
                if members.contains(&n.user) && !me && n.online {
                    n.client.handle_ephemeral(now, env.clone());
                }
            }
            return;
        }
        let Some(to) = e.recipient_id.clone() else {
            return;
        };
        for m in &e.messages {
            let env = sotto_wire::EphemeralEnvelope {
                source_user_id: from.to_owned(),
                source_device_id: device,
                group_id: None,
                timestamp: e.timestamp,
                content: m.content.clone(),
            };
            let now = self.now;
            for n in self.nodes.iter_mut() {
                if n.user == to && n.device == m.device_id && n.online {
                    n.client.handle_ephemeral(now, env.clone());
                }
            }
        }
    }

    /// Lost connection (in-flight envelopes are pushed again on the next one).
    pub fn reconnect(&mut self, node: usize) {
        self.nodes[node].in_flight.clear();
    }

    pub fn texts(&self, node: usize) -> Vec<String> {
        self.nodes[node]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => m.text.clone(),
                _ => None,
            })
            .collect()
    }

    pub fn take_events(&mut self, node: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[node].events)
    }
}
