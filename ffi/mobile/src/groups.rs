//! Groups for the app: create, add, remove, roles, rename, leave, invitations, group texts.
//! The roster and name come end to end from the group's admins (the relay only routes).

use crate::{
    check_attachment_path, check_text, on_runtime, Attachment, AttachmentError, Client,
    Interrupted, QueryError, SendError, SentMessage,
};

/// A member of a group's verified roster.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GroupMember {
    /// The member's user id.
    pub user_id: String,
    /// Whether the member is an admin.
    pub admin: bool,
}

/// A group as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Group {
    /// The group id.
    pub group_id: String,
    /// Its name (end-to-end encrypted).
    pub name: String,
    /// Its description (end-to-end encrypted; empty when none).
    pub description: String,
    /// Its avatar, an image attachment (`download_group_avatar` fetches it).
    pub avatar: Option<Attachment>,
    /// The verified roster.
    pub members: Vec<GroupMember>,
    /// Whether this account is still a member.
    pub active: bool,
}

/// A pending invitation to a group.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GroupInvitation {
    /// The group id.
    pub group_id: String,
    /// Who invited.
    pub inviter_user_id: String,
}

/// Why a group operation failed. Nothing changed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No such group on this device, or this account is not a member.
    #[error("unknown group")]
    UnknownGroup,
    /// Only admins may do this.
    #[error("only a group admin can do this")]
    NotAdmin,
    /// A group name must be 1 to 100 characters.
    #[error("a group name must be 1 to 100 characters")]
    InvalidName,
    /// A group description is at most 500 characters.
    #[error("a group description is at most 500 characters")]
    InvalidDescription,
    /// A group avatar is an image (image) of at most 5 MB.
    #[error("a group avatar is an image of at most 5 MB")]
    InvalidAvatar,
    /// A member id is invalid or this account, or too many members.
    #[error("invalid member list")]
    InvalidMembers,
    /// The relay does not know one of the users.
    #[error("unknown user")]
    UnknownUser,
    /// The user is not a member.
    #[error("not a member of this group")]
    UnknownMember,
    /// The group is full.
    #[error("the group is full")]
    GroupFull,
    /// The last admin cannot step down.
    #[error("the last admin cannot step down")]
    LastAdmin,
    /// Too many group changes; try again later.
    #[error("too many group changes; try again later")]
    RateLimited,
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The relay refused.
    #[error("the relay refused: {reason}")]
    Rejected {
        /// What it said.
        reason: String,
    },
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client::GroupOpError> for GroupError {
    fn from(e: sotto_client::GroupOpError) -> Self {
        use sotto_client::GroupOpError as E;
        match e {
            E::UnknownGroup => Self::UnknownGroup,
            E::NotAdmin => Self::NotAdmin,
            E::InvalidName => Self::InvalidName,
            E::InvalidDescription => Self::InvalidDescription,
            E::InvalidAvatar => Self::InvalidAvatar,
            E::InvalidMembers => Self::InvalidMembers,
            E::UnknownUser => Self::UnknownUser,
            E::UnknownMember => Self::UnknownMember,
            E::GroupFull => Self::GroupFull,
            E::LastAdmin => Self::LastAdmin,
            E::RateLimited => Self::RateLimited,
            E::Unreachable => Self::Unreachable,
            E::Rejected(reason) => Self::Rejected { reason },
            e => Self::Rejected {
                reason: e.to_string(),
            },
        }
    }
}

fn group(g: sotto_client::GroupInfo) -> Group {
    Group {
        group_id: g.group_id,
        name: g.name,
        description: g.description,
        avatar: g.avatar.map(Attachment::from),
        members: g
            .members
            .into_iter()
            .map(|m| GroupMember {
                user_id: m.user_id,
                admin: m.admin,
            })
            .collect(),
        active: g.active,
    }
}

macro_rules! group_call {
    ($self:ident, |$c:ident| $body:expr) => {{
        let $c = $self.inner.clone();
        on_runtime(&$self.handle, async move { $body.await })
            .await
            .map_err(|Interrupted| GroupError::Interrupted)?
            .map_err(GroupError::from)
    }};
}

#[uniffi::export]
impl Client {
    /// Creates a group with these members (user ids); this account is its admin. Returns the
    /// group id. Members who never wrote to this account get an invitation to accept first.
    pub async fn create_group(
        &self,
        member_ids: Vec<String>,
        name: String,
    ) -> Result<String, GroupError> {
        group_call!(self, |c| c.create_group(&member_ids, &name))
    }

    /// Adds members (admins only).
    pub async fn add_group_members(
        &self,
        group_id: String,
        user_ids: Vec<String>,
    ) -> Result<(), GroupError> {
        group_call!(self, |c| c.add_group_members(&group_id, &user_ids))
    }

