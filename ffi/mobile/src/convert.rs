//! From the SDK's types to the binding's records (and the two that travel the other way).

use sotto_client as sdk;
use sotto_client_core as core;

use crate::records::*;

impl From<IdentityPolicy> for core::IdentityPolicy {
    fn from(p: IdentityPolicy) -> Self {
        match p {
            IdentityPolicy::RequireApproval => Self::RequireApproval,
            IdentityPolicy::AcceptAndNotify => Self::AcceptAndNotify,
        }
    }
}

impl From<ConversationId> for core::ConversationId {
    fn from(c: ConversationId) -> Self {
        match c {
            ConversationId::Direct { user_id } => Self::Direct(user_id),
            ConversationId::Group { group_id } => Self::Group(group_id),
        }
    }
}

impl From<core::ConversationId> for ConversationId {
    fn from(c: core::ConversationId) -> Self {
        match c {
            core::ConversationId::Direct(user_id) => Self::Direct { user_id },
            core::ConversationId::Group(group_id) => Self::Group { group_id },
        }
    }
}

impl From<Attachment> for core::AttachmentPointer {
    fn from(a: Attachment) -> Self {
        Self {
            attachment_id: a.attachment_id,
            key: a.key,
            digest: a.digest,
            size: a.size,
            file_name: a.file_name,
            content_type: a.content_type,
        }
    }
}

impl From<core::MessageStatus> for MessageStatus {
    fn from(s: core::MessageStatus) -> Self {
        use core::MessageStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Sent => Self::Sent,
            S::Delivered => Self::Delivered,
            S::Read => Self::Read,
            S::Failed => Self::Failed,
            S::Received => Self::Received,
        }
    }
}

impl From<core::Message> for Message {
    fn from(m: core::Message) -> Self {
        Self {
            id: m.id,
            conversation: m.conversation.into(),
            sender_user_id: m.sender_user_id,
            sender_device_id: m.sender_device_id,
            outgoing: m.outgoing,
            sent_at: m.sent_at,
            server_timestamp: m.server_timestamp,
            text: m.text,
            attachment: m.attachment.map(Attachment::from),
            status: m.status.into(),
            sort: m.sort,
        }
    }
}

impl From<core::Conversation> for Conversation {
    fn from(c: core::Conversation) -> Self {
        Self {
            id: c.id.into(),
            name: c.name,
            last_message: c.last_message.map(|p| MessagePreview {
                id: p.id,
                sender_user_id: p.sender_user_id,
                text: p.text,
                sent_at: p.sent_at,
            }),
            unread_count: c.unread_count,
            last_sort: c.last_sort,
        }
    }
}

impl From<sdk::SentMessage> for SentMessage {
    fn from(s: sdk::SentMessage) -> Self {
        Self {
            id: s.id,
            server_timestamp: s.server_timestamp,
        }
    }
}

