//! Groups: membership for routing, one stored ciphertext per group message.

use super::valid_id;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sotto_wire::{
    CreateGroupRequest, DeviceRef, Envelope, EnvelopeKind, GroupCreated, GroupInvitation,
    GroupInvitations, GroupInvite, GroupList, GroupMember, GroupMembers, GroupRole,
    GroupSendRequest, GroupSummary, JoinGroupRequest, SendMessageResponse, ServerFrame,
    SetRoleRequest,
};

use crate::auth::{hash_token, Auth};
use crate::error::{Json, Path, Query};
use crate::ratelimit::{Limit, RateKey};
use crate::store::groups::{
    wire_role, GroupSendBatch, GroupSendOutcome, GroupWrite, MemberChange, MemberOp, NewGroup,
    ROLE_ADMIN, ROLE_MEMBER,
};
use crate::store::{DeviceAuth, Target};
use crate::{now_ms, AppError, AppState};

/// Largest encrypted metadata blob.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// How long an invite token works.
pub const INVITE_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Most users one join request may add.
const MAX_ADD: usize = 1000;

fn unknown_group() -> AppError {
    AppError::not_found("unknown_group", "no such group, or you are not a member")
}

fn check_group_id(id: &str) -> Result<(), AppError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(unknown_group())
    }
}

