//! The SQLite writer thread: one OS thread owns the connection that writes the hot paths (sends,
//! acks, deliveries' deletes) and commits them in groups, calling SQLite directly with cached
//! prepared statements. A child module of `sqlite`.
//!
//! sqlx runs every statement of its SQLite connection on that connection's worker thread and
//! answers through a channel, so a send of five statements costs five round trips between two
//! threads; measured, those hops were most of the writer's time and bounded the whole relay to
//! one busy core. Here a whole group commit — `BEGIN IMMEDIATE`, the operations' statements,
//! `COMMIT` — runs on this thread without a hop. Both libraries bind the
//! same `libsqlite3-sys`, so the process links one SQLite.
//!
//! With `synchronous=full` the fsync is taken out of the commit and pipelined: the connection
//! commits with `synchronous=normal` (the commit's WAL frames are written, not synced), and a
//! second thread, the syncer, `fdatasync`s the WAL file and only then answers the group's
//! callers, while this thread already runs the next group. On Linux an fsync of any descriptor of
//! a file flushes all of its written pages, so the callers hear "committed" exactly when a
//! `synchronous=full` commit would have said so; SQLite still syncs the WAL before each checkpoint
//! (as `normal` always does). Readers may see a group's rows before its sync: a power loss in that
//! window loses a group nobody was told is stored, as before, and the clients' retries (with their
//! idempotency keys) send it again.
//!
//! The rarer writes (accounts, keys, groups, linking) keep their sqlx code on the store's second
//! writer connection. It never writes while this thread does: before each of its groups it takes
//! a [`Job::Turn`], which this thread answers once everything queued before it is committed, and
//! waits until that group is done.

use std::collections::BTreeMap;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::super::groups::{GroupSendBatch, GroupSendOutcome, ENVELOPE_GROUP_MESSAGE};
use super::super::{
    check_devices, duplicate_outcome, to_u32, AckOutcome, DeviceAuth, SendBatch, SendOutcome,
    StoreError, StoredEnvelope, ENVELOPE_MESSAGE, ENVELOPE_RECEIPT,
};
use super::{Finish, MAX_GROUP};

/// One operation of a group's transaction: whether to keep its changes, and how to answer its
/// caller once the group's fate is known. An operation whose outcome is not kept must decide that
/// before its first write (so it has nothing to undo); one that fails after writing rolls the
/// whole group back. That spares every operation a savepoint, whose page copies cost more than
/// the operation's own statements.
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

/// A committed group's answers, and whether its commit succeeded.
type Committed = (Vec<Finish>, Result<(), String>);

/// How a committed group becomes durable before its callers are answered.
enum Durability {
    /// The commit itself is as durable as configured: answer at once.
    Commit,
    /// Pass the group to the syncer thread, which answers after syncing the WAL.
    Syncer(std::sync::mpsc::Sender<Committed>),
}

impl Durability {
    fn answer(&self, finishes: Vec<Finish>, commit: Result<(), String>) {
        if let Self::Syncer(syncer) = self {
            // A failed commit needs no sync; answering it in order with the rest is simplest.
            if let Err(std::sync::mpsc::SendError((finishes, _))) = syncer.send((finishes, commit))
            {
                // The syncer is gone: nothing answered by it can be known durable.
                for finish in finishes {
                    finish(Err("the WAL syncer stopped".to_owned()));
                }
            }
            return;
        }
        for finish in finishes {
            finish(commit.clone());
        }
    }
}

/// Starts the writer thread; it exits when every sender of `rx` is dropped. With `wal`, the
/// connection must commit without syncing, and a syncer thread makes each group durable by
/// syncing that file before answering it.
pub(super) fn spawn(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    wal: Option<PathBuf>,
) -> std::io::Result<()> {
    let durability = match wal {
        None => Durability::Commit,
        Some(path) => {
            let file = WalFile::open(path)?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("sqlite-syncer".to_owned())
                .spawn(move || sync_loop(file, rx))?;
            Durability::Syncer(tx)
        }
    };
    std::thread::Builder::new()
        .name("sqlite-writer".to_owned())
        .spawn(move || run(conn, rx, durability))
        .map(drop)
}

/// The WAL file, reopened if SQLite ever replaced it.
struct WalFile {
    path: PathBuf,
    file: File,
}

