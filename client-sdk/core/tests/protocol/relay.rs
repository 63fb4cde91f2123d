//! An in-memory relay with the real one's rules (device lists, one-time keys handed out once,
//! per-device mailboxes with seq, delivery receipts on ack, clientMessageId dedup).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::json;
use sotto_client_core::{RelayAnswer, RelayCall, RelayFailure};
use sotto_wire::{
    DeviceBundle, DeviceInfo, DeviceList, DeviceRef, Envelope, EnvelopeKind, KeyCount, PreKey,
    PreKeyBundles, SendMessageResponse, SignedPreKey,
};

#[derive(Debug, Default)]
pub struct Device {
    pub registration_id: u32,
    pub signed: Option<SignedPreKey>,
    pub one_time: VecDeque<PreKey>,
    pub kem: VecDeque<SignedPreKey>,
    pub last_resort: Option<SignedPreKey>,
    pub mailbox: BTreeMap<u64, Envelope>,
    pub next_seq: u64,
}

#[derive(Debug, Default)]
pub struct User {
    pub identity: Option<Vec<u8>>,
    pub devices: BTreeMap<u32, Device>,
}

#[derive(Debug, Default)]
pub struct Relay {
    pub users: HashMap<String, User>,
    pub now: u64,
    pub sent_ids: HashSet<(String, u32, String)>,
    pub next_message: u64,
    /// Every ciphertext accepted, with its destination (for "what the relay stored").
    pub log: Vec<(String, u32, Vec<u8>)>,
    /// Group routing: group id → member user ids (set by the tests, as the relay's group routes
    /// would).
    pub groups: HashMap<String, std::collections::BTreeSet<String>>,
}

fn reject(status: u16, code: &str, body: serde_json::Value) -> RelayFailure {
    RelayFailure::Rejected {
        status,
        code: code.into(),
        body,
        retry_after_secs: None,
    }
}

impl Relay {
    pub fn add_device(&mut self, user: &str, device: u32, registration_id: u32) {
        self.users
            .entry(user.to_owned())
            .or_default()
            .devices
            .insert(
                device,
                Device {
                    registration_id,
                    next_seq: 1,
                    ..Device::default()
                },
            );
    }

    pub fn remove_device(&mut self, user: &str, device: u32) {
        if let Some(u) = self.users.get_mut(user) {
            u.devices.remove(&device);
        }
    }

    pub fn enqueue(&mut self, user: &str, device: u32, mut env: Envelope) {
        if let Some(d) = self
            .users
            .get_mut(user)
            .and_then(|u| u.devices.get_mut(&device))
        {
            env.seq = d.next_seq;
            d.next_seq += 1;
            d.mailbox.insert(env.seq, env);
        }
    }