fn check_user_ids(ids: &[String]) -> Result<(), AppError> {
    if ids.len() > MAX_ADD {
        return Err(AppError::bad_request(
            "too_many_users",
            format!("at most {MAX_ADD} users per request"),
        ));
    }
    if let Some(bad) = ids.iter().find(|id| !valid_id(id)) {
        return Err(AppError::bad_request(
            "invalid_user_id",
            format!(
                "invalid user id {:?}",
                bad.chars().take(64).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// Maps a refused write to its answer; wakes mailboxes of an applied one.
fn applied(state: &AppState, write: GroupWrite) -> Result<i64, AppError> {
    match write {
        GroupWrite::Done { revision, notify } => {
            for pk in notify {
                state.hub().notify(pk);
            }
            Ok(revision)
        }
        GroupWrite::NotMember => Err(unknown_group()),
        GroupWrite::NotAdmin => Err(AppError::client(
            StatusCode::FORBIDDEN,
            "not_admin",
            "only an admin of the group can do this",
        )),
        GroupWrite::LastAdmin => Err(AppError::conflict(
            "last_admin",
            "the group's last admin cannot step down (name another admin first, or leave)",
        )),
        GroupWrite::UnknownInvite => Err(AppError::not_found(
            "unknown_invite",
            "no such invite in this group",
        )),
        GroupWrite::UnknownUsers(users) => Err(AppError::not_found(
            "unknown_user",
            format!("no such user: {}", users.join(", ")),
        )),
        GroupWrite::UnknownMember => Err(AppError::not_found(
            "unknown_member",
            "no such member in this group",
        )),
        GroupWrite::GroupFull => Err(AppError::conflict(
            "group_full",
            format!(
                "a group has at most {} members",
                state.config().max_group_size
            ),
        )),
        GroupWrite::InvalidInvite => Err(AppError::client(
            StatusCode::FORBIDDEN,
            "invalid_invite",
            "the invite token is unknown, expired or revoked",
        )),
        GroupWrite::NoInvitation => Err(AppError::not_found(
            "unknown_invitation",
            "no such pending invitation to this group",
        )),
        GroupWrite::InvitationExpired => Err(AppError::client(
            StatusCode::GONE,
            "invitation_expired",
            "this invitation expired; ask a member of the group to add you again",
        )),
        GroupWrite::NotInviter => Err(AppError::client(
            StatusCode::FORBIDDEN,
            "not_inviter",
            "only the member who invited this user, or an admin, can cancel the invitation",
        )),
    }
}

fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// How every envelope frame begins; the mailbox sequence follows.
const FRAME_HEAD: &str = r#"{"type":"envelope","data":{"seq":"#;

/// The WebSocket frame of a group message, serialised once per send: member devices differ only
/// in the mailbox sequence, which is spliced in per device.
#[derive(Debug)]
pub struct GroupFrame {
    /// Acceptance time (ms).
    pub server_ts: i64,
    /// The frame after the sequence.
    tail: String,
}

impl GroupFrame {
    /// Serialises `envelope` (its `seq` is ignored); `None` if the frame does not start with
    /// `FRAME_HEAD`, in which case devices read the message from their mailbox instead.
    pub fn new(mut envelope: Envelope) -> Option<Self> {
        envelope.seq = 0;
        let server_ts = i64::try_from(envelope.server_timestamp).ok()?;
        let text = serde_json::to_string(&ServerFrame::Envelope(envelope)).ok()?;
        let tail = text.strip_prefix(FRAME_HEAD)?.strip_prefix('0')?;
        if !tail.starts_with([',', '}']) {
            return None;
        }
        Some(GroupFrame {
            server_ts,
            tail: tail.to_owned(),
        })
    }

    /// The frame for the device whose reference has sequence `seq`.
    pub fn text(&self, seq: i64) -> String {
        let mut text = String::with_capacity(self.bytes());
        text.push_str(FRAME_HEAD);
        let _ = write!(text, "{}", u64::try_from(seq).unwrap_or(0));
        text.push_str(&self.tail);
        text
    }

    /// Size of a frame, at most.
    pub fn bytes(&self) -> usize {
        FRAME_HEAD.len() + 20 + self.tail.len()
    }
}

/// `POST /api/groups`.
#[utoipa::path(
    post, path = "/api/groups", tag = "groups", summary = "Create a group (caller is admin)", security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = sotto_wire::GroupCreated),
        (status = 400, description = "`too_many_users`, `invalid_user_id`"),
        (status = 404, description = "`unknown_user`"),
        (status = 409, description = "`group_full`, `too_many_groups`"),
        (status = 413, description = "`payload_too_large`: metadata over 16 KiB"),
        (status = 429, description = "`rate_limited`: group creations and membership changes per account"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(device): Auth,
    Json(req): Json<CreateGroupRequest>,
) -> Result<(StatusCode, Json<GroupCreated>), AppError> {
    if req.metadata.as_bytes().len() > MAX_METADATA_BYTES {
        return Err(AppError::too_large(format!(
            "metadata is limited to {MAX_METADATA_BYTES} bytes"
        )));
    }
    check_user_ids(&req.members)?;
    let mut seen = HashSet::new();
    let members: Vec<String> = req
        .members
        .into_iter()
        .filter(|m| *m != device.user_id && seen.insert(m.clone()))
        .collect();
    if members.len() + 1 > state.config().max_group_size as usize {
        return Err(refused(&state, GroupWrite::GroupFull));
    }
    let key = RateKey::Account(&device.user_id);
    state.peek(Limit::GroupChanges, key, 1).await?;
    let user_id = device.user_id.clone();
    let now = now_ms();
    let group_id = uuid::Uuid::new_v4().to_string();
    let write = state
        .store()
        .create_group(NewGroup {
            id: group_id.clone(),
            creator: device,
            members,
            metadata: req.metadata.into_bytes(),
            now,
            expires_at: state.expires_at(now),
            consent: state.config().group_consent,
            invitation_expires_at: invitation_expiry(&state, now),
        })
        .await?;
    let rev = applied(&state, write)?;
    let invited_user_ids = state
        .store()
        .group_view(&group_id, &user_id, now)
        .await?
        .map(|v| v.invited)
        .unwrap_or_default();
    state
        .charge(Limit::GroupChanges, RateKey::Account(&user_id), 1)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(GroupCreated {
            group_id,
            revision: revision(rev),
            invited_user_ids,
        }),
    ))
}

/// When an invitation made at `now` expires.
fn invitation_expiry(state: &AppState, now: i64) -> i64 {
    let ttl = i64::try_from(state.config().group_invitation_ttl.as_millis()).unwrap_or(i64::MAX);
    now.saturating_add(ttl)
}

/// The answer for a refusal decided before reaching the store.
fn refused(state: &AppState, write: GroupWrite) -> AppError {
    match applied(state, write) {
        Err(e) => e,
        Ok(_) => AppError::Internal("a refusal was applied".into()),
    }
}

/// Query of `GET /api/groups`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupPageQuery {
    /// `nextCursor` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    /// Page size, 1-100 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Most groups per page.
pub const MAX_GROUP_PAGE: u32 = 100;

/// `GET /api/groups?after=&limit=`: one page of the caller's groups, oldest first.
#[utoipa::path(
    get, path = "/api/groups", tag = "groups", params(GroupPageQuery), summary = "The caller's groups, one page", security(("bearer" = [])),
    responses(
        (status = 200, description = "one page", body = sotto_wire::GroupList),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(device): Auth,
    Query(q): Query<GroupPageQuery>,
) -> Result<Json<GroupList>, AppError> {
    let limit = q.limit.unwrap_or(MAX_GROUP_PAGE);
    if !(1..=MAX_GROUP_PAGE).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid_limit",
            "limit must be 1-100",
        ));
    }
    let invalid_cursor = || AppError::bad_request("invalid_cursor", "not a cursor of this list");
    // The cursor is `<createdAt>.<groupId>` of the last group of the previous page.
    let after = match q.after {
        None => None,
        Some(c) => {
            let (ts, id) = c.split_once('.').ok_or_else(invalid_cursor)?;
            let ts: i64 = ts.parse().map_err(|_| invalid_cursor())?;
            if !valid_id(id) {
                return Err(invalid_cursor());
            }
            Some((ts, id.to_owned()))
        }
    };
    let rows = state
        .store()
        .groups_of(&device.user_id, after, limit)
        .await?;
    let next_cursor = if rows.len() == limit as usize {
        rows.last()
            .map(|g| format!("{}.{}", g.created_at, g.group_id))
    } else {
        None
    };
    Ok(Json(GroupList {
        groups: rows
            .into_iter()
            .map(|g| GroupSummary {
                group_id: g.group_id,
                role: wire_role(g.role),
                revision: revision(g.revision),
                member_count: u32::try_from(g.member_count).unwrap_or(0),
                metadata: g.metadata.into(),
            })
            .collect(),
        next_cursor,
    }))
}