    /// Removes a member (admins only); what follows is closed to them.
    pub async fn remove_group_member(
        &self,
        group_id: String,
        user_id: String,
    ) -> Result<(), GroupError> {
        group_call!(self, |c| c.remove_group_member(&group_id, &user_id))
    }

    /// Makes a member admin, or member again (admins only).
    pub async fn set_group_role(
        &self,
        group_id: String,
        user_id: String,
        admin: bool,
    ) -> Result<(), GroupError> {
        group_call!(self, |c| c.set_group_role(&group_id, &user_id, admin))
    }

    /// Renames the group (admins only).
    pub async fn rename_group(&self, group_id: String, name: String) -> Result<(), GroupError> {
        group_call!(self, |c| c.rename_group(&group_id, &name))
    }

    /// Sets the group's description (admins only; 0-500 characters, empty clears it).
    pub async fn set_group_description(
        &self,
        group_id: String,
        description: String,
    ) -> Result<(), GroupError> {
        group_call!(self, |c| c.set_group_description(&group_id, &description))
    }

    /// Sets the group's avatar from an image file (admins only; image, at most 5 MB), or
    /// clears it when `path` is `None`.
    pub async fn set_group_avatar(
        &self,
        group_id: String,
        path: Option<String>,
        content_type: String,
    ) -> Result<(), GroupError> {
        if let Some(p) = &path {
            if check_attachment_path(p).is_err() {
                return Err(GroupError::InvalidAvatar);
            }
        }
        group_call!(self, |c| c.set_group_avatar(
            &group_id,
            path.as_deref()
                .map(|p| (std::path::Path::new(p), content_type.as_str()))
        ))
    }

    /// Downloads, verifies and decrypts the group's avatar into `dest`; its size, or `None`
    /// when the group has none.
    pub async fn download_group_avatar(
        &self,
        group_id: String,
        dest: String,
    ) -> Result<Option<u64>, AttachmentError> {
        check_attachment_path(&dest)?;
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client
                .download_group_avatar(&group_id, std::path::Path::new(&dest))
                .await
        })
        .await
        .map_err(|Interrupted| AttachmentError::Interrupted)?
        .map_err(AttachmentError::from)
    }

    /// Leaves the group.
    pub async fn leave_group(&self, group_id: String) -> Result<(), GroupError> {
        group_call!(self, |c| c.leave_group(&group_id))
    }

    /// Pending invitations.
    pub async fn group_invitations(&self) -> Result<Vec<GroupInvitation>, GroupError> {
        let list = group_call!(self, |c| c.group_invitations())?;
        Ok(list
            .into_iter()
            .map(|(group_id, inviter_user_id)| GroupInvitation {
                group_id,
                inviter_user_id,
            })
            .collect())
    }

    /// Accepts a pending invitation.
    pub async fn accept_group_invitation(&self, group_id: String) -> Result<(), GroupError> {
        group_call!(self, |c| c.accept_group_invitation(&group_id))
    }

    /// The groups this device knows.
    pub fn groups(&self) -> Vec<Group> {
        self.inner.groups().into_iter().map(group).collect()
    }

    /// One group, if known.
    pub fn group(&self, group_id: String) -> Option<Group> {
        self.inner.group(&group_id).map(group)
    }

    /// Sends a text (1-1000 characters) to a group; returns once the relay accepted it.
    pub async fn send_group_text(
        &self,
        group_id: String,
        text: String,
    ) -> Result<SentMessage, SendError> {
        check_text(&text)?;
        let client = self.inner.clone();
        let sent = on_runtime(&self.handle, async move {
            client.send_group_text(&group_id, &text).await
        })
        .await
        .map_err(|Interrupted| SendError::Interrupted)??;
        Ok(sent.into())
    }

    /// Typing started or stopped in a group (send a group message first).
    pub async fn set_group_typing(&self, group_id: String, typing: bool) -> Result<(), QueryError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client.set_group_typing(&group_id, typing).await
        })
        .await
        .map_err(|Interrupted| QueryError::Interrupted)?
        .map_err(QueryError::from)
    }

    /// Encrypts the file at `path` while uploading it (1 byte to 50 MB) and sends it to a group;
    /// returns once the relay accepted the message.
    pub async fn send_group_attachment(
        &self,
        group_id: String,
        path: String,
        content_type: String,
    ) -> Result<SentMessage, AttachmentError> {
        check_attachment_path(&path)?;
        let client = self.inner.clone();
        let sent = on_runtime(&self.handle, async move {
            client
                .send_group_attachment(&group_id, std::path::Path::new(&path), &content_type)
                .await
        })
        .await
        .map_err(|Interrupted| AttachmentError::Interrupted)??;
        Ok(sent.into())
    }
}