    pub fn mailbox(&self, user: &str, device: u32) -> Vec<Envelope> {
        self.users
            .get(user)
            .and_then(|u| u.devices.get(&device))
            .map(|d| d.mailbox.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn ack(&mut self, user: &str, device: u32, seq: u64) {
        let Some(env) = self
            .users
            .get_mut(user)
            .and_then(|u| u.devices.get_mut(&device))
            .and_then(|d| d.mailbox.remove(&seq))
        else {
            return;
        };
        if env.kind == EnvelopeKind::Message && env.source_user_id != user {
            let sender = env.source_user_id.clone();
            let devices: Vec<u32> = self
                .users
                .get(&sender)
                .map(|u| u.devices.keys().copied().collect())
                .unwrap_or_default();
            for d in devices {
                let receipt = Envelope {
                    seq: 0,
                    kind: EnvelopeKind::DeliveryReceipt,
                    source_user_id: user.to_owned(),
                    source_device_id: device,
                    server_message_id: env.server_message_id.clone(),
                    client_message_id: env.client_message_id.clone(),
                    server_timestamp: self.now,
                    content: None,
                    group_id: None,
                };
                self.enqueue(&sender, d, receipt);
            }
        }
    }

    pub fn handle(
        &mut self,
        from: (&str, u32),
        call: &RelayCall,
    ) -> Result<RelayAnswer, RelayFailure> {
        match call {
            RelayCall::UploadKeys(up) => {
                let user = self.users.entry(from.0.to_owned()).or_default();
                if let Some(k) = &up.identity_key {
                    user.identity = Some(k.as_bytes().to_vec());
                }
                let d = user
                    .devices
                    .get_mut(&from.1)
                    .ok_or_else(|| reject(401, "unauthorized", json!({})))?;
                if let Some(s) = &up.signed_pre_key {
                    d.signed = Some(s.clone());
                }
                if let Some(list) = &up.pre_keys {
                    d.one_time = list.iter().cloned().collect();
                }
                if let Some(list) = &up.kem_pre_keys {
                    d.kem = list.iter().cloned().collect();
                }
                if let Some(k) = &up.kem_last_resort_key {
                    d.last_resort = Some(k.clone());
                }
                Ok(RelayAnswer::NoContent)
            }
            RelayCall::KeyCount => {
                let d = self
                    .users
                    .get(from.0)
                    .and_then(|u| u.devices.get(&from.1))
                    .ok_or_else(|| reject(401, "unauthorized", json!({})))?;
                Ok(RelayAnswer::KeyCount(KeyCount {
                    count: d.one_time.len() as u32,
                    kem_count: d.kem.len() as u32,
                }))
            }
            RelayCall::FetchBundles { user_id, device_id } => {
                let u = self
                    .users
                    .get_mut(user_id)
                    .ok_or_else(|| reject(404, "no_keys", json!({})))?;
                let identity = u
                    .identity
                    .clone()
                    .ok_or_else(|| reject(404, "no_keys", json!({})))?;
                let mut devices = Vec::new();
                for (id, d) in u.devices.iter_mut() {
                    if device_id.is_some_and(|want| want != *id) {
                        continue;
                    }
                    let Some(signed) = d.signed.clone() else {
                        continue;
                    };
                    devices.push(DeviceBundle {
                        device_id: *id,
                        registration_id: d.registration_id,
                        signed_pre_key: signed,
                        pre_key: d.one_time.pop_front(),
                        kem_pre_key: d.kem.pop_front().or_else(|| d.last_resort.clone()),
                    });
                }
                if devices.is_empty() {
                    return Err(reject(404, "no_keys", json!({})));
                }
                Ok(RelayAnswer::Bundles(PreKeyBundles {
                    user_id: user_id.clone(),
                    identity_key: sotto_wire::Base64(identity),
                    devices,
                }))
            }
            RelayCall::Devices { user_id } => {
                let u = self
                    .users
                    .get(user_id)
                    .ok_or_else(|| reject(404, "unknown_user", json!({})))?;
                Ok(RelayAnswer::Devices(DeviceList {
                    user_id: user_id.clone(),
                    devices: u
                        .devices
                        .iter()
                        .map(|(id, d)| DeviceInfo {
                            device_id: *id,
                            registration_id: d.registration_id,
                            created_at: 0,
                        })
                        .collect(),
                }))
            }
            RelayCall::SendMessage(req) => {
                if !self.users.contains_key(&req.recipient_id) {
                    return Err(reject(404, "unknown_user", json!({})));
                }
                let key = (from.0.to_owned(), from.1, req.client_message_id.clone());
                if self.sent_ids.contains(&key) {
                    return Ok(RelayAnswer::Sent(SendMessageResponse {
                        server_message_id: "dup".into(),
                        server_timestamp: self.now,
                        duplicate: true,
                    }));
                }
                let mut missing = Vec::new();
                let mut extra = Vec::new();
                let mut stale = Vec::new();
                let check = |relay: &Relay,
                             user: &str,
                             skip: Option<u32>,
                             list: &[sotto_wire::OutgoingMessage],
                             missing: &mut Vec<DeviceRef>,
                             extra: &mut Vec<DeviceRef>,
                             stale: &mut Vec<DeviceRef>| {
                    let devices = &relay.users[user].devices;
                    for id in devices.keys() {
                        if Some(*id) != skip && !list.iter().any(|m| m.device_id == *id) {
                            missing.push(DeviceRef {
                                user_id: user.into(),
                                device_id: *id,
                            });
                        }
                    }
                    for m in list {
                        match devices.get(&m.device_id) {
                            None => extra.push(DeviceRef {
                                user_id: user.into(),
                                device_id: m.device_id,
                            }),
                            Some(d) if d.registration_id != m.registration_id => {
                                stale.push(DeviceRef {
                                    user_id: user.into(),
                                    device_id: m.device_id,
                                })
                            }
                            Some(_) => {}
                        }
                    }
                };
                let to_self = req.recipient_id == from.0;
                check(
                    self,
                    &req.recipient_id,
                    to_self.then_some(from.1),
                    &req.messages,
                    &mut missing,
                    &mut extra,
                    &mut stale,
                );
                if !to_self {
                    check(
                        self,
                        from.0,
                        Some(from.1),
                        &req.sync_messages,
                        &mut missing,
                        &mut extra,
                        &mut stale,
                    );
                }
                if !missing.is_empty() || !extra.is_empty() {
                    return Err(reject(
                        409,
                        "mismatched_devices",
                        json!({"code": "mismatched_devices", "message": "",
                               "missingDevices": missing, "extraDevices": extra}),
                    ));
                }
                if !stale.is_empty() {
                    return Err(reject(
                        410,
                        "stale_devices",
                        json!({"code": "stale_devices", "message": "", "staleDevices": stale}),
                    ));
                }
                self.sent_ids.insert(key);
                self.next_message += 1;
                let server_message_id = format!("srv-{}", self.next_message);
                let deliveries: Vec<(String, &sotto_wire::OutgoingMessage)> = req
                    .messages
                    .iter()
                    .map(|m| (req.recipient_id.clone(), m))
                    .chain(req.sync_messages.iter().map(|m| (from.0.to_owned(), m)))
                    .collect();
                let mut queued = Vec::new();
                for (user, m) in deliveries {
                    queued.push((
                        user,
                        m.device_id,
                        Envelope {
                            seq: 0,
                            kind: EnvelopeKind::Message,
                            source_user_id: from.0.to_owned(),
                            source_device_id: from.1,
                            server_message_id: server_message_id.clone(),
                            client_message_id: req.client_message_id.clone(),
                            server_timestamp: self.now,
                            content: Some(m.content.clone()),
                            group_id: None,
                        },
                    ));
                }
                for (user, device, env) in queued {
                    if let Some(c) = &env.content {
                        self.log.push((user.clone(), device, c.as_bytes().to_vec()));
                    }
                    self.enqueue(&user, device, env);
                }
                Ok(RelayAnswer::Sent(SendMessageResponse {
                    server_message_id,
                    server_timestamp: self.now,
                    duplicate: false,
                }))
            }
            RelayCall::SendGroup { group_id, request } => {
                let members = self
                    .groups
                    .get(group_id)
                    .filter(|m| m.contains(from.0))
                    .cloned()
                    .ok_or_else(|| reject(404, "unknown_group", json!({})))?;
                let key = (from.0.to_owned(), from.1, request.client_message_id.clone());
                if !self.sent_ids.insert(key) {
                    return Ok(RelayAnswer::Sent(SendMessageResponse {
                        server_message_id: "dup".into(),
                        server_timestamp: self.now,
                        duplicate: true,
                    }));
                }
                self.next_message += 1;
                let server_message_id = format!("srv-{}", self.next_message);
                let mut targets = Vec::new();
                for user in &members {
                    if let Some(u) = self.users.get(user) {
                        for d in u.devices.keys() {
                            if !(user == from.0 && *d == from.1) {
                                targets.push((user.clone(), *d));
                            }
                        }
                    }
                }
                for (user, device) in targets {
                    self.log
                        .push((user.clone(), device, request.content.as_bytes().to_vec()));
                    self.enqueue(
                        &user,
                        device,
                        Envelope {
                            seq: 0,
                            kind: EnvelopeKind::GroupMessage,
                            source_user_id: from.0.to_owned(),
                            source_device_id: from.1,
                            server_message_id: server_message_id.clone(),
                            client_message_id: request.client_message_id.clone(),
                            server_timestamp: self.now,
                            content: Some(request.content.clone()),
                            group_id: Some(group_id.clone()),
                        },
                    );
                }
                Ok(RelayAnswer::Sent(SendMessageResponse {
                    server_message_id,
                    server_timestamp: self.now,
                    duplicate: false,
                }))
            }
            RelayCall::Ephemeral(_) => Ok(RelayAnswer::NoContent),
            _ => Err(reject(400, "unsupported", json!({}))),
        }
    }
}