impl From<sdk::HistoryPage> for HistoryPage {
    fn from(p: sdk::HistoryPage) -> Self {
        Self {
            messages: p.messages.into_iter().map(Message::from).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

impl From<sdk::DeviceRecord> for Device {
    fn from(d: sdk::DeviceRecord) -> Self {
        Self {
            device_id: d.device_id,
            created_at: d.created_at,
            this_device: d.this_device,
        }
    }
}

fn presence_status(s: &str) -> PresenceStatus {
    match s {
        "online" => PresenceStatus::Online,
        "away" => PresenceStatus::Away,
        _ => PresenceStatus::Offline,
    }
}

impl From<sdk::UserRecord> for UserProfile {
    fn from(u: sdk::UserRecord) -> Self {
        Self {
            user_id: u.user_id,
            username: u.username,
        }
    }
}

impl From<sdk::PresenceRecord> for Presence {
    fn from(p: sdk::PresenceRecord) -> Self {
        Self {
            status: presence_status(&p.status),
            user_id: p.user_id,
            last_seen: p.last_seen,
        }
    }
}

impl From<core::SafetyNumberInfo> for SafetyNumber {
    fn from(s: core::SafetyNumberInfo) -> Self {
        Self {
            display: s.display,
            qr_payload: s.qr_payload,
            verified: s.verified,
        }
    }
}

impl From<core::SendFailure> for SendFailure {
    fn from(f: core::SendFailure) -> Self {
        use core::SendFailure as F;
        match f {
            F::UnknownUser => Self::UnknownUser,
            F::NoVerifiedDevices => Self::NoVerifiedDevices,
            F::DeviceListUnresolved => Self::DeviceListUnresolved,
            F::Rejected { code } => Self::Rejected { code },
            F::BadRelayAnswer => Self::BadRelayAnswer,
            other => Self::Other {
                reason: format!("{other:?}"),
            },
        }
    }
}

impl From<sdk::ConnectionState> for ConnectionState {
    fn from(s: sdk::ConnectionState) -> Self {
        use sdk::ConnectionState as S;
        match s {
            S::Connecting => Self::Connecting,
            S::Connected => Self::Connected,
            S::CaughtUp => Self::CaughtUp,
            S::Disconnected => Self::Disconnected,
            S::Closed => Self::Closed,
        }
    }
}

/// The binding's event for an SDK event; none for a kind this version does not know.
pub(crate) fn event(e: sdk::ClientEvent) -> Option<Event> {
    use core::Event as E;
    Some(match e {
        sdk::ClientEvent::Connection(state) => Event::ConnectionChanged {
            state: state.into(),
        },
        sdk::ClientEvent::StoreFailed(reason) => Event::StoreFailed { reason },
        sdk::ClientEvent::Event(e) => match e {
            E::Message(m) => Event::MessageReceived { message: m.into() },
            E::MessageSent {
                conversation,
                message_id,
                server_timestamp,
            } => Event::MessageSent {
                conversation: conversation.into(),
                message_id,
                server_timestamp,
            },
            E::SendFailed {
                conversation,
                message_id,
                reason,
            } => Event::SendFailed {
                conversation: conversation.into(),
                message_id,
                failure: reason.into(),
            },
            E::Delivered {
                message_id,
                user_id,
                device_id,
            } => Event::Delivered {
                message_id,
                user_id,
                device_id,
            },
            E::Read {
                conversation,
                message_ids,
                user_id,
            } => Event::Read {
                conversation: conversation.into(),
                message_ids,
                user_id,
            },
            E::ConversationUpdated(c) => Event::ConversationUpdated {
                conversation: c.into(),
            },
            E::IdentityChanged {
                user_id,
                was_verified,
                needs_approval,
            } => Event::IdentityChanged {
                user_id,
                was_verified,
                needs_approval,
            },
            E::UntrustedDevice { user_id, device_id } => {
                Event::UntrustedDevice { user_id, device_id }
            }
            E::DecryptionFailed {
                user_id,
                device_id,
                reason,
            } => Event::DecryptionFailed {
                user_id,
                device_id,
                reason,
            },
            E::Typing {
                conversation,
                user_id,
                typing,
            } => Event::Typing {
                conversation: conversation.into(),
                user_id,
                typing,
            },
            E::Presence {
                user_id,
                status,
                last_seen,
            } => Event::PresenceChanged {
                presence: Presence {
                    status: presence_status(&status),
                    user_id,
                    last_seen,
                },
            },
            E::GroupChanged { group_id } => Event::GroupChanged { group_id },
            E::UnverifiedGroupMember { group_id, user_id } => {
                Event::UnverifiedGroupMember { group_id, user_id }
            }
            E::GroupInvitation {
                group_id,
                from_user_id,
                name,
            } => Event::GroupInvitation {
                group_id,
                from_user_id,
                name,
            },
            E::DeviceLinked { device_id } => Event::DeviceLinked { device_id },
            _ => return None,
        },
        _ => return None,
    })
}

impl From<core::AttachmentPointer> for Attachment {
    fn from(a: core::AttachmentPointer) -> Self {
        Self {
            attachment_id: a.attachment_id,
            key: a.key,
            digest: a.digest,
            size: a.size,
            file_name: a.file_name,
            content_type: a.content_type,
        }
    }
}
