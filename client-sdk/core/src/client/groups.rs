//! Groups: a verified roster announced end to end by admins, Sender Keys for the messages.
//!
//! The relay keeps a group's membership for routing and fans one Sender-Key ciphertext out to
//! every member device. What a device *trusts* is separate: the roster, roles and name arrive only
//! as [`GroupChange`] contents inside 1:1 sessions, from a member the device's roster already
//! lists as admin (or, for a group the device does not know yet, from the admin the change itself
//! names). Sender keys go only to that roster's members; a user only the relay lists gets the
//! fanned-out ciphertext but no key. Rotation: whenever someone leaves the roster, every remaining
//! member's device starts a fresh sender-key chain and hands it to the remaining members only.
//! The format is in `docs/sdk.md` ("Groups").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::sender_key::{
    GroupId, SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord, SenderKeyState,
};
use sotto_wire::{Base64, Envelope, GroupChange as RelayChange, GroupEvent, GroupSendRequest};
use zeroize::Zeroizing;

use super::{json, seen_key, Client, OutboxItem, Pending};
use crate::model::{
    AttachmentPointer, Conversation, ConversationId, Event, GroupInfo, GroupMemberInfo, SendFailure,
};
use crate::payload::{check_text, Body, Payload, VERSION};
use crate::requests::RelayCall;
use crate::store::{tables, StoreOp};

/// Most members of a roster (the relay's default group size limit).
pub const MAX_GROUP_MEMBERS: usize = 1_000;
/// Most groups a device keeps (a stranger can name this account in a group; past this, changes
/// about groups it does not know yet are dropped).
pub const MAX_GROUPS: usize = 1_000;
/// Most sender keys kept for groups this device does not know (yet).
const MAX_STRAY_SENDER_KEYS: usize = 256;
/// A sender-key request for one (group, sender device) goes out at most once per this long, and
/// one from a requesting device is answered at most once per this long.
const KEY_REQUEST_EVERY_MS: u64 = 60_000;
/// Most sender-key requests sent, and answered, per [`KEY_REQUEST_EVERY_MS`] in all: a relay
/// that invents devices or envelopes cannot make a device flood its contacts.
const MAX_KEY_REQUESTS: usize = 32;

/// When sender-key requests were sent and answered lately, by (group, user, device).
#[derive(Debug, Default)]
pub(super) struct KeyRequests {
    sent: BTreeMap<(String, String, u32), u64>,
    answered: BTreeMap<(String, String, u32), u64>,
}

impl KeyRequests {
    /// Whether one more for `key` may go now (and records it if so).
    fn allow(
        log: &mut BTreeMap<(String, String, u32), u64>,
        key: (String, String, u32),
        now_ms: u64,
    ) -> bool {
        log.retain(|_, at| now_ms.saturating_sub(*at) < KEY_REQUEST_EVERY_MS);
        if log.contains_key(&key) || log.len() >= MAX_KEY_REQUESTS {
            return false;
        }
        log.insert(key, now_ms);
        true
    }
}
/// Most characters of a group name.
pub const MAX_GROUP_NAME_CHARS: usize = 100;
/// Most characters of a group description.
pub const MAX_GROUP_DESCRIPTION_CHARS: usize = 500;
/// Largest group avatar (an image attachment).
pub const MAX_GROUP_AVATAR_BYTES: u64 = 5 * 1024 * 1024;

/// Why a group operation was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// This device knows no such group (or this account is no longer a member).
    #[error("unknown group")]
    UnknownGroup,
    /// Only admins may change the roster, roles or name.
    #[error("only a group admin can do this")]
    NotAdmin,
    /// A group name must be 1-100 characters.
    #[error("a group name must be 1 to 100 characters")]
    InvalidName,
    /// A group description is at most 500 characters.
    #[error("a group description is at most 500 characters")]
    InvalidDescription,
    /// A group avatar is an image of at most 5 MB.
    #[error("a group avatar is an image of at most 5 MB")]
    InvalidAvatar,
    /// A member id is not a valid user id, is this account, or the roster would be too big.
    #[error("invalid member list")]
    InvalidMembers,
    /// The user is not in the roster.
    #[error("not a member of this group")]
    UnknownMember,
    /// The group id is not a valid relay group id.
    #[error("invalid group id")]
    InvalidGroupId,
}

/// A group change as it travels inside a 1:1 session (`Body::GroupChange.change`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub(crate) enum GroupChange {
    /// The whole roster after an admin's change (create, add, remove, role, rename).
    State {
        /// The group.
        group_id: String,
        /// Strictly greater than the receiver's current revision.
        revision: u64,
        /// 1-100 characters.
        name: String,
        /// Every member with its role (`true` = admin), at most [`MAX_GROUP_MEMBERS`].
        members: Vec<(String, bool)>,
        /// 0-500 characters (absent: none).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
        /// The group's picture: an image attachment (absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<Box<AttachmentPointer>>,
    },
    /// The sender leaves the group.
    Leave {
        /// The group.
        group_id: String,
    },
}

/// One group's state on this device.
// No Debug: it holds this device's sender-key secret.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Group {
    pub(crate) group_id: String,
    pub(crate) name: String,
    pub(crate) revision: u64,
    /// Verified roster: user id → admin.
    pub(crate) members: BTreeMap<String, bool>,
    pub(crate) active: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) avatar: Option<AttachmentPointer>,
    /// This device's outbound sender-key state (secret; sealed by the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sender_key: Option<Base64>,
    /// Devices (this account's included) whose relay-accepted 1:1 messages carried the current
    /// chain.
    #[serde(default)]
    pub(crate) distributed: BTreeSet<(String, u32)>,
    /// Users the relay says it added that no admin announced (yet): reported to the app when
    /// this device next sends to the group, if still unannounced.
    #[serde(default)]
    pub(crate) relay_only: BTreeSet<String>,
}

