//! Presence (status, away, subscriptions) and ephemeral envelopes (typing).
//!
//! Presence changes are pushed to the connected devices of users who share a group with the user
//! and to devices that subscribed to the user; the WebSocket task calls [`on_connect`] and
//! [`on_disconnect`]. Ephemeral envelopes go to devices connected right now and nowhere else.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use sotto_wire::{
    EphemeralEnvelope, EphemeralRequest, PresenceSnapshot, PresenceStatus, PresenceSubscriptions,
    ServerFrame, SetPresenceRequest, UserStatus,
};

use crate::api::valid_id;
use crate::auth::Auth;
use crate::cluster::{DevicePresence, DeviceState, Event};
use crate::error::{Json, Path};
use crate::ratelimit::{Limit, RateKey};
use crate::realtime::{LiveConn, Location, Transition, EPHEMERAL_MAX_AGE, MAX_SUBSCRIPTIONS};
use crate::store::DeviceAuth;
use crate::{now_ms, AppError, AppState};

fn frame_text(frame: &ServerFrame) -> Utf8Bytes {
    serde_json::to_string(frame).unwrap_or_default().into()
}

async fn user_status(state: &AppState, user_id: &str) -> Result<UserStatus, AppError> {
    let status = state.services().realtime().status(user_id);
    let last_seen = if status == PresenceStatus::Offline {
        state.store().last_seen(user_id).await?
    } else {
        Some(now_ms())
    };
    Ok(UserStatus {
        user_id: user_id.to_owned(),
        status,
        last_seen: last_seen.and_then(|t| u64::try_from(t).ok()),
    })
}

/// Who hears about a status change from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Its subscribers here, and the co-members' devices wherever they are connected: for a
    /// change of one of this process's devices (other processes tell only their subscribers).
    Everywhere,
    /// Its subscribers and co-members' devices here: for devices of a process that is gone
    /// (every process tells its own).
    Here,
}

/// Pushes a user's current status to everyone entitled to it (see [`Audience`]).
async fn broadcast(state: &AppState, user_id: &str, audience: Audience) {
    let status = match user_status(state, user_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = ?e, "presence lookup failed");
            return;
        }
    };
    let realtime = state.services().realtime();
    let mut targets: HashSet<i64> = realtime.watchers_of(user_id).into_iter().collect();
    match state.store().co_members(user_id).await {
        Ok(users) => {
            for user in users {
                targets.extend(realtime.devices_of(&user));
                if audience == Audience::Everywhere {
                    targets.extend(realtime.remote_devices_of(&user));
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "presence audience lookup failed"),
    }
    let text = frame_text(&ServerFrame::Presence(status));
    let targets: Vec<i64> = targets.into_iter().collect();
    push_anywhere(state, &targets, &text, Instant::now());
}

/// After a status change of one of this process's devices: lastSeen when the user went
/// offline, then the pushes to its audience (subscribers here, co-members everywhere).
pub fn announce(state: &AppState, user_id: &str, transition: Transition) {
    announce_with(state, user_id, transition, Audience::Everywhere);
}

/// After devices of a relay process that is gone went offline with it: lastSeen, then the pushes
/// to this process's audience (every process that noticed tells its own).
pub fn announce_here(state: &AppState, user_id: &str, transition: Transition) {
    announce_with(state, user_id, transition, Audience::Here);
}

/// After a change another process reported (it records lastSeen and tells the co-members): the
/// subscribers here hear it, with no database read. A device that is both a subscriber here and
/// a co-member's may hear it twice (presence frames are states: the second changes nothing).
pub fn announce_remote(state: &AppState, user_id: &str, transition: Transition) {
    if !transition.changed() || *state.shutdown_signal().borrow() {
        return;
    }
    let realtime = state.services().realtime();
    let watchers = realtime.watchers_of(user_id);
    if watchers.is_empty() {
        return;
    }
    let status = UserStatus {
        user_id: user_id.to_owned(),
        status: transition.after,
        // Online: now, as for local devices; offline: the change just happened.
        last_seen: u64::try_from(now_ms()).ok(),
    };
    let text = frame_text(&ServerFrame::Presence(status));
    let now = Instant::now();
    for pk in watchers {
        realtime.push(pk, text.clone(), now);
    }
}

fn announce_with(state: &AppState, user_id: &str, transition: Transition, audience: Audience) {
    if transition.changed() {
        let state = state.clone();
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            // While shutting down every connection closes at once: keep lastSeen, skip the pushes
            // (the audience is closing too) and the noise of writes racing the store's close.
            let closing = *state.shutdown_signal().borrow();
            if transition.after == PresenceStatus::Offline {
                if let Err(e) = state.store().set_last_seen(&user_id, now_ms()).await {
                    if closing {
                        tracing::debug!(error = %e, "last-seen update failed during shutdown");
                    } else {
                        tracing::warn!(error = %e, "last-seen update failed");
                    }
                }
            }
            if !closing {
                broadcast(&state, &user_id, audience).await;
            }
        });
    }
}