impl WalFile {
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = File::open(&path)?;
        // The WAL's directory entry, once: SQLite syncs it only under `synchronous=full`.
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(Self { path, file })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (open, named) = (self.file.metadata()?, std::fs::metadata(&self.path)?);
        if (open.dev(), open.ino()) != (named.dev(), named.ino()) {
            *self = Self::open(self.path.clone())?;
        }
        self.file.sync_data()
    }
}

/// Answers committed groups after a WAL sync that covers them: one sync for every group that
/// queued meanwhile.
fn sync_loop(mut wal: WalFile, rx: std::sync::mpsc::Receiver<Committed>) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let synced = wal.sync().map_err(|e| {
            tracing::error!(error = %e, "sqlite: cannot sync the WAL");
            format!("sync: {e}")
        });
        for (finishes, commit) in groups {
            let outcome = commit.and(synced.clone());
            for finish in finishes {
                finish(outcome.clone());
            }
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, durability: Durability) {
    let mut group: Option<Group> = None;
    loop {
        // An open group takes whatever is queued, and commits once the queue is empty: the
        // operations that arrive during its commit (and sync) form the next group.
        let job = match group.take() {
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => break,
            },
            Some(open) => match rx.try_recv() {
                Ok(job) => {
                    group = Some(open);
                    job
                }
                Err(e) => {
                    open.commit(&conn, &durability);
                    if e == mpsc::error::TryRecvError::Disconnected {
                        break;
                    }
                    continue;
                }
            },
        };
        match job {
            Job::Op(op) => {
                if group.is_none() {
                    group = Group::begin(&conn);
                }
                // A group that could not begin drops the operation: its caller sees `Closed`.
                let Some(open) = group.as_mut() else { continue };
                open.run(&conn, op);
                if open.finishes.len() >= MAX_GROUP {
                    if let Some(full) = group.take() {
                        full.commit(&conn, &durability);
                    }
                }
            }
            Job::Turn { go, done } => {
                if let Some(open) = group.take() {
                    open.commit(&conn, &durability);
                }
                if go.send(()).is_ok() {
                    let _ = done.blocking_recv();
                }
            }
        }
    }
    if let Some(open) = group.take() {
        open.commit(&conn, &durability);
    }
}

/// Runs `sql` through the connection's statement cache.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// An open transaction: the operations run in it so far, each inside its own savepoint.
struct Group {
    finishes: Vec<Finish>,
    /// An operation failed after writing: nothing more runs in the transaction, and it is
    /// rolled back instead of committed.
    broken: bool,
}

impl Group {
    fn begin(conn: &Connection) -> Option<Self> {
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "sqlite: cannot begin a transaction");
            let _ = exec(conn, "ROLLBACK");
            return None;
        }
        Some(Self {
            finishes: Vec::with_capacity(64),
            broken: false,
        })
    }

    fn run(&mut self, conn: &Connection, op: Op) {
        if self.broken {
            // Dropping the operation answers its caller with `Closed`; nothing of it is stored.
            return;
        }
        let before = conn.total_changes();
        // An operation that panics is treated like one that failed after writing; its caller,
        // whose answer was dropped with it, sees `Closed`.
        let (keep, finish) = match std::panic::catch_unwind(AssertUnwindSafe(|| op(conn))) {
            Ok((keep, finish)) => (keep, Some(finish)),
            Err(_) => (false, None),
        };
        self.finishes.extend(finish);
        if !keep && conn.total_changes() != before {
            // Only a failure can leave changes to undo (see [`Op`]); without a savepoint per
            // operation, undoing them means rolling back the whole group.
            tracing::error!("sqlite: an operation failed after writing; its group is rolled back");
            self.broken = true;
        }
    }

    /// Commits, and answers the operations once that is durable.
    fn commit(self, conn: &Connection, durability: &Durability) {
        let commit = if self.broken {
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
        durability.answer(self.finishes, commit);
    }
}

/// SQLite's `FOREIGN KEY constraint failed` (extended code 787).
fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == 787)
}

/// Stores the idempotency record of a new send.
fn record_sent(
    conn: &Connection,
    device_pk: i64,
    client_message_id: &str,
    server_message_id: &str,
    now: i64,
    digest: &[u8; 32],
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO sent_messages (device_pk, client_message_id, server_message_id, server_ts, digest) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![device_pk, client_message_id, server_message_id, now, digest.as_slice()])
}