async fn view(state: &AppState, group_id: &str, asker: &str) -> Result<GroupMembers, AppError> {
    let g = state
        .store()
        .group_view(group_id, asker, now_ms())
        .await?
        .ok_or_else(unknown_group)?;
    Ok(GroupMembers {
        group_id: g.group_id,
        revision: revision(g.revision),
        metadata: g.metadata.into(),
        members: g
            .members
            .into_iter()
            .map(|m| GroupMember {
                user_id: m.user_id,
                role: wire_role(m.role),
                joined_at: u64::try_from(m.joined_at).unwrap_or(0),
            })
            .collect(),
        invited_user_ids: g.invited,
    })
}

/// `GET /api/groups/{groupId}/members`: members only.
#[utoipa::path(
    get, path = "/api/groups/{group_id}/members", tag = "groups", summary = "Members (members only)", security(("bearer" = [])),
    responses(
        (status = 200, description = "the group", body = sotto_wire::GroupMembers),
        (status = 404, description = "`unknown_group`"),
    )
)]
pub async fn members(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(group_id): Path<String>,
) -> Result<Json<GroupMembers>, AppError> {
    check_group_id(&group_id)?;
    Ok(Json(view(&state, &group_id, &device.user_id).await?))
}

async fn change(
    state: &AppState,
    group_id: String,
    actor: DeviceAuth,
    op: MemberOp,
) -> Result<i64, AppError> {
    // Leaving, declining and cancelling are never limited; every other change queues events for
    // others.
    let limited = !matches!(
        op,
        MemberOp::Leave | MemberOp::DeclineInvitation | MemberOp::CancelInvitation(_)
    );
    let user_id = actor.user_id.clone();
    if limited {
        state
            .peek(Limit::GroupChanges, RateKey::Account(&user_id), 1)
            .await?;
    }
    let now = now_ms();
    let write = state
        .store()
        .change_members(MemberChange {
            group_id,
            actor,
            op,
            max_size: state.config().max_group_size,
            now,
            expires_at: state.expires_at(now),
            consent: state.config().group_consent,
            invitation_expires_at: invitation_expiry(state, now),
        })
        .await?;
    let revision = applied(state, write)?;
    if limited {
        state
            .charge(Limit::GroupChanges, RateKey::Account(&user_id), 1)
            .await;
    }
    Ok(revision)
}