/// A device's WebSocket opened.
pub fn on_connect(state: &AppState, device: &DeviceAuth) -> Arc<LiveConn> {
    let (conn, transition) = state.services().realtime().connect(device);
    if let Some(cluster) = state.hub().cluster() {
        cluster.presence(vec![conn.presence()]);
    }
    announce(state, &device.user_id, transition);
    conn
}

/// A device's WebSocket closed.
pub fn on_disconnect(state: &AppState, device: &DeviceAuth, conn: &LiveConn) {
    let realtime = state.services().realtime();
    let transition = realtime.disconnect(conn);
    if let Some(cluster) = state.hub().cluster() {
        // Unless a newer connection of the device took over here.
        if !realtime.is_connected(device.pk) {
            cluster.presence(vec![conn.gone()]);
        }
    }
    announce(state, &device.user_id, transition);
}

/// Sets a device connected here away (or back) and tells everyone; `false` if it is not
/// connected here.
pub fn set_away_here(state: &AppState, device: &DeviceAuth, away: bool) -> bool {
    let realtime = state.services().realtime();
    let Some(transition) = realtime.set_away(device, away) else {
        return false;
    };
    if let Some(cluster) = state.hub().cluster() {
        cluster.presence(vec![DevicePresence {
            pk: device.pk,
            user: device.user_id.clone(),
            state: if away {
                DeviceState::Away
            } else {
                DeviceState::Online
            },
        }]);
    }
    announce(state, &device.user_id, transition);
    true
}

/// What someone not entitled to a user's presence is told: offline, never seen, exactly what a
/// user who never connected looks like.
fn hidden_status(user_id: &str) -> UserStatus {
    UserStatus {
        user_id: user_id.to_owned(),
        status: PresenceStatus::Offline,
        last_seen: None,
    }
}

/// `viewer`'s view of `user_id`'s presence.
async fn status_for(state: &AppState, user_id: &str, viewer: &str) -> Result<UserStatus, AppError> {
    if state.store().presence_visible(user_id, viewer).await? {
        user_status(state, user_id).await
    } else {
        Ok(hidden_status(user_id))
    }
}

