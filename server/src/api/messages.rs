//! Sending, polling and acking envelopes.

use std::collections::HashSet;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use sotto_wire::{
    DeviceRef, Envelope, EnvelopePage, OutgoingMessage, SendMessageRequest, SendMessageResponse,
    UnreadCount,
};

use crate::auth::Auth;
use crate::error::{Json, Path, Query};
use crate::ratelimit::{Limit, RateKey};
use crate::store::{DeviceAuth, SendBatch, SendOutcome, StoredEnvelope, Target};
use crate::{now_ms, AppError, AppState};

/// Most envelopes per page or ack.
pub const MAX_PAGE: u32 = 100;

fn refs(list: Vec<(String, u32)>) -> Vec<DeviceRef> {
    list.into_iter()
        .map(|(user_id, device_id)| DeviceRef { user_id, device_id })
        .collect()
}

fn targets(
    state: &AppState,
    user_id: &str,
    list: Vec<OutgoingMessage>,
    out: &mut Vec<Target>,
) -> Result<(), AppError> {
    let max = state.config().max_envelope_bytes;
    let mut seen = HashSet::with_capacity(list.len());
    for m in list {
        if !seen.insert(m.device_id) {
            return Err(AppError::bad_request(
                "duplicate_device",
                format!("two ciphertexts for device {}", m.device_id),
            ));
        }
        let len = m.content.as_bytes().len();
        if len == 0 {
            return Err(AppError::bad_request(
                "empty_content",
                "content must not be empty",
            ));
        }
        if len > max {
            return Err(AppError::too_large(format!(
                "content for device {} is {len} bytes; the limit is {max}",
                m.device_id
            )));
        }
        out.push(Target {
            user_id: user_id.to_owned(),
            device_id: m.device_id,
            registration_id: m.registration_id,
            content: m.content.into_bytes(),
        });
    }
    Ok(())
}

/// `POST /api/messages/send`.
#[utoipa::path(
    post, path = "/api/messages/send", operation_id = "send_message", tag = "messages", summary = "Queue one ciphertext per device", security(("bearer" = [])),
    responses(
        (status = 200, description = "accepted (committed), or a retry of an accepted request", body = sotto_wire::SendMessageResponse),
        (status = 400, description = "`no_messages`, `duplicate_device`, `empty_content`, `invalid_client_message_id`, `invalid_sync_messages`"),
        (status = 404, description = "`unknown_user`"),
        (status = 409, description = "`mismatched_devices` (body: MismatchedDevices), `client_message_id_reused`", body = crate::openapi::SendConflict),
        (status = 410, description = "`stale_devices`", body = sotto_wire::StaleDevices),
        (status = 413, description = "`payload_too_large`: a ciphertext is over the envelope limit"),
        (status = 429, description = "`rate_limited`: sends per account"),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    Auth(sender): Auth,
    Json(req): Json<SendMessageRequest>,
) -> Result<Json<SendMessageResponse>, AppError> {
    let started = Instant::now();
    crate::api::check_client_message_id(&req.client_message_id)?;
    if !crate::api::valid_id(&req.recipient_id) {
        return Err(AppError::not_found("unknown_user", "no such recipient"));
    }
    let to_self = req.recipient_id == sender.user_id;
    if to_self && !req.sync_messages.is_empty() {
        return Err(AppError::bad_request(
            "invalid_sync_messages",
            "when sending to yourself, put every device in `messages`",
        ));
    }
    if req.messages.is_empty() && req.sync_messages.is_empty() {
        return Err(AppError::bad_request(
            "no_messages",
            "no ciphertext in the request",
        ));
    }
    let mut all = Vec::with_capacity(req.messages.len() + req.sync_messages.len());
    targets(&state, &req.recipient_id, req.messages, &mut all)?;
    targets(&state, &sender.user_id, req.sync_messages, &mut all)?;
    let now = now_ms();
    let count = all.len() as u64;
    let digest = crate::api::send_digest("sotto-send-v1", &req.recipient_id, &[], &all);
    // Counted once accepted: a refused send (409/410, a reused id) costs nothing.
    let user_id = sender.user_id.clone();
    state
        .peek(Limit::Messages, RateKey::Account(&user_id), 1)
        .await?;
    let batch = SendBatch {
        sender: sender.clone(),
        recipient: req.recipient_id,
        client_message_id: req.client_message_id,
        server_message_id: uuid::Uuid::new_v4().to_string(),
        now,
        expires_at: state.expires_at(now),
        targets: all,
        digest,
    };
    let outcome = state.store().send(batch).await?;
    let response = match outcome {
        SendOutcome::Accepted {
            server_message_id,
            server_timestamp,
            notify,
            envelopes,
        } => {
            wake(&state, &notify, envelopes);
            state
                .charge(Limit::Messages, RateKey::Account(&user_id), 1)
                .await;
            state.metrics().envelopes_accepted.inc_by(count);
            SendMessageResponse {
                server_message_id,
                server_timestamp: u64::try_from(server_timestamp).unwrap_or(0),
                duplicate: false,
            }
        }
        SendOutcome::Duplicate {
            server_message_id,
            server_timestamp,
        } => SendMessageResponse {
            server_message_id,
            server_timestamp: u64::try_from(server_timestamp).unwrap_or(0),
            duplicate: true,
        },
        SendOutcome::UnknownRecipient => {
            return Err(AppError::not_found("unknown_user", "no such recipient"))
        }
        SendOutcome::Reused => return Err(crate::api::client_message_id_reused()),
        SendOutcome::SenderRemoved => return Err(AppError::unauthorized()),
        SendOutcome::Mismatch(m) => {
            if m.missing.is_empty() && m.extra.is_empty() {
                return Err(AppError::StaleDevices(refs(m.stale)));
            }
            return Err(AppError::MismatchedDevices {
                missing: refs(m.missing),
                extra: refs(m.extra),
            });
        }
    };
    state.metrics().send_latency.observe(started.elapsed());
    Ok(Json(response))
}