fn valid_group_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && GroupId::new(id.as_bytes().to_vec()).is_ok()
}

fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    n > 0 && n <= MAX_GROUP_NAME_CHARS
}

fn valid_description(description: &str) -> bool {
    description.chars().count() <= MAX_GROUP_DESCRIPTION_CHARS
}

fn valid_avatar(avatar: &AttachmentPointer) -> bool {
    avatar.size > 0
        && avatar.size <= MAX_GROUP_AVATAR_BYTES
        && avatar.content_type.starts_with("image/")
        && avatar.content_type.len() <= 100
        && !avatar.attachment_id.is_empty()
        && avatar.attachment_id.len() <= 128
        && avatar.key.len() == 64
        && avatar.digest.len() == 64
        && avatar.file_name.len() <= 255
}

pub(super) fn sender_key_partition(group: &str, user: &str, device: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(group.len() + user.len() + 6);
    p.extend_from_slice(group.as_bytes());
    p.push(0);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.extend_from_slice(&device.to_be_bytes());
    p
}

/// A stored received sender key: whose it is, and the record.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SenderKeyRow {
    pub(crate) group_id: String,
    pub(crate) user_id: String,
    pub(crate) device_id: u32,
    pub(crate) record: Base64,
}

impl Group {
    /// The whole state, as an admin (or this account's own device) announces it.
    fn state_change(&self) -> GroupChange {
        GroupChange::State {
            group_id: self.group_id.clone(),
            revision: self.revision,
            name: self.name.clone(),
            members: self.members.iter().map(|(u, a)| (u.clone(), *a)).collect(),
            description: self.description.clone(),
            avatar: self.avatar.clone().map(Box::new),
        }
    }

    fn info(&self) -> GroupInfo {
        GroupInfo {
            group_id: self.group_id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            avatar: self.avatar.clone(),
            members: self
                .members
                .iter()
                .map(|(u, admin)| GroupMemberInfo {
                    user_id: u.clone(),
                    admin: *admin,
                })
                .collect(),
            revision: self.revision,
            active: self.active,
        }
    }
}