/// `POST /api/groups/{groupId}/join`.
#[utoipa::path(
    post, path = "/api/groups/{group_id}/join", tag = "groups", summary = "Admin adds users, or the caller joins with an invite token", security(("bearer" = [])),
    responses(
        (status = 200, description = "the group", body = sotto_wire::GroupMembers),
        (status = 400, description = "`too_many_users`, `invalid_user_id`, `invalid_join`"),
        (status = 403, description = "`not_admin`, `invalid_invite`"),
        (status = 404, description = "`unknown_group`, `unknown_user`"),
        (status = 409, description = "`group_full`, `too_many_groups`"),
        (status = 429, description = "`rate_limited`: group creations and membership changes per account"),
    )
)]
pub async fn join(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(group_id): Path<String>,
    Json(req): Json<JoinGroupRequest>,
) -> Result<Json<GroupMembers>, AppError> {
    check_group_id(&group_id)?;
    let op = match (req.user_ids, req.invite_token) {
        (Some(users), None) => {
            check_user_ids(&users)?;
            if users.is_empty() {
                return Err(AppError::bad_request("no_users", "userIds is empty"));
            }
            MemberOp::Add(users)
        }
        (None, Some(token)) => {
            if token.len() != 43 {
                return Err(refused(&state, GroupWrite::InvalidInvite));
            }
            MemberOp::JoinWithInvite(hash_token(&token))
        }
        _ => {
            return Err(AppError::bad_request(
                "invalid_join",
                "give exactly one of userIds and inviteToken",
            ))
        }
    };
    change(&state, group_id.clone(), device.clone(), op).await?;
    Ok(Json(view(&state, &group_id, &device.user_id).await?))
}