/// `GET /api/users/{userId}/status`: the real status for contacts (the user sent the caller a
/// message, or they share a group), "offline, never seen" for everyone else.
#[utoipa::path(
    get, path = "/api/users/{user_id}/status", tag = "presence", summary = "Presence: online, away or offline with lastSeen (contacts and co-members only)", security(("bearer" = [])),
    responses(
        (status = 200, description = "the status", body = sotto_wire::UserStatus),
        (status = 404, description = "`unknown_user`"),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    Auth(viewer): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<UserStatus>, AppError> {
    if !valid_id(&user_id) || !state.store().user_exists(&user_id).await? {
        return Err(AppError::not_found("unknown_user", "no such user"));
    }
    Ok(Json(status_for(&state, &user_id, &viewer.user_id).await?))
}

fn not_connected() -> AppError {
    AppError::conflict(
        "not_connected",
        "this device has no open WebSocket; presence applies to connections",
    )
}

/// `PUT /api/presence`.
#[utoipa::path(
    put, path = "/api/presence", tag = "presence", summary = "Set the calling (connected) device online or away", security(("bearer" = [])),
    responses(
        (status = 204, description = "set"),
        (status = 400, description = "`invalid_status`"),
        (status = 409, description = "`not_connected`"),
    )
)]
pub async fn set(
    State(state): State<AppState>,
    Auth(device): Auth,
    Json(req): Json<SetPresenceRequest>,
) -> Result<StatusCode, AppError> {
    let away = match req.status {
        PresenceStatus::Online => false,
        PresenceStatus::Away => true,
        PresenceStatus::Offline => {
            return Err(AppError::bad_request(
                "invalid_status",
                "status must be online or away",
            ))
        }
    };
    if set_away_here(&state, &device, away) {
        return Ok(StatusCode::NO_CONTENT);
    }
    // Connected at another relay process: that one applies it.
    match (
        state.services().realtime().locate(device.pk),
        state.hub().cluster(),
    ) {
        (Location::At(to), Some(cluster)) => {
            cluster.publish(Event::Away {
                to,
                pk: device.pk,
                away,
            });
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(not_connected()),
    }
}

/// `PUT /api/presence/subscriptions`.
#[utoipa::path(
    put, path = "/api/presence/subscriptions", tag = "presence", summary = "Replace the connected device's presence subscriptions", security(("bearer" = [])),
    responses(
        (status = 200, description = "the current statuses", body = sotto_wire::PresenceSnapshot),
        (status = 400, description = "`too_many_users`"),
        (status = 409, description = "`not_connected`"),
    )
)]
pub async fn subscribe(
    State(state): State<AppState>,
    Auth(device): Auth,
    Json(req): Json<PresenceSubscriptions>,
) -> Result<Json<PresenceSnapshot>, AppError> {
    if req.user_ids.len() > MAX_SUBSCRIPTIONS {
        return Err(AppError::bad_request(
            "too_many_users",
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions"),
        ));
    }
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    // Only users whose presence the caller may see are watched; the others are answered
    // "offline, never seen" and never pushed (visibility is decided at subscription).
    let mut visible = Vec::new();
    for user in req.user_ids {
        if valid_id(&user) && seen.insert(user.clone()) && state.store().user_exists(&user).await? {
            let may = state
                .store()
                .presence_visible(&user, &device.user_id)
                .await?;
            if may {
                users.push(user.clone());
            }
            visible.push((user, may));
        }
    }
    let realtime = state.services().realtime();
    if !realtime.subscribe(device.pk, &users) {
        // Connected at another relay process: that one holds the subscriptions.
        match (realtime.locate(device.pk), state.hub().cluster()) {
            (Location::At(to), Some(cluster)) => cluster.publish(Event::Subscribe {
                to,
                pk: device.pk,
                users,
            }),
            _ => return Err(not_connected()),
        }
    }
    let mut statuses = Vec::with_capacity(visible.len());
    for (user, may) in &visible {
        statuses.push(if *may {
            user_status(&state, user).await?
        } else {
            hidden_status(user)
        });
    }
    Ok(Json(PresenceSnapshot { statuses }))
}

/// Queues a frame for devices connected here and sends it to the processes holding the others;
/// devices connected nowhere get nothing.
fn push_anywhere(state: &AppState, pks: &[i64], text: &Utf8Bytes, at: Instant) {
    let realtime = state.services().realtime();
    let mut elsewhere: std::collections::HashMap<u64, Vec<i64>> = Default::default();
    for pk in pks {
        match realtime.locate(*pk) {
            Location::Here => {
                realtime.push(*pk, text.clone(), at);
            }
            Location::At(origin) => elsewhere.entry(origin).or_default().push(*pk),
            Location::Nowhere => {}
        }
    }
    if let Some(cluster) = state.hub().cluster() {
        for (to, pks) in elsewhere {
            cluster.publish(Event::Push {
                to,
                pks,
                text: text.as_str().to_owned(),
            });
        }
    }
}

