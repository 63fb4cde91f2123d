//! The SQLite writer thread: one OS thread owns the connection that writes the hot paths (sends,
//! acks, deliveries' deletes) and commits them in groups, calling SQLite directly with cached
//! prepared statements. A child module of `sqlite`.
//!
//! sqlx runs every statement of its SQLite connection on that connection's worker thread and
//! answers through a channel, so a send of five statements costs five round trips between two
//! threads; measured, those hops were most of the writer's time and bounded the whole relay to
//! one busy core. Here a whole group commit — `BEGIN IMMEDIATE`, a savepoint per operation, the
//! operations' statements, `COMMIT` — runs on this thread without a hop. Both libraries bind the
//! same `libsqlite3-sys`, so the process links one SQLite.
//!
//! The rarer writes (accounts, keys, groups, linking) keep their sqlx code on the store's second
//! writer connection. It never writes while this thread does: before each of its groups it takes
//! a [`Job::Turn`], which this thread answers once everything queued before it is committed, and
//! waits until that group is done.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::super::{
    check_devices, duplicate_outcome, to_u32, AckOutcome, DeviceAuth, SendBatch, SendOutcome,
    StoreError, StoredEnvelope, ENVELOPE_MESSAGE, ENVELOPE_RECEIPT,
};
use super::{Finish, MAX_GROUP};

/// One operation, run inside its own savepoint of the group's transaction: whether to keep its
/// changes, and how to answer its caller once the group's fate is known.
pub(super) type Op = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// What the writer thread is asked to do.
pub(super) enum Job {
    /// An operation of the next group commit.
    Op(Op),
    /// Hands the file to the other writer connection: `go` is answered once every operation
    /// queued before it is committed, then the thread waits for `done` (or its sender's drop).
    Turn {
        go: oneshot::Sender<()>,
        done: oneshot::Receiver<()>,
    },
}

/// Starts the writer thread; it exits when every sender of `rx` is dropped.
pub(super) fn spawn(conn: Connection, rx: mpsc::Receiver<Job>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sqlite-writer".to_owned())
        .spawn(move || run(conn, rx))
        .map(drop)
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut ops: Vec<Op> = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        let mut job = Some(first);
        while let Some(next) = job.take() {
            match next {
                Job::Op(op) => {
                    ops.push(op);
                    if ops.len() < MAX_GROUP {
                        job = rx.try_recv().ok();
                    }
                }
                Job::Turn { go, done } => {
                    commit_group(&conn, &mut ops);
                    if go.send(()).is_ok() {
                        let _ = done.blocking_recv();
                    }
                    job = rx.try_recv().ok();
                }
            }
        }
        commit_group(&conn, &mut ops);
    }
}

/// Runs `sql` through the connection's statement cache.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `ops` in one transaction, each inside a savepoint, and answers them after the commit.
fn commit_group(conn: &Connection, ops: &mut Vec<Op>) {
    if ops.is_empty() {
        return;
    }
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "sqlite: cannot begin a transaction");
        let _ = exec(conn, "ROLLBACK");
        // Dropping the operations answers their callers with `Closed`.
        ops.clear();
        return;
    }
    let mut finishes: Vec<Finish> = Vec::with_capacity(ops.len());
    let mut broken = false;
    for op in ops.drain(..) {
        if broken {
            // SQLite may have rolled the whole transaction back: dropping the rest answers them
            // with `Closed`, and nothing of them is stored.
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT op") {
            tracing::error!(error = %e, "sqlite: savepoint failed");
            broken = true;
            continue;
        }
        // An operation that panics is rolled back like a failed one; its caller, whose answer
        // was dropped with it, sees `Closed`.
        let (keep, finish) = match std::panic::catch_unwind(AssertUnwindSafe(|| op(conn))) {
            Ok((keep, finish)) => (keep, Some(finish)),
            Err(_) => (false, None),
        };
        finishes.extend(finish);
        let end = if keep {
            exec(conn, "RELEASE op")
        } else {
            exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
        };
        if let Err(e) = end {
            tracing::error!(error = %e, "sqlite: savepoint release failed");
            broken = true;
        }
    }
    let commit = if broken {
        Err("transaction aborted".to_owned())
    } else {
        exec(conn, "COMMIT").map_err(|e| {
            tracing::error!(error = %e, "sqlite: commit failed");
            e.to_string()
        })
    };
    if commit.is_err() {
        let _ = exec(conn, "ROLLBACK");
    }
    for finish in finishes {
        finish(commit.clone());
    }
}

