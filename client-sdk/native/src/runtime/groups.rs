//! Group operations: the relay call that changes routing, then the core's end-to-end
//! announcement of the new roster (admin changes) and Sender-Key messages.

use reqwest::Method;
use sotto_client_core::{GroupError, GroupInfo};
use sotto_wire::{
    Base64, CreateGroupRequest, GroupCreated, GroupInvitations, GroupMembers, GroupRole,
    JoinGroupRequest, SetRoleRequest,
};

use super::{now_ms, SottoClient};
use crate::http::{segment, CallError};
use crate::{GroupOpError, SendTextError, SentMessage};

fn relay_error(e: CallError) -> GroupOpError {
    match e {
        CallError::Unreachable => GroupOpError::Unreachable,
        CallError::Malformed => GroupOpError::Rejected("malformed answer".into()),
        e => match (e.status(), e.code().as_deref()) {
            (_, Some("unknown_user")) => GroupOpError::UnknownUser,
            (_, Some("unknown_group" | "unknown_invitation")) => GroupOpError::UnknownGroup,
            (_, Some("unknown_member")) => GroupOpError::UnknownMember,
            (_, Some("not_admin")) => GroupOpError::NotAdmin,
            (_, Some("group_full")) => GroupOpError::GroupFull,
            (_, Some("last_admin")) => GroupOpError::LastAdmin,
            (Some(429), _) => GroupOpError::RateLimited,
            (Some(404), _) => GroupOpError::UnknownGroup,
            (s, c) => {
                GroupOpError::Rejected(format!("HTTP {} {}", s.unwrap_or(0), c.unwrap_or_default()))
            }
        },
    }
}

impl From<GroupError> for GroupOpError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::NotAdmin => Self::NotAdmin,
            GroupError::InvalidName => Self::InvalidName,
            GroupError::InvalidDescription => Self::InvalidDescription,
            GroupError::InvalidAvatar => Self::InvalidAvatar,
            GroupError::InvalidMembers => Self::InvalidMembers,
            GroupError::UnknownMember => Self::UnknownMember,
            _ => Self::UnknownGroup,
        }
    }
}

fn group_path(group_id: &str, rest: &str) -> String {
    format!("/api/groups/{}{rest}", segment(group_id))
}

impl SottoClient {
    /// Creates a group named `name` with these members (user ids); this account is its admin.
    /// The name and roster reach the members only end to end. Returns the group id.
    pub async fn create_group(
        &self,
        member_ids: &[String],
        name: &str,
    ) -> Result<String, GroupOpError> {
        let n = name.chars().count();
        if n == 0 || n > sotto_client_core::MAX_GROUP_NAME_CHARS {
            return Err(GroupOpError::InvalidName);
        }
        {
            let core = self.inner.core();
            let me = core.user_id();
            if member_ids.len() >= sotto_client_core::MAX_GROUP_MEMBERS
                || member_ids
                    .iter()
                    .any(|m| m.is_empty() || m.len() > 64 || m == me)
            {
                return Err(GroupOpError::InvalidMembers);
            }
        }
        let req = CreateGroupRequest {
            members: member_ids.to_vec(),
            // The relay stores this opaque blob; the name travels in the encrypted roster.
            metadata: Base64(Vec::new()),
        };
        let created: GroupCreated = self
            .inner
            .http
            .json(Method::POST, "/api/groups", Some(&req))
            .await
            .map_err(relay_error)?;
        self.inner
            .core()
            .group_created(now_ms(), &created.group_id, member_ids, name)?;
        self.inner.drain().await;
        Ok(created.group_id)
    }