/// `DELETE /api/groups/{groupId}/leave`.
#[utoipa::path(
    delete, path = "/api/groups/{group_id}/leave", tag = "groups", summary = "Leave", security(("bearer" = [])),
    responses(
        (status = 204, description = "left"),
        (status = 404, description = "`unknown_group`"),
    )
)]
pub async fn leave(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(group_id): Path<String>,
) -> Result<StatusCode, AppError> {
    check_group_id(&group_id)?;
    change(&state, group_id, device, MemberOp::Leave).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/groups/{groupId}/members/{userId}`: an admin removes a member.
#[utoipa::path(
    delete, path = "/api/groups/{group_id}/members/{user_id}", tag = "groups", summary = "Admin removes a member", security(("bearer" = [])),
    responses(
        (status = 204, description = "removed"),
        (status = 403, description = "`not_admin`"),
        (status = 404, description = "`unknown_group`, `unknown_member`"),
        (status = 409, description = "`last_admin`"),
        (status = 429, description = "`rate_limited`: group creations and membership changes per account"),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    check_group_id(&group_id)?;
    if !valid_id(&user_id) {
        return Err(refused(&state, GroupWrite::UnknownMember));
    }
    let op = if user_id == device.user_id {
        MemberOp::Leave
    } else {
        MemberOp::Remove(user_id)
    };
    change(&state, group_id, device, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/groups/{groupId}/members/{userId}`: an admin sets a role.
#[utoipa::path(
    put, path = "/api/groups/{group_id}/members/{user_id}", tag = "groups", summary = "Admin sets a member's role", security(("bearer" = [])),
    responses(
        (status = 204, description = "set"),
        (status = 403, description = "`not_admin`"),
        (status = 404, description = "`unknown_group`, `unknown_member`"),
        (status = 409, description = "`last_admin`"),
        (status = 429, description = "`rate_limited`: group creations and membership changes per account"),
    )
)]
pub async fn set_role(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path((group_id, user_id)): Path<(String, String)>,
    Json(req): Json<SetRoleRequest>,
) -> Result<StatusCode, AppError> {
    check_group_id(&group_id)?;
    if !valid_id(&user_id) {
        return Err(refused(&state, GroupWrite::UnknownMember));
    }
    let role = match req.role {
        GroupRole::Admin => ROLE_ADMIN,
        GroupRole::Member => ROLE_MEMBER,
    };
    change(&state, group_id, device, MemberOp::SetRole(user_id, role)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/groups/{groupId}/invitation`: the caller accepts their pending invitation and
/// becomes a member (every member gets a `membersAdded` event).
#[utoipa::path(
    post, path = "/api/groups/{group_id}/invitation", tag = "groups", summary = "Accept the caller's pending invitation", security(("bearer" = [])),
    responses(
        (status = 200, description = "now a member", body = sotto_wire::GroupMembers),
        (status = 404, description = "`unknown_invitation`"),
        (status = 410, description = "`invitation_expired` (until the expiry sweep deletes it; then 404)"),
        (status = 409, description = "`group_full`, `too_many_groups`"),
        (status = 429, description = "`rate_limited`: group creations and membership changes per account"),
    )
)]
pub async fn accept_invitation(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(group_id): Path<String>,
) -> Result<Json<GroupMembers>, AppError> {
    check_group_id(&group_id)?;
    change(
        &state,
        group_id.clone(),
        device.clone(),
        MemberOp::AcceptInvitation,
    )
    .await?;
    Ok(Json(view(&state, &group_id, &device.user_id).await?))
}

/// `DELETE /api/groups/{groupId}/invitation`: the caller declines their pending invitation.
#[utoipa::path(
    delete, path = "/api/groups/{group_id}/invitation", tag = "groups", summary = "Decline the caller's pending invitation", security(("bearer" = [])),
    responses(
        (status = 204, description = "declined"),
        (status = 404, description = "`unknown_invitation`"),
    )
)]
pub async fn decline_invitation(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(group_id): Path<String>,
) -> Result<StatusCode, AppError> {
    check_group_id(&group_id)?;
    change(&state, group_id, device, MemberOp::DeclineInvitation).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/groups/{groupId}/invitations/{userId}`: the inviter, or an admin, cancels a
/// pending (or expired) invitation.
#[utoipa::path(
    delete, path = "/api/groups/{group_id}/invitations/{user_id}", tag = "groups",
    summary = "The inviter or an admin cancels a user's pending invitation", security(("bearer" = [])),
    responses(
        (status = 204, description = "cancelled"),
        (status = 403, description = "`not_inviter`: only the inviter or an admin cancels"),
        (status = 404, description = "`unknown_group`, `unknown_invitation`"),
    )
)]
pub async fn cancel_invitation(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    check_group_id(&group_id)?;
    if !valid_id(&user_id) {
        return Err(refused(&state, GroupWrite::NoInvitation));
    }
    change(
        &state,
        group_id,
        device,
        MemberOp::CancelInvitation(user_id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/groups/invitations`: the caller's pending invitations.
#[utoipa::path(
    get, path = "/api/groups/invitations", tag = "groups", summary = "The caller's pending group invitations", security(("bearer" = [])),
    responses((status = 200, description = "pending invitations", body = sotto_wire::GroupInvitations))
)]
pub async fn invitations(
    State(state): State<AppState>,
    Auth(device): Auth,
) -> Result<Json<GroupInvitations>, AppError> {
    let rows = state
        .store()
        .invitations_of(&device.user_id, now_ms())
        .await?;
    Ok(Json(GroupInvitations {
        invitations: rows
            .into_iter()
            .map(|r| GroupInvitation {
                group_id: r.group_id,
                inviter_user_id: r.inviter,
                invited_at: u64::try_from(r.created_at).unwrap_or(0),
                expires_at: u64::try_from(r.expires_at).unwrap_or(0),
                metadata: r.metadata.into(),
            })
            .collect(),
    }))
}

/// `POST /api/groups/{groupId}/invites`.
#[utoipa::path(
    post, path = "/api/groups/{group_id}/invites", tag = "groups", summary = "Admin creates an invite token", security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = sotto_wire::GroupInvite),
        (status = 403, description = "`not_admin`"),
        (status = 404, description = "`unknown_group`"),
        (status = 429, description = "`rate_limited`: invite links per account"),
    )
)]
pub async fn create_invite(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(group_id): Path<String>,
) -> Result<(StatusCode, Json<GroupInvite>), AppError> {
    check_group_id(&group_id)?;
    state
        .peek(Limit::Invites, RateKey::Account(&device.user_id), 1)
        .await?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let invite_id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let expires_at = now.saturating_add(INVITE_TTL_MS);
    let write = state
        .store()
        .create_invite(
            &group_id,
            &device.user_id,
            &invite_id,
            &hash_token(&token),
            now,
            expires_at,
        )
        .await?;
    applied(&state, write)?;
    state
        .charge(Limit::Invites, RateKey::Account(&device.user_id), 1)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(GroupInvite {
            invite_id,
            token,
            expires_at: u64::try_from(expires_at).unwrap_or(0),
        }),
    ))
}

/// `DELETE /api/groups/{groupId}/invites/{inviteId}`.
#[utoipa::path(
    delete, path = "/api/groups/{group_id}/invites/{invite_id}", tag = "groups", summary = "Admin revokes an invite", security(("bearer" = [])),
    responses(
        (status = 204, description = "revoked"),
        (status = 403, description = "`not_admin`"),
        (status = 404, description = "`unknown_group`, `unknown_invite`"),
    )
)]
pub async fn revoke_invite(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path((group_id, invite_id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    check_group_id(&group_id)?;
    if !valid_id(&invite_id) {
        return Err(refused(&state, GroupWrite::UnknownInvite));
    }
    let write = state
        .store()
        .revoke_invite(&group_id, &device.user_id, &invite_id)
        .await?;
    applied(&state, write)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/groups/{groupId}/messages`.
#[utoipa::path(
    post, path = "/api/groups/{group_id}/messages", operation_id = "send_group_message", tag = "groups", summary = "Send one Sender-Key ciphertext to every member device (stored once)", security(("bearer" = [])),
    responses(
        (status = 200, description = "accepted", body = sotto_wire::SendMessageResponse),
        (status = 400, description = "`empty_content`, `duplicate_device`, `invalid_content`, `invalid_client_message_id`"),
        (status = 404, description = "`unknown_group`"),
        (status = 409, description = "`mismatched_devices` (body: MismatchedDevices), `client_message_id_reused`", body = crate::openapi::SendConflict),
        (status = 410, description = "`stale_devices`", body = sotto_wire::StaleDevices),
        (status = 413, description = "`payload_too_large`: the ciphertext is over the envelope limit"),
        (status = 429, description = "`rate_limited`: sends per account"),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    Auth(sender): Auth,
    Path(group_id): Path<String>,
    Json(req): Json<GroupSendRequest>,
) -> Result<Json<SendMessageResponse>, AppError> {
    check_group_id(&group_id)?;
    crate::api::check_client_message_id(&req.client_message_id)?;
    let max = state.config().max_envelope_bytes;
    let len = req.content.as_bytes().len();
    if len == 0 {
        return Err(AppError::bad_request(
            "empty_content",
            "content must not be empty",
        ));
    }
    if len > max {
        return Err(AppError::too_large(format!(
            "content is {len} bytes; the limit is {max}"
        )));
    }
    let mut seen = HashSet::new();
    let mut targets = Vec::with_capacity(req.messages.len());
    for m in req.messages {
        if !seen.insert((m.user_id.clone(), m.device_id)) {
            return Err(AppError::bad_request(
                "duplicate_device",
                "two ciphertexts for one device",
            ));
        }
        let len = m.content.as_bytes().len();
        if len == 0 || len > max {
            return Err(AppError::bad_request(
                "invalid_content",
                format!("pairwise content must be 1-{max} bytes"),
            ));
        }
        targets.push(Target {
            user_id: m.user_id,
            device_id: m.device_id,
            registration_id: m.registration_id,
            content: m.content.into_bytes(),
        });
    }
    let count = targets.len() as u64 + 1;
    let now = now_ms();
    let content = req.content.into_bytes();
    // What the members' frame needs once the batch is moved into the store.
    let shared = Envelope {
        seq: 0,
        kind: EnvelopeKind::GroupMessage,
        source_user_id: sender.user_id.clone(),
        source_device_id: sender.device_id,
        server_message_id: String::new(),
        client_message_id: req.client_message_id.clone(),
        server_timestamp: u64::try_from(now).unwrap_or(0),
        content: Some(content.clone().into()),
        group_id: Some(group_id.clone()),
    };
    let digest = crate::api::send_digest("sotto-group-send-v1", &group_id, &content, &targets);
    let user_id = sender.user_id.clone();
    state
        .peek(Limit::Messages, RateKey::Account(&user_id), 1)
        .await?;
    let gate = state.hub().group_send_gate(&group_id);
    let turn = gate.lock().await;
    let outcome = state
        .store()
        .group_send(GroupSendBatch {
            group_id,
            sender,
            client_message_id: req.client_message_id,
            server_message_id: uuid::Uuid::new_v4().to_string(),
            now,
            expires_at: state.expires_at(now),
            content,
            targets,
            digest,
        })
        .await?;
    drop(turn);
    let refs = |list: Vec<(String, u32)>| -> Vec<DeviceRef> {
        list.into_iter()
            .map(|(user_id, device_id)| DeviceRef { user_id, device_id })
            .collect()
    };
    match outcome {
        GroupSendOutcome::Accepted {
            server_message_id,
            server_timestamp,
            notify,
            references,
        } => {
            // Devices that got a pairwise envelope read their mailbox; the others are handed the
            // shared frame (a device not at the head of its mailbox reads it instead).
            for pk in notify {
                state.hub().notify(pk);
            }
            let frame = GroupFrame::new(Envelope {
                server_message_id: server_message_id.clone(),
                server_timestamp: u64::try_from(server_timestamp).unwrap_or(0),
                ..shared
            });
            match frame {
                Some(frame) => state.hub().deliver_group(&references, &Arc::new(frame)),
                None => {
                    for (pk, _) in references {
                        state.hub().notify(pk);
                    }
                }
            }
            state.metrics().envelopes_accepted.inc_by(count);
            state
                .charge(Limit::Messages, RateKey::Account(&user_id), 1)
                .await;
            Ok(Json(SendMessageResponse {
                server_message_id,
                server_timestamp: u64::try_from(server_timestamp).unwrap_or(0),
                duplicate: false,
            }))
        }
        GroupSendOutcome::Duplicate {
            server_message_id,
            server_timestamp,
        } => Ok(Json(SendMessageResponse {
            server_message_id,
            server_timestamp: u64::try_from(server_timestamp).unwrap_or(0),
            duplicate: true,
        })),
        GroupSendOutcome::NotMember => Err(unknown_group()),
        GroupSendOutcome::Reused => Err(crate::api::client_message_id_reused()),
        GroupSendOutcome::SenderRemoved => Err(AppError::unauthorized()),
        GroupSendOutcome::Mismatch(m) => {
            if m.extra.is_empty() {
                Err(AppError::StaleDevices(refs(m.stale)))
            } else {
                Err(AppError::MismatchedDevices {
                    missing: Vec::new(),
                    extra: refs(m.extra),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_frame_splices_the_sequence() {
        let envelope = Envelope {
            seq: 0,
            kind: EnvelopeKind::GroupMessage,
            source_user_id: "u\"1".into(),
            source_device_id: 2,
            server_message_id: "s".into(),
            client_message_id: "c".into(),
            server_timestamp: 1_763_884_800_000,
            content: Some(vec![0, 1, 2, 255].into()),
            group_id: Some("g".into()),
        };
        let frame = GroupFrame::new(envelope.clone()).expect("envelope frames start with seq");
        assert_eq!(frame.server_ts, 1_763_884_800_000);
        for seq in [1, 42, i64::MAX] {
            let text = frame.text(seq);
            assert!(text.len() <= frame.bytes());
            let parsed: ServerFrame = serde_json::from_str(&text).unwrap();
            let expected = Envelope {
                seq: u64::try_from(seq).unwrap(),
                ..envelope.clone()
            };
            assert_eq!(parsed, ServerFrame::Envelope(expected.clone()));
            assert_eq!(
                text,
                serde_json::to_string(&ServerFrame::Envelope(expected)).unwrap()
            );
        }
    }
}