/// SQLite's `FOREIGN KEY constraint failed` (extended code 787).
fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == 787)
}

/// A new 1:1 send: the idempotency record, a sequence and an envelope per target device, the
/// contact row if asked. Any outcome but `Accepted` is rolled back by the caller.
pub(super) fn send(
    conn: &Connection,
    batch: SendBatch,
    record_contact: bool,
) -> Result<SendOutcome, StoreError> {
    let claimed = conn
        .prepare_cached(
            "INSERT INTO sent_messages (device_pk, client_message_id, server_message_id, server_ts, digest) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device_pk, client_message_id) DO NOTHING",
        )?
        .execute(params![
            batch.sender.pk,
            batch.client_message_id,
            batch.server_message_id,
            batch.now,
            batch.digest.as_slice(),
        ]);
    let claimed = match claimed {
        Ok(n) => n,
        // The sending device was removed after its token was checked.
        Err(e) if is_foreign_key_violation(&e) => return Ok(SendOutcome::SenderRemoved),
        Err(e) => return Err(e.into()),
    };
    if claimed == 0 {
        let (server_message_id, server_ts, digest) = conn
            .prepare_cached(
                "SELECT server_message_id, server_ts, digest FROM sent_messages \
                 WHERE device_pk = ?1 AND client_message_id = ?2",
            )?
            .query_row(params![batch.sender.pk, batch.client_message_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        return duplicate_outcome(server_message_id, server_ts, digest, &batch.digest);
    }
    // Reads the current devices and reserves the next sequence of each in one statement; when
    // the device set matches, every one of them gets exactly one envelope.
    let mut current = BTreeMap::new();
    let mut pks = BTreeMap::new();
    let mut recipient_has_devices = false;
    {
        let mut reserve = conn.prepare_cached(
            "UPDATE devices SET last_seq = last_seq + 1 WHERE (user_id = ?1 OR user_id = ?2) AND pk <> ?3 \
             RETURNING pk, user_id, device_id, registration_id, last_seq",
        )?;
        let mut rows = reserve.query(params![
            batch.recipient,
            batch.sender.user_id,
            batch.sender.pk
        ])?;
        while let Some(row) = rows.next()? {
            let user_id: String = row.get(1)?;
            recipient_has_devices |= user_id == batch.recipient;
            let key = (user_id, to_u32(row.get(2)?, "device_id")?);
            pks.insert(key.clone(), (row.get::<_, i64>(0)?, row.get::<_, i64>(4)?));
            current.insert(key, to_u32(row.get(3)?, "registration_id")?);
        }
    }
    if !recipient_has_devices && batch.recipient != batch.sender.user_id {
        let exists = conn
            .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
            .query_row([&batch.recipient], |_| Ok(()))
            .optional()?;
        if exists.is_none() {
            return Ok(SendOutcome::UnknownRecipient);
        }
    }
    if let Err(mismatch) = check_devices(&current, &batch.targets) {
        return Ok(SendOutcome::Mismatch(mismatch));
    }
    let mut notify = Vec::with_capacity(batch.targets.len());
    let mut envelopes = Vec::with_capacity(batch.targets.len());
    {
        let mut insert = conn.prepare_cached(
            "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
             client_message_id, server_ts, expires_at, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for target in batch.targets {
            let Some(&(pk, seq)) = pks.get(&(target.user_id, target.device_id)) else {
                return Err(StoreError::Corrupt("device vanished during send"));
            };
            insert.execute(params![
                pk,
                seq,
                ENVELOPE_MESSAGE,
                batch.sender.user_id,
                i64::from(batch.sender.device_id),
                batch.server_message_id,
                batch.client_message_id,
                batch.now,
                batch.expires_at,
                target.content,
            ])?;
            notify.push(pk);
            envelopes.push((
                pk,
                StoredEnvelope {
                    seq,
                    kind: ENVELOPE_MESSAGE,
                    source_user: batch.sender.user_id.clone(),
                    source_device: batch.sender.device_id,
                    server_message_id: batch.server_message_id.clone(),
                    client_message_id: batch.client_message_id.clone(),
                    server_ts: batch.now,
                    content: Some(target.content),
                },
            ));
        }
    }
    if record_contact {
        conn.prepare_cached(
            "INSERT INTO contacts (user_id, contact_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![batch.sender.user_id, batch.recipient])?;
    }
    Ok(SendOutcome::Accepted {
        server_message_id: batch.server_message_id,
        server_timestamp: batch.now,
        notify,
        envelopes,
    })
}

/// Deletes acked envelopes of one device and queues a delivery receipt to every device of each
/// 1:1 message's sender (but the device's own account).
pub(super) fn ack(
    conn: &Connection,
    device: DeviceAuth,
    seqs: Vec<i64>,
    now: i64,
    expires_at: i64,
) -> Result<AckOutcome, StoreError> {
    let mut outcome = AckOutcome::default();
    // Receipts per sender account, in mailbox order.
    let mut receipts: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    {
        let mut delete = conn.prepare_cached(
            "DELETE FROM envelopes WHERE device_pk = ?1 AND seq = ?2 \
             RETURNING kind, source_user, server_message_id, client_message_id",
        )?;
        let mut seqs = seqs;
        seqs.sort_unstable();
        seqs.dedup();
        for seq in seqs {
            let deleted = delete
                .query_row(params![device.pk, seq], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()?;
            let Some((kind, source_user, server_message_id, client_message_id)) = deleted else {
                continue;
            };
            outcome.deleted.push(seq);
            if kind != ENVELOPE_MESSAGE || source_user == device.user_id {
                continue;
            }
            receipts
                .entry(source_user)
                .or_default()
                .push((server_message_id, client_message_id));
        }
    }
    if receipts.is_empty() {
        return Ok(outcome);
    }
    let mut reserve = conn.prepare_cached(
        "UPDATE devices SET last_seq = last_seq + ?1 WHERE user_id = ?2 RETURNING pk, last_seq",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
         client_message_id, server_ts, expires_at, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL)",
    )?;
    for (user, list) in &receipts {
        let count = i64::try_from(list.len()).map_err(|_| StoreError::Corrupt("ack size"))?;
        let mut devices: Vec<(i64, i64)> = reserve
            .query_map(params![count, user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        devices.sort_unstable();
        for (pk, last) in devices {
            for (i, (server_message_id, client_message_id)) in (0..count).zip(list) {
                let seq = last - count + 1 + i;
                insert.execute(params![
                    pk,
                    seq,
                    ENVELOPE_RECEIPT,
                    device.user_id,
                    i64::from(device.device_id),
                    server_message_id,
                    client_message_id,
                    now,
                    expires_at,
                ])?;
                outcome.envelopes.push((
                    pk,
                    StoredEnvelope {
                        seq,
                        kind: ENVELOPE_RECEIPT,
                        source_user: device.user_id.clone(),
                        source_device: device.device_id,
                        server_message_id: server_message_id.clone(),
                        client_message_id: client_message_id.clone(),
                        server_ts: now,
                        content: None,
                    },
                ));
            }
            if !outcome.notify.contains(&pk) {
                outcome.notify.push(pk);
            }
        }
    }
    Ok(outcome)
}

/// Deletes the acked `(device, seq)` pairs that are not 1:1 messages (those need [`ack`]'s
/// receipts); the pairs deleted.
pub(super) fn delete_acked(
    conn: &Connection,
    acks: Vec<(i64, i64)>,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut delete = conn.prepare_cached(
        "DELETE FROM envelopes WHERE device_pk = ?1 AND seq = ?2 AND kind <> ?3 RETURNING 1",
    )?;
    let mut deleted = Vec::with_capacity(acks.len());
    for (pk, seq) in acks {
        if delete
            .query_row(params![pk, seq, ENVELOPE_MESSAGE], |_| Ok(()))
            .optional()?
            .is_some()
        {
            deleted.push((pk, seq));
        }
    }
    Ok(deleted)
}