/// `POST /api/messages/ephemeral`: relayed to connected devices only, never stored.
#[utoipa::path(
    post, path = "/api/messages/ephemeral", tag = "presence", summary = "Relay an ephemeral envelope (typing) to connected devices only", security(("bearer" = [])),
    responses(
        (status = 204, description = "relayed"),
        (status = 400, description = "`invalid_content`, `invalid_ephemeral`, `duplicate_device`"),
        (status = 404, description = "`unknown_user`, `unknown_group`"),
        (status = 429, description = "`rate_limited`: ephemeral sends per account"),
    )
)]
pub async fn ephemeral(
    State(state): State<AppState>,
    Auth(sender): Auth,
    Json(req): Json<EphemeralRequest>,
) -> Result<StatusCode, AppError> {
    let max = state.config().max_envelope_bytes;
    let check_len = |len: usize| {
        if len == 0 || len > max {
            Err(AppError::bad_request(
                "invalid_content",
                format!("content must be 1-{max} bytes"),
            ))
        } else {
            Ok(())
        }
    };
    let now = now_ms();
    let age_ms = u64::try_from(now)
        .unwrap_or(0)
        .saturating_sub(req.timestamp);
    let stale = u128::from(age_ms) > EPHEMERAL_MAX_AGE.as_millis();
    let envelope = |group_id: Option<String>, content: sotto_wire::Base64| {
        frame_text(&ServerFrame::Ephemeral(EphemeralEnvelope {
            source_user_id: sender.user_id.clone(),
            source_device_id: sender.device_id,
            group_id,
            timestamp: req.timestamp,
            content,
        }))
    };
    let at = Instant::now();
    match (&req.recipient_id, &req.group_id) {
        (Some(recipient), None) => {
            if req.content.is_some() || req.messages.is_empty() {
                return Err(AppError::bad_request(
                    "invalid_ephemeral",
                    "a 1:1 ephemeral needs `messages` and no `content`",
                ));
            }
            let mut seen = HashSet::new();
            for m in &req.messages {
                check_len(m.content.as_bytes().len())?;
                if !seen.insert(m.device_id) {
                    return Err(AppError::bad_request(
                        "duplicate_device",
                        "two ciphertexts for one device",
                    ));
                }
            }
            if !valid_id(recipient) || !state.store().user_exists(recipient).await? {
                return Err(AppError::not_found("unknown_user", "no such recipient"));
            }
            if stale {
                return Ok(StatusCode::NO_CONTENT);
            }
            state
                .limiter()
                .check(Limit::Ephemeral, RateKey::Account(&sender.user_id), 1)
                .await?;
            let devices = state.store().devices(recipient).await?;
            for m in req.messages.iter() {
                let Some(device) = devices.iter().find(|d| d.device_id == m.device_id) else {
                    continue;
                };
                if device.pk != sender.pk {
                    push_anywhere(&state, &[device.pk], &envelope(None, m.content.clone()), at);
                }
            }
        }
        (None, Some(group_id)) => {
            let (Some(content), true) = (&req.content, req.messages.is_empty()) else {
                return Err(AppError::bad_request(
                    "invalid_ephemeral",
                    "a group ephemeral needs `content` and no `messages`",
                ));
            };
            check_len(content.as_bytes().len())?;
            if !valid_id(group_id) {
                return Err(AppError::not_found(
                    "unknown_group",
                    "no such group, or you are not a member",
                ));
            }
            let devices = state
                .store()
                .group_devices(group_id, &sender.user_id)
                .await?
                .ok_or_else(|| {
                    AppError::not_found("unknown_group", "no such group, or you are not a member")
                })?;
            if stale {
                return Ok(StatusCode::NO_CONTENT);
            }
            state
                .limiter()
                .check(Limit::Ephemeral, RateKey::Account(&sender.user_id), 1)
                .await?;
            let text = envelope(Some(group_id.clone()), content.clone());
            let pks: Vec<i64> = devices
                .into_iter()
                .map(|(_, pk)| pk)
                .filter(|pk| *pk != sender.pk)
                .collect();
            push_anywhere(&state, &pks, &text, at);
        }
        _ => {
            return Err(AppError::bad_request(
                "invalid_ephemeral",
                "give exactly one of recipientId and groupId",
            ))
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