    /// Adds members (admins only).
    pub async fn add_group_members(
        &self,
        group_id: &str,
        user_ids: &[String],
    ) -> Result<(), GroupOpError> {
        self.check_admin(group_id)?;
        let req = JoinGroupRequest {
            user_ids: Some(user_ids.to_vec()),
            invite_token: None,
        };
        let _: GroupMembers = self
            .inner
            .http
            .json(Method::POST, &group_path(group_id, "/join"), Some(&req))
            .await
            .map_err(relay_error)?;
        self.inner
            .core()
            .group_members_added(now_ms(), group_id, user_ids)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Removes a member (admins only); this device's sender key is rotated, so the removed
    /// member cannot read what follows.
    pub async fn remove_group_member(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), GroupOpError> {
        self.check_admin(group_id)?;
        let path = group_path(group_id, &format!("/members/{}", segment(user_id)));
        self.inner
            .http
            .empty(Method::DELETE, &path, None::<&()>)
            .await
            .map_err(relay_error)?;
        self.inner
            .core()
            .group_member_removed(now_ms(), group_id, user_id)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Makes a member admin or member (admins only).
    pub async fn set_group_role(
        &self,
        group_id: &str,
        user_id: &str,
        admin: bool,
    ) -> Result<(), GroupOpError> {
        self.check_admin(group_id)?;
        let role = if admin {
            GroupRole::Admin
        } else {
            GroupRole::Member
        };
        let path = group_path(group_id, &format!("/members/{}", segment(user_id)));
        self.inner
            .http
            .empty(Method::PUT, &path, Some(&SetRoleRequest { role }))
            .await
            .map_err(relay_error)?;
        self.inner
            .core()
            .group_role_set(now_ms(), group_id, user_id, admin)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Renames the group (admins only); the name travels only end to end.
    pub async fn rename_group(&self, group_id: &str, name: &str) -> Result<(), GroupOpError> {
        self.inner.core().rename_group(now_ms(), group_id, name)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Sets the group's description (admins only; 0-500 characters, empty clears it); it
    /// travels only end to end.
    pub async fn set_group_description(
        &self,
        group_id: &str,
        description: &str,
    ) -> Result<(), GroupOpError> {
        self.inner
            .core()
            .set_group_description(now_ms(), group_id, description)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Sets the group's avatar from an image file (admins only; image, at most 5 MB), or
    /// clears it with `None`. The image is encrypted and uploaded like an attachment; its key
    /// travels only inside the end-to-end encrypted group state.
    pub async fn set_group_avatar(
        &self,
        group_id: &str,
        image: Option<(&std::path::Path, &str)>,
    ) -> Result<(), GroupOpError> {
        {
            let core = self.inner.core();
            let g = core.group(group_id).filter(|g| g.active);
            let me = core.user_id().to_owned();
            let g = g.ok_or(GroupOpError::UnknownGroup)?;
            if !g.members.iter().any(|m| m.user_id == me && m.admin) {
                return Err(GroupOpError::NotAdmin);
            }
        }
        let pointer = match image {
            None => None,
            Some((path, content_type)) => {
                let size = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| GroupOpError::Rejected(format!("{}: {e}", path.display())))?
                    .len();
                if !content_type.starts_with("image/")
                    || size == 0
                    || size > sotto_client_core::MAX_GROUP_AVATAR_BYTES
                {
                    return Err(GroupOpError::InvalidAvatar);
                }
                let pointer = crate::attachments::upload(&self.inner.http, path, content_type)
                    .await
                    .map_err(|e| match e {
                        crate::AttachmentError::Unreachable => GroupOpError::Unreachable,
                        e => GroupOpError::Rejected(e.to_string()),
                    })?;
                Some(pointer)
            }
        };
        self.inner
            .core()
            .set_group_avatar(now_ms(), group_id, pointer)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Downloads, verifies and decrypts the group's avatar into `dest`; `Ok(None)` when the
    /// group has none.
    pub async fn download_group_avatar(
        &self,
        group_id: &str,
        dest: &std::path::Path,
    ) -> Result<Option<u64>, crate::AttachmentError> {
        let avatar = self.inner.core().group(group_id).and_then(|g| g.avatar);
        match avatar {
            Some(pointer) => crate::attachments::download(&self.inner.http, &pointer, dest)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// Leaves the group.
    pub async fn leave_group(&self, group_id: &str) -> Result<(), GroupOpError> {
        if !self.inner.core().group(group_id).is_some_and(|g| g.active) {
            return Err(GroupOpError::UnknownGroup);
        }
        self.inner
            .http
            .empty(Method::DELETE, &group_path(group_id, "/leave"), None::<&()>)
            .await
            .map_err(relay_error)?;
        self.inner.core().group_left(now_ms(), group_id)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Pending invitations to groups (someone who never wrote to this account added it).
    pub async fn group_invitations(&self) -> Result<Vec<(String, String)>, GroupOpError> {
        let list: GroupInvitations = self
            .inner
            .http
            .json(Method::GET, "/api/groups/invitations", None::<&()>)
            .await
            .map_err(relay_error)?;
        Ok(list
            .invitations
            .into_iter()
            .map(|i| (i.group_id, i.inviter_user_id))
            .collect())
    }

    /// Accepts a pending invitation: the relay starts routing the group's messages here; the
    /// roster and keys come end to end from the group's admins and members.
    pub async fn accept_group_invitation(&self, group_id: &str) -> Result<(), GroupOpError> {
        let _: GroupMembers = self
            .inner
            .http
            .json(
                Method::POST,
                &group_path(group_id, "/invitation"),
                None::<&()>,
            )
            .await
            .map_err(relay_error)?;
        Ok(())
    }

    /// The groups this device knows, with their verified rosters.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.inner.core().groups()
    }

    /// One group.
    pub fn group(&self, group_id: &str) -> Option<GroupInfo> {
        self.inner.core().group(group_id)
    }

    /// Sends a text to a group (one Sender-Key ciphertext for every member device); returns
    /// once the relay accepted it.
    pub async fn send_group_text(
        &self,
        group_id: &str,
        text: &str,
    ) -> Result<SentMessage, SendTextError> {
        self.send_and_wait(|core, now| core.send_group_text(now, group_id, text))
            .await
            .map_err(Into::into)
    }

    /// Encrypts and uploads `path` as it is read, then sends its key and digest to the group in
    /// one Sender-Key message; returns once the relay accepted it.
    pub async fn send_group_attachment(
        &self,
        group_id: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<SentMessage, crate::AttachmentError> {
        if !self.inner.core().group(group_id).is_some_and(|g| g.active) {
            return Err(crate::AttachmentError::Send("unknown group".into()));
        }
        let pointer = crate::attachments::upload(&self.inner.http, path, content_type).await?;
        self.send_and_wait(|core, now| core.send_group_attachment(now, group_id, pointer, None))
            .await
            .map_err(Into::into)
    }

    /// Typing started or stopped in a group (needs this device's chain with the members: send a
    /// group message first).
    pub async fn set_group_typing(
        &self,
        group_id: &str,
        typing: bool,
    ) -> Result<(), crate::QueryError> {
        self.inner
            .core()
            .set_group_typing(now_ms(), group_id, typing)
            .map_err(|_| crate::QueryError::Invalid("no group chain yet (send a message first)"))?;
        self.inner.drain().await;
        Ok(())
    }

    fn check_admin(&self, group_id: &str) -> Result<(), GroupOpError> {
        let core = self.inner.core();
        let me = core.user_id().to_owned();
        let g = core
            .group(group_id)
            .filter(|g| g.active)
            .ok_or(GroupOpError::UnknownGroup)?;
        if !g.members.iter().any(|m| m.user_id == me && m.admin) {
            return Err(GroupOpError::NotAdmin);
        }
        Ok(())
    }
}