impl Client {
    /// The groups this device knows, with their verified rosters.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups.values().map(Group::info).collect()
    }

    /// One group.
    pub fn group(&self, group_id: &str) -> Option<GroupInfo> {
        self.groups.get(group_id).map(Group::info)
    }

    /// The relay created the group `group_id` with this account as admin (the runtime called
    /// `POST /api/groups`): records the roster (this account as admin plus `members`) and
    /// announces it, end to end, to every member and to this account's other devices.
    pub fn group_created(
        &mut self,
        now_ms: u64,
        group_id: &str,
        members: &[String],
        name: &str,
    ) -> Result<(), GroupError> {
        if !valid_group_id(group_id) {
            return Err(GroupError::InvalidGroupId);
        }
        if !valid_name(name) {
            return Err(GroupError::InvalidName);
        }
        let roster = self.checked_members(members)?;
        let mut g = Group {
            group_id: group_id.to_owned(),
            name: name.to_owned(),
            revision: 1,
            members: roster.into_iter().map(|u| (u, false)).collect(),
            active: true,
            ..Group::default()
        };
        g.members.insert(self.user_id.clone(), true);
        self.groups.insert(group_id.to_owned(), g);
        self.announce(now_ms, group_id, &[]);
        Ok(())
    }

    /// The relay added `users` (this account is admin): announces the new roster.
    pub fn group_members_added(
        &mut self,
        now_ms: u64,
        group_id: &str,
        users: &[String],
    ) -> Result<(), GroupError> {
        self.require_admin(group_id)?;
        let users = self.checked_members(users)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        if g.members.len() + users.len() > MAX_GROUP_MEMBERS {
            return Err(GroupError::InvalidMembers);
        }
        for u in users {
            g.members.entry(u).or_insert(false);
        }
        g.revision += 1;
        self.announce(now_ms, group_id, &[]);
        Ok(())
    }

    /// The relay removed `user` (this account is admin): announces the roster without them (to
    /// them too, so their devices know) and rotates this device's sender key.
    pub fn group_member_removed(
        &mut self,
        now_ms: u64,
        group_id: &str,
        user: &str,
    ) -> Result<(), GroupError> {
        self.require_admin(group_id)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        if user == self.user_id || g.members.remove(user).is_none() {
            return Err(GroupError::UnknownMember);
        }
        g.revision += 1;
        self.rotate_sender_key(group_id);
        self.announce(now_ms, group_id, &[user.to_owned()]);
        Ok(())
    }

    /// The relay changed `user`'s role (this account is admin): announces it.
    pub fn group_role_set(
        &mut self,
        now_ms: u64,
        group_id: &str,
        user: &str,
        admin: bool,
    ) -> Result<(), GroupError> {
        self.require_admin(group_id)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        let Some(role) = g.members.get_mut(user) else {
            return Err(GroupError::UnknownMember);
        };
        *role = admin;
        g.revision += 1;
        self.announce(now_ms, group_id, &[]);
        Ok(())
    }

    /// Renames the group (admins only). The name travels only end to end.
    pub fn rename_group(
        &mut self,
        now_ms: u64,
        group_id: &str,
        name: &str,
    ) -> Result<(), GroupError> {
        if !valid_name(name) {
            return Err(GroupError::InvalidName);
        }
        self.require_admin(group_id)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        g.name = name.to_owned();
        g.revision += 1;
        self.announce(now_ms, group_id, &[]);
        Ok(())
    }

    /// Sets the group's description (admins only; 0-500 characters, empty clears it). It
    /// travels only end to end.
    pub fn set_group_description(
        &mut self,
        now_ms: u64,
        group_id: &str,
        description: &str,
    ) -> Result<(), GroupError> {
        if !valid_description(description) {
            return Err(GroupError::InvalidDescription);
        }
        self.require_admin(group_id)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        g.description = description.to_owned();
        g.revision += 1;
        self.announce(now_ms, group_id, &[]);
        Ok(())
    }

    /// Sets (or with `None` clears) the group's avatar: an image attachment already uploaded
    /// (admins only). The pointer, with the key that opens the blob, travels only end to end.
    pub fn set_group_avatar(
        &mut self,
        now_ms: u64,
        group_id: &str,
        avatar: Option<AttachmentPointer>,
    ) -> Result<(), GroupError> {
        if avatar.as_ref().is_some_and(|a| !valid_avatar(a)) {
            return Err(GroupError::InvalidAvatar);
        }
        self.require_admin(group_id)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        g.avatar = avatar;
        g.revision += 1;
        self.announce(now_ms, group_id, &[]);
        Ok(())
    }

    /// This account left the group (the runtime called `DELETE .../leave`): tells the members
    /// and this account's other devices, and forgets the sender keys.
    pub fn group_left(&mut self, now_ms: u64, group_id: &str) -> Result<(), GroupError> {
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownGroup)?;
        if !g.active {
            return Err(GroupError::UnknownGroup);
        }
        g.active = false;
        let me = self.user_id.clone();
        g.members.remove(&me);
        g.sender_key = None;
        g.distributed.clear();
        let others: Vec<String> = g.members.keys().cloned().collect();
        let change = GroupChange::Leave {
            group_id: group_id.to_owned(),
        };
        let body = Body::GroupChange {
            change: serde_json::to_string(&change).unwrap_or_default(),
        };
        for peer in others.iter().chain(std::iter::once(&me)) {
            let id = self.new_id();
            self.enqueue_group_item(now_ms, peer, id, body.clone(), group_id);
        }
        self.forget_sender_keys(group_id);
        self.write_group(group_id);
        self.events.push_back(Event::GroupChanged {
            group_id: group_id.to_owned(),
        });
        self.pump(now_ms);
        self.finish();
        Ok(())
    }

    /// Queues a text for a group (this account must be an active member); returns its id.
    pub fn send_group_text(
        &mut self,
        now_ms: u64,
        group_id: &str,
        text: &str,
    ) -> Result<String, super::SendError> {
        check_text(text).map_err(|_| super::SendError::InvalidText)?;
        self.queue_group(
            now_ms,
            group_id,
            Body::Text {
                text: text.to_owned(),
            },
        )
    }

    /// Queues an attachment message for a group (the blob is already uploaded); returns its id.
    pub fn send_group_attachment(
        &mut self,
        now_ms: u64,
        group_id: &str,
        attachment: AttachmentPointer,
        caption: Option<String>,
    ) -> Result<String, super::SendError> {
        if let Some(c) = &caption {
            check_text(c).map_err(|_| super::SendError::InvalidText)?;
        }
        self.queue_group(
            now_ms,
            group_id,
            Body::Attachment {
                attachment,
                caption,
            },
        )
    }

    fn queue_group(
        &mut self,
        now_ms: u64,
        group_id: &str,
        body: Body,
    ) -> Result<String, super::SendError> {
        if !self.groups.get(group_id).is_some_and(|g| g.active) {
            return Err(super::SendError::InvalidRecipient);
        }
        Ok(self.queue_message(now_ms, ConversationId::Group(group_id.to_owned()), body))
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    fn checked_members(&self, members: &[String]) -> Result<BTreeSet<String>, GroupError> {
        let mut set = BTreeSet::new();
        for m in members {
            if *m == self.user_id || DeviceAddress::new(m.as_str(), 1).is_err() {
                return Err(GroupError::InvalidMembers);
            }
            set.insert(m.clone());
        }
        if set.len() + 1 > MAX_GROUP_MEMBERS {
            return Err(GroupError::InvalidMembers);
        }
        Ok(set)
    }

    fn require_admin(&self, group_id: &str) -> Result<(), GroupError> {
        let g = self.groups.get(group_id).ok_or(GroupError::UnknownGroup)?;
        if !g.active {
            return Err(GroupError::UnknownGroup);
        }
        if g.members.get(&self.user_id) != Some(&true) {
            return Err(GroupError::NotAdmin);
        }
        Ok(())
    }

    /// Sends the group's current state to every member, to `also` (removed members) and to this
    /// account's other devices; stores it; tells the app.
    fn announce(&mut self, now_ms: u64, group_id: &str, also: &[String]) {
        let Some(g) = self.groups.get(group_id) else {
            return;
        };
        let body = Body::GroupChange {
            change: serde_json::to_string(&g.state_change()).unwrap_or_default(),
        };
        let me = self.user_id.clone();
        let mut peers: Vec<String> = g.members.keys().filter(|u| **u != me).cloned().collect();
        peers.extend(also.iter().cloned());
        // Own other devices get the sync copy of each 1:1 send; with no other member, a send
        // to oneself reaches them.
        if peers.is_empty() {
            peers.push(me);
        }
        for peer in peers {
            let id = self.new_id();
            self.enqueue_group_item(now_ms, &peer, id, body.clone(), group_id);
        }
        self.write_group(group_id);
        self.group_conversation(group_id);
        self.events.push_back(Event::GroupChanged {
            group_id: group_id.to_owned(),
        });
        self.pump(now_ms);
        self.finish();
    }

    /// A 1:1 item about a group (a change or a sender key), sent like any 1:1 content.
    pub(super) fn enqueue_group_item(
        &mut self,
        now_ms: u64,
        peer: &str,
        id: String,
        body: Body,
        group: &str,
    ) {
        self.enqueue_item(now_ms, peer, id, body, None, Some(group.to_owned()));
    }

    pub(super) fn put_outbox(&mut self, item: &OutboxItem) {
        self.writes.push(StoreOp::Put {
            table: tables::OUTBOX,
            partition: b"outbox".to_vec(),
            sort: item.seq,
            value: json(item),
        });
    }

    pub(super) fn write_group(&mut self, group_id: &str) {
        let Some(g) = self.groups.get(group_id) else {
            return;
        };
        self.writes.push(StoreOp::Put {
            table: tables::GROUPS,
            partition: group_id.as_bytes().to_vec(),
            sort: 0,
            value: json(g),
        });
    }

    fn write_sender_key(&mut self, group: &str, user: &str, device: u32) {
        let key = (group.to_owned(), user.to_owned(), device);
        let Some(record) = self.sender_keys.get(&key) else {
            return;
        };
        let row = SenderKeyRow {
            group_id: group.to_owned(),
            user_id: user.to_owned(),
            device_id: device,
            record: Base64(record.to_bytes().to_vec()),
        };
        self.writes.push(StoreOp::Put {
            table: tables::SENDER_KEYS,
            partition: sender_key_partition(group, user, device),
            sort: 0,
            value: json(&row),
        });
    }

    fn forget_sender_keys(&mut self, group: &str) {
        self.forget_keys_where(|g, _| g == group);
    }

    /// Deletes the received sender keys whose (group, sender) match.
    fn forget_keys_where(&mut self, matches: impl Fn(&str, &str) -> bool) {
        let keys: Vec<(String, String, u32)> = self
            .sender_keys
            .keys()
            .filter(|(g, u, _)| matches(g, u))
            .cloned()
            .collect();
        for k in keys {
            self.sender_keys.remove(&k);
            self.writes.push(StoreOp::Delete {
                table: tables::SENDER_KEYS,
                partition: sender_key_partition(&k.0, &k.1, k.2),
                sort: 0,
            });
        }
    }

    /// Starts a fresh chain (the next send hands it to the current roster only).
    fn rotate_sender_key(&mut self, group_id: &str) {
        if let Some(g) = self.groups.get_mut(group_id) {
            g.sender_key = None;
            g.distributed.clear();
        }
    }

    fn group_conversation(&mut self, group_id: &str) {
        let Some(g) = self.groups.get(group_id) else {
            return;
        };
        let id = ConversationId::Group(group_id.to_owned());
        let name = Some(g.name.clone());
        let conv = self
            .conversations
            .entry(id.clone())
            .or_insert_with(|| Conversation {
                id,
                name: None,
                last_message: None,
                unread_count: 0,
                last_sort: 0,
                unread_ids: Vec::new(),
            });
        conv.name = name;
        let conv = conv.clone();
        self.put_conversation(&conv);
        self.events.push_back(Event::ConversationUpdated(conv));
    }

    /// Tries to send a group message: hands the current sender key to every roster member that
    /// lacks it first (1:1), then seals once and posts the one ciphertext.
    pub(super) fn try_send_group(&mut self, now_ms: u64, seq: u64) -> bool {
        let Some(item) = self.outbox.get(&seq) else {
            return false;
        };
        let Some(group_id) = item.group.clone() else {
            return false;
        };
        let Some(g) = self.groups.get(&group_id) else {
            self.fail(
                seq,
                SendFailure::Rejected {
                    code: "unknown_group".into(),
                },
            );
            return false;
        };
        if !g.active {
            self.fail(
                seq,
                SendFailure::Rejected {
                    code: "unknown_group".into(),
                },
            );
            return false;
        }
        if item.sealed.is_none() && !g.relay_only.is_empty() {
            // Users the relay routes to that no admin announced get the ciphertext but no key:
            // tell the app.
            let unverified: Vec<String> = g
                .relay_only
                .iter()
                .filter(|u| !g.members.contains_key(*u))
                .cloned()
                .collect();
            if let Some(g) = self.groups.get_mut(&group_id) {
                g.relay_only.clear();
            }
            self.write_group(&group_id);
            for user_id in unverified {
                self.events.push_back(Event::UnverifiedGroupMember {
                    group_id: group_id.clone(),
                    user_id,
                });
            }
        }
        let Some(item) = self.outbox.get(&seq) else {
            return false;
        };
        let Some(g) = self.groups.get(&group_id) else {
            return false;
        };
        if item.sealed.is_none() {
            // Distribution first: every member (and this account's other devices) that lacks
            // this device's current chain gets it over 1:1 before any message under it.
            let Ok(gid) = GroupId::new(group_id.as_bytes().to_vec()) else {
                return false;
            };
            let mut state = match g
                .sender_key
                .as_ref()
                .and_then(|b| SenderKeyState::from_bytes(b.as_bytes()).ok())
            {
                Some(s) => s,
                None => SenderKeyState::new(gid, &mut self.rng),
            };
            // A member lacks the chain while a device of theirs this device knows (or, none known
            // yet, any) did not get it and no key is queued for them; this account's other
            // devices get it from the sync copies of those sends, or alone from a send to self.
            let me = self.user_id.clone();
            let queued: BTreeSet<&str> = self
                .outbox
                .values()
                .filter(|i| {
                    !i.fan_out
                        && i.group.as_deref() == Some(group_id.as_str())
                        && matches!(i.body, Body::SenderKey { .. })
                })
                .map(|i| i.peer.as_str())
                .collect();
            let lacks = |user: &str| -> bool {
                if queued.contains(user) {
                    return false;
                }
                let own = user == me;
                match self.contacts.get(user) {
                    Some(c) if c.fetched => {
                        let mut devices = c
                            .devices
                            .keys()
                            .filter(|d| !(own && **d == self.device_id))
                            .peekable();
                        if devices.peek().is_none() {
                            return !own;
                        }
                        devices.any(|d| !g.distributed.contains(&(user.to_owned(), *d)))
                    }
                    _ => true,
                }
            };
            let mut lacking: Vec<String> = g
                .members
                .keys()
                .filter(|u| **u != me && lacks(u))
                .cloned()
                .collect();
            if lacking.is_empty() && lacks(&me) {
                lacking.push(me.clone());
            }
            if !lacking.is_empty() {
                let distribution = hex::encode(&*state.distribution_message().to_bytes());
                for user in &lacking {
                    let id = self.new_id();
                    let body = Body::SenderKey {
                        group_id: group_id.clone(),
                        distribution: distribution.clone(),
                    };
                    self.enqueue_group_item(now_ms, user, id, body, &group_id);
                }
            }
            let Some(item) = self.outbox.get(&seq) else {
                return false;
            };
            let payload = Payload {
                v: VERSION,
                id: item.id.clone(),
                ts: item.sent_at,
                sync_to: None,
                group: Some(group_id.clone()),
                body: item.body.clone(),
            };
            let sealed = match state.encrypt(&payload.encode()) {
                Ok(m) => m.to_bytes(),
                Err(_) => {
                    state.rotate(&mut self.rng);
                    if let Some(g) = self.groups.get_mut(&group_id) {
                        g.distributed.clear();
                        g.sender_key = Some(Base64(state.to_bytes().to_vec()));
                    }
                    self.write_group(&group_id);
                    return false;
                }
            };
            if let Some(g) = self.groups.get_mut(&group_id) {
                g.sender_key = Some(Base64(state.to_bytes().to_vec()));
            }
            self.write_group(&group_id);
            if let Some(item) = self.outbox.get_mut(&seq) {
                item.sealed = Some(Base64(sealed));
                let item = item.clone();
                self.put_outbox(&item);
            }
        }
        // Wait until the group's changes and sender keys queued for its members were accepted,
        // so every member holds the roster and the key before the message.
        let waiting = self.outbox.values().any(|i| {
            !i.fan_out
                && i.group.as_deref() == Some(group_id.as_str())
                && matches!(i.body, Body::SenderKey { .. } | Body::GroupChange { .. })
        });
        if waiting {
            return false;
        }
        let Some(item) = self.outbox.get_mut(&seq) else {
            return false;
        };
        let Some(content) = item.sealed.clone() else {
            return false;
        };
        item.in_flight = true;
        let request = GroupSendRequest {
            client_message_id: item.id.clone(),
            content,
            messages: Vec::new(),
        };
        self.request(
            RelayCall::SendGroup { group_id, request },
            Pending::Send { seq },
        );
        true
    }

    /// The relay accepted a 1:1 item about a group: a sender key now sits with every device of
    /// the peer and of this account (the relay accepts a send only if it covers all of them).
    pub(super) fn group_item_sent(&mut self, item: &OutboxItem) {
        let (Some(group_id), Body::SenderKey { distribution, .. }) = (&item.group, &item.body)
        else {
            return;
        };
        let me = self.user_id.clone();
        let mut devices: Vec<(String, u32)> = Vec::new();
        for user in [item.peer.as_str(), me.as_str()] {
            if let Some(c) = self.contacts.get(user) {
                devices.extend(
                    c.devices
                        .keys()
                        .filter(|d| !(user == me && **d == self.device_id))
                        .map(|d| (user.to_owned(), *d)),
                );
            }
        }
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        // Only if it is still the current chain.
        let current = g
            .sender_key
            .as_ref()
            .and_then(|b| SenderKeyState::from_bytes(b.as_bytes()).ok())
            .map(|s| hex::encode(&*s.distribution_message().to_bytes()));
        let Some(current) = current else {
            return;
        };
        let chain_of = |hex_dist: &str| {
            hex::decode(hex_dist)
                .ok()
                .and_then(|b| SenderKeyDistributionMessage::from_bytes(&b).ok())
                .map(|d| (d.chain_id(), d.signing_key()))
        };
        if chain_of(&current) != chain_of(distribution) {
            return;
        }
        g.distributed.extend(devices);
        let group_id = group_id.clone();
        self.write_group(&group_id);
    }

    /// A new device of this account appeared: hand it the state of every group this account is
    /// in (its own devices accept state from each other).
    pub(super) fn own_device_added(&mut self, now_ms: u64) {
        let me = self.user_id.clone();
        let active: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.active)
            .map(|g| g.group_id.clone())
            .collect();
        for group_id in active {
            let Some(g) = self.groups.get(&group_id) else {
                continue;
            };
            let body = Body::GroupChange {
                change: serde_json::to_string(&g.state_change()).unwrap_or_default(),
            };
            let id = self.new_id();
            self.enqueue_group_item(now_ms, &me, id, body, &group_id);
        }
    }

    /// Tells the group's members that this user started or stopped typing: one Sender-Key
    /// ciphertext as an ephemeral (never stored). Needs this device's chain to be with every
    /// member already (a group message was sent before), else `NoSession`.
    pub fn set_group_typing(
        &mut self,
        now_ms: u64,
        group_id: &str,
        typing: bool,
    ) -> Result<(), super::TypingError> {
        let Some(g) = self.groups.get(group_id).filter(|g| g.active) else {
            return Err(super::TypingError::NoSession);
        };
        let distributing = self.outbox.values().any(|i| {
            i.group.as_deref() == Some(group_id) && matches!(i.body, Body::SenderKey { .. })
        });
        let Some(mut state) = g
            .sender_key
            .as_ref()
            .and_then(|b| SenderKeyState::from_bytes(b.as_bytes()).ok())
            .filter(|_| !distributing)
        else {
            return Err(super::TypingError::NoSession);
        };
        let payload = Payload {
            v: VERSION,
            id: self.new_id(),
            ts: now_ms,
            sync_to: None,
            group: Some(group_id.to_owned()),
            body: Body::Typing { typing },
        };
        let Ok(sealed) = state.encrypt(&payload.encode()) else {
            return Err(super::TypingError::NoSession);
        };
        if let Some(g) = self.groups.get_mut(group_id) {
            g.sender_key = Some(Base64(state.to_bytes().to_vec()));
        }
        self.write_group(group_id);
        self.request(
            RelayCall::Ephemeral(sotto_wire::EphemeralRequest {
                recipient_id: None,
                group_id: Some(group_id.to_owned()),
                timestamp: now_ms,
                messages: Vec::new(),
                content: Some(Base64(sealed.to_bytes())),
            }),
            Pending::Ephemeral,
        );
        self.finish();
        Ok(())
    }

    /// A group ephemeral (typing): opened with the sender's chain, shown only for a roster member.
    pub(super) fn group_ephemeral(&mut self, now_ms: u64, e: sotto_wire::EphemeralEnvelope) {
        let Some(group_id) = e.group_id.clone() else {
            return;
        };
        let user = e.source_user_id.clone();
        if user == self.user_id {
            return;
        }
        let member = self
            .groups
            .get(&group_id)
            .is_some_and(|g| g.active && g.members.contains_key(&user));
        if !member {
            return;
        }
        let Ok(message) = SenderKeyMessage::from_bytes(e.content.as_bytes()) else {
            return;
        };
        let key = (group_id.clone(), user.clone(), e.source_device_id);
        let Some(record) = self.sender_keys.get_mut(&key) else {
            return;
        };
        let Ok(plain) = record.decrypt(&message).map(Zeroizing::new) else {
            return;
        };
        self.write_sender_key(&group_id, &user, e.source_device_id);
        if let Ok(Payload {
            body: Body::Typing { typing },
            group: Some(g),
            sync_to: None,
            ..
        }) = Payload::decode(&plain)
        {
            if g != group_id {
                return;
            }
            let conversation = ConversationId::Group(group_id);
            let k = (conversation.clone(), user.clone());
            if typing {
                self.typing.insert(k, now_ms + super::TYPING_TIMEOUT_MS);
            } else {
                self.typing.remove(&k);
            }
            self.events.push_back(Event::Typing {
                conversation,
                user_id: user,
                typing,
            });
        }
        self.finish();
    }

    /// A `groupMessage` envelope: one Sender-Key ciphertext.
    pub(super) fn incoming_group_message(&mut self, now_ms: u64, env: &Envelope) {
        let (Some(group_id), Some(content)) = (env.group_id.clone(), env.content.as_ref()) else {
            return self.dropped(env, "group envelope without group or content");
        };
        let user = env.source_user_id.clone();
        let device = env.source_device_id;
        if user == self.user_id && device == self.device_id {
            return self.dropped(env, "envelope claims to come from this device");
        }
        let Ok(message) = SenderKeyMessage::from_bytes(content.as_bytes()) else {
            return self.dropped(env, "malformed group message");
        };
        let key = (group_id.clone(), user.clone(), device);
        let Some(record) = self.sender_keys.get_mut(&key) else {
            self.ask_for_sender_key(now_ms, &group_id, &user, device);
            return self.dropped(env, "no sender key from this device (asked its sender)");
        };
        let plain = match record.decrypt(&message) {
            Ok(p) => Zeroizing::new(p),
            Err(sotto_crypto::sender_key::SenderKeyDecryptError::Replay { .. }) => return,
            Err(e) => {
                self.ask_for_sender_key(now_ms, &group_id, &user, device);
                return self.dropped(env, &e.to_string());
            }
        };
        self.write_sender_key(&group_id, &user, device);
        let payload = match Payload::decode(&plain) {
            Ok(p) => p,
            Err(e) => return self.dropped(env, &e.to_string()),
        };
        if payload.group.as_deref() != Some(group_id.as_str()) || payload.sync_to.is_some() {
            return self.dropped(env, "group content addressed inconsistently");
        }
        let own = user == self.user_id;
        let member = self
            .groups
            .get(&group_id)
            .is_some_and(|g| g.active && (own || g.members.contains_key(&user)));
        if !member {
            return self.dropped(env, "sender is not in the group's verified roster");
        }
        let seen = seen_key(&user, &payload.id);
        if !self.seen.insert(seen) {
            return;
        }
        self.writes.push(StoreOp::Put {
            table: tables::SEEN,
            partition: seen.to_vec(),
            sort: 0,
            value: Zeroizing::new(seen.to_vec()),
        });
        if !matches!(payload.body, Body::Text { .. } | Body::Attachment { .. }) {
            return self.dropped(env, "not group message content");
        }
        self.show_received(env, ConversationId::Group(group_id), payload);
    }

    /// A `groupEvent` envelope, written by the relay: routing facts only. Used to rotate (the
    /// relay no longer routes to someone) and to surface invitations; never to trust a member.
    pub(super) fn relay_group_event(&mut self, env: &Envelope) {
        let Some(content) = env.content.as_ref() else {
            return;
        };
        let Ok(ev) = serde_json::from_slice::<GroupEvent>(content.as_bytes()) else {
            return;
        };
        if !valid_group_id(&ev.group_id) {
            return;
        }
        match ev.change {
            RelayChange::MemberLeft | RelayChange::MemberRemoved
                if self.groups.get(&ev.group_id).is_some_and(|g| g.active) =>
            {
                self.rotate_sender_key(&ev.group_id);
                self.write_group(&ev.group_id);
            }
            RelayChange::Created | RelayChange::MembersAdded => {
                let Some(g) = self.groups.get_mut(&ev.group_id).filter(|g| g.active) else {
                    return;
                };
                let before = g.relay_only.len();
                for u in &ev.user_ids {
                    if !g.members.contains_key(u) && g.relay_only.len() < MAX_GROUP_MEMBERS {
                        g.relay_only.insert(u.clone());
                    }
                }
                if g.relay_only.len() != before {
                    self.write_group(&ev.group_id);
                }
            }
            RelayChange::Invited if ev.user_ids.contains(&self.user_id) => {
                self.events.push_back(Event::GroupInvitation {
                    group_id: ev.group_id.clone(),
                    from_user_id: ev.actor_user_id.clone(),
                    name: String::new(),
                });
            }
            _ => {}
        }
    }

    /// A group message from `user`'s `device` could not be opened here (no chain from it, or
    /// one this device cannot follow): ask that user's devices for their current chain over 1:1,
    /// and, for a group this device does not know yet, this account's other devices for its state.
    /// Rate limited per (group, sender device) and in all ([`KeyRequests`]); a group this device
    /// knows is asked about only for a roster member (or this account).
    fn ask_for_sender_key(&mut self, now_ms: u64, group_id: &str, user: &str, device: u32) {
        if !valid_group_id(group_id) {
            return;
        }
        let me = self.user_id.clone();
        let known = match self.groups.get(group_id) {
            Some(g) if !g.active => return,
            Some(g) => {
                if user != me && !g.members.contains_key(user) {
                    return;
                }
                true
            }
            None => false,
        };
        let key = (group_id.to_owned(), user.to_owned(), device);
        if !KeyRequests::allow(&mut self.key_requests.sent, key, now_ms) {
            return;
        }
        let mut ask = vec![user.to_owned()];
        if !known && user != me {
            ask.push(me);
        }
        for peer in ask {
            let id = self.new_id();
            let body = Body::SenderKeyRequest {
                group_id: group_id.to_owned(),
            };
            self.enqueue_group_item(now_ms, &peer, id, body, group_id);
        }
    }

    /// A device asked (over an authenticated 1:1 session) for this device's chain in a group:
    /// handed, at its current iteration, only to a member of the roster this device holds (or to
    /// this account's own device, which also gets the group's state). Nothing for anyone else.
    fn answer_sender_key_request(
        &mut self,
        now_ms: u64,
        env: &Envelope,
        user: &str,
        group_id: &str,
    ) {
        let me = self.user_id.clone();
        let Some(g) = self.groups.get(group_id).filter(|g| g.active) else {
            return;
        };
        let own = user == me;
        if !own && !g.members.contains_key(user) {
            return self.dropped(env, "sender key asked for by a non-member");
        }
        let key = (group_id.to_owned(), user.to_owned(), env.source_device_id);
        if !KeyRequests::allow(&mut self.key_requests.answered, key, now_ms) {
            return;
        }
        let state_change = own.then(|| g.state_change());
        let distribution = g
            .sender_key
            .as_ref()
            .and_then(|b| SenderKeyState::from_bytes(b.as_bytes()).ok())
            .map(|state| hex::encode(&*state.distribution_message().to_bytes()));
        if let Some(change) = state_change {
            let body = Body::GroupChange {
                change: serde_json::to_string(&change).unwrap_or_default(),
            };
            let id = self.new_id();
            self.enqueue_group_item(now_ms, &me, id, body, group_id);
        }
        if let Some(distribution) = distribution {
            let body = Body::SenderKey {
                group_id: group_id.to_owned(),
                distribution,
            };
            let id = self.new_id();
            self.enqueue_group_item(now_ms, user, id, body, group_id);
        }
    }

    /// A group change or sender key out of a 1:1 session from `env`'s sender. Returns `false` if
    /// the body was not about groups.
    pub(super) fn group_content(&mut self, now_ms: u64, env: &Envelope, payload: &Payload) -> bool {
        let user = env.source_user_id.clone();
        match &payload.body {
            Body::SenderKeyRequest { group_id } => {
                self.answer_sender_key_request(now_ms, env, &user, group_id);
                true
            }
            Body::GroupChange { change } => {
                match serde_json::from_str::<GroupChange>(change) {
                    Ok(c) => self.apply_change(env, &user, c),
                    Err(_) => self.dropped(env, "malformed group change"),
                }
                true
            }
            Body::SenderKey {
                group_id,
                distribution,
            } => {
                self.install_sender_key(env, &user, group_id, distribution);
                true
            }
            _ => false,
        }
    }

    fn install_sender_key(&mut self, env: &Envelope, user: &str, group_id: &str, hex_dist: &str) {
        // A key is installed even before the roster naming its sender arrives (another admin's
        // change may be slower); it is used only for a sender the roster lists when a message
        // comes. Keys for groups this device does not know are capped.
        let known = self.groups.get(group_id).is_some_and(|g| g.active);
        if !known {
            let strays = self
                .sender_keys
                .keys()
                .filter(|(g, _, _)| !self.groups.contains_key(g))
                .count();
            if strays >= MAX_STRAY_SENDER_KEYS {
                return self.dropped(env, "too many sender keys for unknown groups");
            }
        }
        let Some(dist) = hex::decode(hex_dist)
            .ok()
            .and_then(|b| SenderKeyDistributionMessage::from_bytes(&b).ok())
        else {
            return self.dropped(env, "malformed sender key");
        };
        if dist.group_id().as_bytes() != group_id.as_bytes() {
            return self.dropped(env, "sender key for another group");
        }
        let device = env.source_device_id;
        let key = (group_id.to_owned(), user.to_owned(), device);
        let Ok(gid) = GroupId::new(group_id.as_bytes().to_vec()) else {
            return;
        };
        let record = self
            .sender_keys
            .entry(key)
            .or_insert_with(|| SenderKeyRecord::new(gid));
        if record.process_distribution(&dist).is_err() {
            return self.dropped(env, "sender key for another group");
        }
        self.write_sender_key(group_id, user, device);
    }

    fn apply_change(&mut self, env: &Envelope, actor: &str, change: GroupChange) {
        match change {
            GroupChange::Leave { group_id } => {
                let Some(g) = self.groups.get_mut(&group_id) else {
                    return;
                };
                if actor == self.user_id {
                    // Left on another own device.
                    g.active = false;
                    g.members.remove(actor);
                    g.sender_key = None;
                    g.distributed.clear();
                    self.forget_sender_keys(&group_id);
                } else {
                    if g.members.remove(actor).is_none() {
                        return;
                    }
                    self.rotate_sender_key(&group_id);
                    self.forget_keys_where(|g, u| g == group_id && u == actor);
                }
                self.write_group(&group_id);
                self.events.push_back(Event::GroupChanged { group_id });
            }
            GroupChange::State {
                group_id,
                revision,
                name,
                members,
                description,
                avatar,
            } => {
                if !valid_group_id(&group_id)
                    || !valid_name(&name)
                    || !valid_description(&description)
                    || avatar.as_ref().is_some_and(|a| !valid_avatar(a))
                    || members.len() > MAX_GROUP_MEMBERS
                    || members
                        .iter()
                        .any(|(u, _)| DeviceAddress::new(u.as_str(), 1).is_err())
                {
                    return self.dropped(env, "group change out of limits");
                }
                let roster: BTreeMap<String, bool> = members.into_iter().collect();
                // Who may announce: an admin of the roster this device holds; for a group it does
                // not know yet, an admin the change itself lists (the group's creator or any
                // admin adding this account).
                // This account's own devices trust each other's state (the same identity): it
                // reaches a newly linked device that way; an old revision is no news.
                if !self.groups.contains_key(&group_id) && self.groups.len() >= MAX_GROUPS {
                    return self.dropped(env, "too many groups");
                }
                let allowed = match self.groups.get(&group_id) {
                    Some(g) if actor == self.user_id => {
                        if revision <= g.revision {
                            return;
                        }
                        true
                    }
                    None if actor == self.user_id => true,
                    Some(g) if g.active => {
                        g.members.get(actor) == Some(&true) && revision > g.revision
                    }
                    Some(g) => revision > g.revision && roster.get(actor) == Some(&true),
                    None => roster.get(actor) == Some(&true),
                };
                if !allowed {
                    return self.dropped(env, "group change not from an admin, or stale");
                }
                let me = self.user_id.clone();
                let old = self.groups.get(&group_id).cloned().unwrap_or_default();
                let removed: Vec<String> = old
                    .members
                    .keys()
                    .filter(|u| !roster.contains_key(*u))
                    .cloned()
                    .collect();
                let active = roster.contains_key(&me);
                let relay_only = old
                    .relay_only
                    .iter()
                    .filter(|u| !roster.contains_key(*u))
                    .cloned()
                    .collect();
                let mut g = Group {
                    group_id: group_id.clone(),
                    name,
                    revision,
                    members: roster,
                    active,
                    description,
                    avatar: avatar.map(|a| *a),
                    sender_key: old.sender_key,
                    distributed: old.distributed,
                    relay_only,
                };
                if !removed.is_empty() || !active {
                    g.sender_key = None;
                    g.distributed.clear();
                }
                self.groups.insert(group_id.clone(), g);
                if !active {
                    self.forget_sender_keys(&group_id);
                } else {
                    for u in removed {
                        self.forget_keys_where(|g, su| g == group_id && su == u);
                    }
                }
                self.write_group(&group_id);
                self.group_conversation(&group_id);
                self.events.push_back(Event::GroupChanged { group_id });
            }
        }
    }

    /// Restores one `groups` or `sender_keys` row.
    pub(super) fn restore_group_row(&mut self, table: &str, value: &[u8]) -> bool {
        match table {
            tables::GROUPS => match serde_json::from_slice::<Group>(value) {
                Ok(g) => {
                    self.groups.insert(g.group_id.clone(), g);
                    true
                }
                Err(_) => false,
            },
            tables::SENDER_KEYS => {
                let Ok(row) = serde_json::from_slice::<SenderKeyRow>(value) else {
                    return false;
                };
                let Ok(record) = SenderKeyRecord::from_bytes(row.record.as_bytes()) else {
                    return false;
                };
                self.sender_keys
                    .insert((row.group_id, row.user_id, row.device_id), record);
                true
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_wire_form() {
        let mut g = Group {
            group_id: "g1".into(),
            name: "Choir".into(),
            revision: 3,
            ..Group::default()
        };
        g.members.insert("u1".into(), true);
        let json = serde_json::to_string(&g.state_change()).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"type":"state","group_id":"g1","revision":3,"name":"Choir","members":[["u1",true]]}"#
        );
        g.description = "d".into();
        let json = serde_json::to_string(&g.state_change()).unwrap_or_default();
        assert!(
            json.ends_with(r#""members":[["u1",true]],"description":"d"}"#),
            "{json}"
        );
        let back: GroupChange = serde_json::from_str(&json).unwrap_or(GroupChange::Leave {
            group_id: String::new(),
        });
        assert_eq!(back, g.state_change());
    }
}