/// A new 1:1 send: the idempotency record, a sequence and an envelope per target device, the
/// contact row if asked. Any outcome but `Accepted` is rolled back by the caller.
pub(super) fn send(
    conn: &Connection,
    mut batch: SendBatch,
    record_contact: bool,
) -> Result<SendOutcome, StoreError> {
    // Every outcome but `Accepted` is decided by reads, before the first write (see [`Op`]).
    let prior = conn
        .prepare_cached(
            "SELECT server_message_id, server_ts, digest FROM sent_messages \
             WHERE device_pk = ?1 AND client_message_id = ?2",
        )?
        .query_row(params![batch.sender.pk, batch.client_message_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((server_message_id, server_ts, digest)) = prior {
        return duplicate_outcome(server_message_id, server_ts, digest, &batch.digest);
    }
    // The current devices of both accounts (but the sender's), with their last sequences: this
    // connection is the only writer, so nothing changes them before the updates below.
    let mut current = BTreeMap::new();
    let mut pks = BTreeMap::new();
    let mut recipient_has_devices = false;
    {
        let mut devices = conn.prepare_cached(
            "SELECT pk, user_id, device_id, registration_id, last_seq FROM devices \
             WHERE (user_id = ?1 OR user_id = ?2) AND pk <> ?3",
        )?;
        let mut rows = devices.query(params![
            batch.recipient,
            batch.sender.user_id,
            batch.sender.pk
        ])?;
        while let Some(row) = rows.next()? {
            let user_id: String = row.get(1)?;
            recipient_has_devices |= user_id == batch.recipient;
            let key = (user_id, to_u32(row.get(2)?, "device_id")?);
            pks.insert(
                key.clone(),
                (row.get::<_, i64>(0)?, row.get::<_, i64>(4)? + 1),
            );
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
    if batch.targets.len() != pks.len() {
        // Two envelopes for one device (the API refuses that): refused before any write.
        return Err(StoreError::Corrupt("duplicate target device"));
    }
    let claimed = record_sent(
        conn,
        batch.sender.pk,
        &batch.client_message_id,
        &batch.server_message_id,
        batch.now,
        &batch.digest,
    );
    match claimed {
        Ok(_) => {}
        // The sending device was removed after its token was checked; the failed statement
        // changed nothing.
        Err(e) if is_foreign_key_violation(&e) => return Ok(SendOutcome::SenderRemoved),
        Err(e) => return Err(e.into()),
    }
    // Every current device gets exactly one envelope (the device set matched), so each
    // reserves exactly one sequence.
    {
        let mut reserve = conn.prepare_cached("UPDATE devices SET last_seq = ?2 WHERE pk = ?1")?;
        for &(pk, seq) in pks.values() {
            reserve.execute(params![pk, seq])?;
        }
    }
    let mut notify = Vec::with_capacity(batch.targets.len());
    let mut envelopes = Vec::with_capacity(batch.targets.len());
    {
        let mut insert = conn.prepare_cached(
            "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
             client_message_id, server_ts, expires_at, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for target in std::mem::take(&mut batch.targets) {
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
            envelopes.push((pk, StoredEnvelope::message(seq, &batch, target.content)));
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
        // A read then a delete by key: `RETURNING` would build a temporary table per statement.
        let mut find = conn.prepare_cached(
            "SELECT kind, source_user, server_message_id, client_message_id FROM envelopes \
             WHERE device_pk = ?1 AND seq = ?2",
        )?;
        let mut delete =
            conn.prepare_cached("DELETE FROM envelopes WHERE device_pk = ?1 AND seq = ?2")?;
        let mut seqs = seqs;
        seqs.sort_unstable();
        seqs.dedup();
        for seq in seqs {
            let deleted = find
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
            delete.execute(params![device.pk, seq])?;
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
    let mut devices_of =
        conn.prepare_cached("SELECT pk, last_seq FROM devices WHERE user_id = ?1 ORDER BY pk")?;
    let mut reserve = conn.prepare_cached("UPDATE devices SET last_seq = ?2 WHERE pk = ?1")?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
         client_message_id, server_ts, expires_at, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL)",
    )?;
    for (user, list) in &receipts {
        let count = i64::try_from(list.len()).map_err(|_| StoreError::Corrupt("ack size"))?;
        let devices: Vec<(i64, i64)> = devices_of
            .query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (pk, last) in devices {
            let last = last + count;
            reserve.execute(params![pk, last])?;
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
                    StoredEnvelope::receipt(
                        seq,
                        &device,
                        server_message_id,
                        client_message_id,
                        now,
                    ),
                ));
            }
            if !outcome.notify.contains(&pk) {
                outcome.notify.push(pk);
            }
        }
    }
    Ok(outcome)
}

/// A group send: pairwise envelopes first (so a new member has the sender key before the
/// message), the shared ciphertext once, and a reference in the mailbox of every other member
/// device. Any outcome but `Accepted` is decided by reads, before the first write (see [`Op`]).
pub(super) fn group_send(
    conn: &Connection,
    b: GroupSendBatch,
) -> Result<GroupSendOutcome, StoreError> {
    let sender = conn
        .prepare_cached("SELECT 1 FROM devices WHERE pk = ?1")?
        .query_row([b.sender.pk], |_| Ok(()))
        .optional()?;
    if sender.is_none() {
        return Ok(GroupSendOutcome::SenderRemoved);
    }
    let prior = conn
        .prepare_cached(
            "SELECT server_message_id, server_ts, digest FROM sent_messages \
             WHERE device_pk = ?1 AND client_message_id = ?2",
        )?
        .query_row(params![b.sender.pk, b.client_message_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })
        .optional()?;
    if let Some((server_message_id, server_timestamp, digest)) = prior {
        if digest.is_some_and(|d| d.as_slice() != b.digest.as_slice()) {
            return Ok(GroupSendOutcome::Reused);
        }
        return Ok(GroupSendOutcome::Duplicate {
            server_message_id,
            server_timestamp,
        });
    }
    let member = conn
        .prepare_cached("SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
        .query_row(params![b.group_id, b.sender.user_id], |_| Ok(()))
        .optional()?;
    if member.is_none() {
        return Ok(GroupSendOutcome::NotMember);
    }
    // Pairwise targets must be current devices of members (the sender's own included).
    let mut pks = BTreeMap::new();
    if !b.targets.is_empty() {
        let mut current = BTreeMap::new();
        let mut devices = conn.prepare_cached(
            "SELECT d.pk, d.user_id, d.device_id, d.registration_id FROM devices d \
             JOIN group_members m ON m.user_id = d.user_id WHERE m.group_id = ?1 AND d.pk <> ?2",
        )?;
        let mut rows = devices.query(params![b.group_id, b.sender.pk])?;
        while let Some(row) = rows.next()? {
            let key = (row.get::<_, String>(1)?, to_u32(row.get(2)?, "device_id")?);
            current.insert(key.clone(), to_u32(row.get(3)?, "registration_id")?);
            pks.insert(key, row.get::<_, i64>(0)?);
        }
        if let Err(mismatch) = crate::store::check_pairwise(&current, &b.targets) {
            return Ok(GroupSendOutcome::Mismatch(mismatch));
        }
        let distinct: std::collections::BTreeSet<_> = b
            .targets
            .iter()
            .map(|t| (&t.user_id, t.device_id))
            .collect();
        if distinct.len() != b.targets.len() {
            // Two envelopes for one device (the API refuses that): refused before any write.
            return Err(StoreError::Corrupt("duplicate target device"));
        }
    }
    record_sent(
        conn,
        b.sender.pk,
        &b.client_message_id,
        &b.server_message_id,
        b.now,
        &b.digest,
    )?;
    let mut notify = Vec::with_capacity(b.targets.len());
    {
        let mut next_seq = conn.prepare_cached(
            "UPDATE devices SET last_seq = last_seq + 1 WHERE pk = ?1 RETURNING last_seq",
        )?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
             client_message_id, server_ts, expires_at, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for t in &b.targets {
            let Some(&pk) = pks.get(&(t.user_id.clone(), t.device_id)) else {
                return Err(StoreError::Corrupt("device vanished during group send"));
            };
            let seq: i64 = next_seq.query_row([pk], |r| r.get(0))?;
            insert.execute(params![
                pk,
                seq,
                ENVELOPE_MESSAGE,
                b.sender.user_id,
                i64::from(b.sender.device_id),
                b.server_message_id,
                b.client_message_id,
                b.now,
                b.expires_at,
                t.content,
            ])?;
            notify.push(pk);
        }
    }
    let message_id: i64 = conn
        .prepare_cached(
            "INSERT INTO group_messages (group_id, content, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4) RETURNING id",
        )?
        .query_row(params![b.group_id, b.content, b.now, b.expires_at], |r| {
            r.get(0)
        })?;
    // The member devices and their next sequences, read once; then one reference row each.
    let members: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT d.pk, d.last_seq + 1 FROM devices d JOIN group_members m ON m.user_id = d.user_id \
             WHERE m.group_id = ?1 AND d.pk <> ?2",
        )?
        .query_map(params![b.group_id, b.sender.pk], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut reserve = conn.prepare_cached("UPDATE devices SET last_seq = ?2 WHERE pk = ?1")?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
             client_message_id, server_ts, expires_at, content, group_message_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)",
        )?;
        for &(pk, seq) in &members {
            reserve.execute(params![pk, seq])?;
            insert.execute(params![
                pk,
                seq,
                ENVELOPE_GROUP_MESSAGE,
                b.sender.user_id,
                i64::from(b.sender.device_id),
                b.server_message_id,
                b.client_message_id,
                b.now,
                b.expires_at,
                message_id,
            ])?;
        }
    }
    Ok(GroupSendOutcome::Accepted {
        server_message_id: b.server_message_id,
        server_timestamp: b.now,
        notify,
        references: members,
    })
}

/// Deletes the acked `(device, seq)` pairs that are not 1:1 messages (those need [`ack`]'s
/// receipts); the pairs deleted.
pub(super) fn delete_acked(
    conn: &Connection,
    acks: Vec<(i64, i64)>,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut delete = conn
        .prepare_cached("DELETE FROM envelopes WHERE device_pk = ?1 AND seq = ?2 AND kind <> ?3")?;
    let mut deleted = Vec::with_capacity(acks.len());
    for (pk, seq) in acks {
        if delete.execute(params![pk, seq, ENVELOPE_MESSAGE])? > 0 {
            deleted.push((pk, seq));
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation that inserts `value` into `t`, then answers `keep`; its answer arrives on
    /// the returned receiver.
    fn insert(value: i64, keep: bool) -> (Job, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let wrote = conn
                .execute("INSERT INTO t (v) VALUES (?1)", [value])
                .is_ok();
            let finish: Finish = Box::new(move |commit| {
                let _ = tx.send(commit);
            });
            (keep && wrote, finish)
        });
        (Job::Op(op), rx)
    }

    /// An operation that writes nothing and is not kept (a refused send, say).
    fn refuse() -> (Job, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |_| {
            let finish: Finish = Box::new(move |commit| {
                let _ = tx.send(commit);
            });
            (false, finish)
        });
        (Job::Op(op), rx)
    }

    type Answer = Result<Result<(), String>, oneshot::error::RecvError>;

    /// Queues `jobs` before the writer starts, so they form one group, and waits for every
    /// answer; the values stored and the answers.
    fn run_group(
        dir: &tempfile::TempDir,
        jobs: Vec<(Job, oneshot::Receiver<Result<(), String>>)>,
        wal: bool,
    ) -> (Vec<i64>, Vec<Answer>) {
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL)",
        )
        .expect("schema");
        let (tx, rx) = mpsc::channel(16);
        let mut answers = Vec::new();
        for (job, answer) in jobs {
            assert!(tx.try_send(job).is_ok());
            answers.push(answer);
        }
        drop(tx);
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        spawn(conn, rx, wal.then(|| PathBuf::from(name))).expect("spawn");
        // Answers come after the commit (and sync), or when the writer drops an operation.
        let answers: Vec<Answer> = answers.into_iter().map(|a| a.blocking_recv()).collect();
        let read = Connection::open(&path).expect("reopen");
        let values: Vec<i64> = read
            .prepare("SELECT v FROM t ORDER BY v")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("read");
        (values, answers)
    }

    #[test]
    fn refused_operations_leave_the_rest_of_their_group_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (values, answers) =
            run_group(&dir, vec![insert(1, true), refuse(), insert(3, true)], true);
        assert_eq!(values, vec![1, 3]);
        assert!(answers.iter().all(|a| a == &Ok(Ok(()))), "{answers:?}");
    }

    #[test]
    fn an_operation_that_fails_after_writing_rolls_its_group_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (values, answers) = run_group(
            &dir,
            vec![insert(1, true), insert(2, false), insert(3, true)],
            false,
        );
        assert_eq!(values, Vec::<i64>::new());
        // Everyone in the group hears that nothing was stored; the operation after the failure
        // never ran, and its caller hears the writer dropped it.
        assert!(
            matches!(answers.as_slice(), [Ok(Err(_)), Ok(Err(_)), Err(_)]),
            "{answers:?}"
        );
        // The next group commits normally.
        let (values, answers) = run_group(&dir, vec![insert(4, true)], false);
        assert_eq!(values, vec![4]);
        assert_eq!(answers, vec![Ok(Ok(()))]);
    }
}