/// `GET /api/messages/unread`.
#[utoipa::path(
    get, path = "/api/messages/unread", tag = "messages", summary = "Queued envelopes of this device", security(("bearer" = [])),
    responses((status = 200, description = "the count", body = sotto_wire::UnreadCount))
)]
pub async fn unread(
    State(state): State<AppState>,
    Auth(device): Auth,
) -> Result<Json<UnreadCount>, AppError> {
    let count = state.store().unread(device.pk).await?;
    Ok(Json(UnreadCount { count }))
}

/// Query of `GET /api/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Cursor: only envelopes with a greater `seq`.
    #[serde(default)]
    pub after: Option<u64>,
    /// Page size, 1-100.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /api/messages?after=&limit=`.
#[utoipa::path(
    get, path = "/api/messages", tag = "messages", params(PageQuery), summary = "Page through queued envelopes (not deleted until acked)", security(("bearer" = [])),
    responses(
        (status = 200, description = "one page", body = sotto_wire::EnvelopePage),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`"),
    )
)]
pub async fn fetch(
    State(state): State<AppState>,
    Auth(device): Auth,
    Query(q): Query<PageQuery>,
) -> Result<Json<EnvelopePage>, AppError> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid_limit",
            "limit must be 1-100",
        ));
    }
    let after = i64::try_from(q.after.unwrap_or(0))
        .map_err(|_| AppError::bad_request("invalid_cursor", "cursor out of range"))?;
    let rows = state.store().fetch(device.pk, after, limit).await?;
    let full = rows.len() == limit as usize;
    let refs = crate::api::envelopes::references(&state, device.pk, &rows).await?;
    let envelopes: Vec<Envelope> = rows
        .into_iter()
        .map(|e| crate::api::envelopes::to_wire(e, &refs))
        .collect();
    let next_cursor = if full {
        envelopes.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(EnvelopePage {
        envelopes,
        next_cursor,
    }))
}

/// Hands committed envelopes to their devices' connections; mailboxes in `notify` that none of
/// them covers are only woken.
fn wake(state: &AppState, notify: &[i64], envelopes: Vec<(i64, StoredEnvelope)>) {
    for pk in notify {
        if !envelopes.iter().any(|(p, _)| p == pk) {
            state.hub().notify(*pk);
        }
    }
    for (pk, envelope) in envelopes {
        state.hub().deliver(pk, envelope);
    }
}

/// Deletes acked envelopes, queues receipts and wakes the senders' connections. Returns how many
/// of `seqs` were queued for this device.
pub async fn apply_ack(
    state: &AppState,
    device: &DeviceAuth,
    seqs: Vec<u64>,
) -> Result<usize, AppError> {
    let seqs: Vec<i64> = seqs
        .into_iter()
        .filter_map(|s| i64::try_from(s).ok())
        .collect();
    if seqs.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let outcome = state
        .store()
        .ack(device, seqs, now, state.expires_at(now))
        .await?;
    wake(state, &outcome.notify, outcome.envelopes);
    state
        .metrics()
        .envelopes_delivered
        .inc_by(outcome.deleted.len() as u64);
    Ok(outcome.deleted.len())
}

/// `DELETE /api/messages/{seq}`: ack one envelope.
#[utoipa::path(
    delete, path = "/api/messages/{seq}", tag = "messages", summary = "Ack (delete) a queued envelope", security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "`unknown_envelope`"),
    )
)]
pub async fn ack(
    State(state): State<AppState>,
    Auth(device): Auth,
    Path(seq): Path<u64>,
) -> Result<StatusCode, AppError> {
    if apply_ack(&state, &device, vec![seq]).await? == 0 {
        return Err(AppError::not_found(
            "unknown_envelope",
            "no such envelope in this device's mailbox",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
