//! [`GroupStore`] and [`LinkStore`] for PostgreSQL: one transaction per operation, committed
//! when the operation returns `Ok` (every refusal is decided before anything is written).

use async_trait::async_trait;
use sqlx::PgConnection;

use super::PgStore;
use crate::store::ENVELOPE_MESSAGE;

// `FOR NO KEY UPDATE`: the lock the following `UPDATE devices` takes anyway. The stronger
// `FOR UPDATE` would also conflict with the key-share locks that foreign-key checks of concurrent
// inserts hold (a sender's `sent_messages` row points at its device), and deadlock two group
// sends that lock each other's sender devices.
crate::store::groups::group_queries!(PgConnection, "FOR NO KEY UPDATE");

/// Runs `$call` (an expression using `tx`) in a transaction and commits on `Ok`.
macro_rules! in_tx {
    ($self:ident, |$tx:ident| $call:expr) => {{
        let mut $tx = $self.pool.begin().await?;
        let out = $call.await?;
        $tx.commit().await?;
        Ok(out)
    }};
}

/// Runs `$call` on a pooled connection (reads).
macro_rules! on_conn {
    ($self:ident, |$conn:ident| $call:expr) => {{
        let mut $conn = $self.pool.acquire().await?;
        $call.await
    }};
}

#[async_trait]
impl GroupStore for PgStore {
    async fn create_group(&self, group: NewGroup) -> Result<GroupWrite, StoreError> {
        // Membership writes lock member devices in batches (members, then invitees): a deadlock
        // PostgreSQL breaks is retried.
        super::retry_transient(|| async {
            let mut tx = self.pool.begin().await?;
            let out = create_group_tx(&mut tx, group.clone()).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    async fn groups_of(
        &self,
        user_id: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<GroupSummaryRow>, StoreError> {
        on_conn!(self, |conn| groups_of_tx(&mut conn, user_id, after, limit))
    }

    async fn group_view(
        &self,
        group_id: &str,
        asker: &str,
        now: i64,
    ) -> Result<Option<GroupView>, StoreError> {
        on_conn!(self, |conn| group_view_tx(&mut conn, group_id, asker, now))
    }

    async fn change_members(&self, change: MemberChange) -> Result<GroupWrite, StoreError> {
        super::retry_transient(|| async {
            let mut tx = self.pool.begin().await?;
            let out = change_members_tx(&mut tx, change.clone()).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    async fn create_invite(
        &self,
        group_id: &str,
        actor: &str,
        invite_id: &str,
        token_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<GroupWrite, StoreError> {
        in_tx!(self, |tx| create_invite_tx(
            &mut tx,
            group_id.to_owned(),
            actor.to_owned(),
            invite_id.to_owned(),
            *token_hash,
            now,
            expires_at
        ))
    }

    async fn revoke_invite(
        &self,
        group_id: &str,
        actor: &str,
        invite_id: &str,
    ) -> Result<GroupWrite, StoreError> {
        in_tx!(self, |tx| revoke_invite_tx(
            &mut tx,
            group_id.to_owned(),
            actor.to_owned(),
            invite_id.to_owned()
        ))
    }

    async fn group_send(&self, batch: GroupSendBatch) -> Result<GroupSendOutcome, StoreError> {
        super::retry_transient(|| async {
            let mut tx = self.pool.begin().await?;
            let out = group_send_tx(&mut tx, &batch).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    async fn group_devices(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<Option<Vec<(String, i64)>>, StoreError> {
        on_conn!(self, |conn| group_devices_tx(&mut conn, group_id, user_id))
    }

    async fn group_references(
        &self,
        device_pk: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        on_conn!(self, |conn| group_references_tx(
            &mut conn, device_pk, first, last
        ))
    }

    async fn delete_acked(&self, acks: Vec<(i64, i64)>) -> Result<Vec<(i64, i64)>, StoreError> {
        let (pks, seqs): (Vec<i64>, Vec<i64>) = acks.into_iter().unzip();
        // One statement, so one transaction, whatever the number of devices.
        Ok(sqlx::query_as(
            "DELETE FROM envelopes e USING unnest($1::bigint[], $2::bigint[]) AS a(pk, seq) \
             WHERE e.device_pk = a.pk AND e.seq = a.seq AND e.kind <> $3 \
             RETURNING e.device_pk, e.seq",
        )
        .bind(pks)
        .bind(seqs)
        .bind(crate::store::ENVELOPE_MESSAGE)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn co_members(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        on_conn!(self, |conn| co_members_tx(&mut conn, user_id))
    }

    async fn invitations_of(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<InvitationRow>, StoreError> {
        on_conn!(self, |conn| invitations_of_tx(&mut conn, user_id, now))
    }

    async fn invites_only(&self, user_id: &str) -> Result<bool, StoreError> {
        on_conn!(self, |conn| invites_only_tx(&mut conn, user_id))
    }

    async fn set_invites_only(&self, user_id: &str, on: bool) -> Result<(), StoreError> {
        on_conn!(self, |conn| set_invites_only_tx(
            &mut conn,
            user_id.to_owned(),
            on
        ))
    }

    async fn sweep_groups(&self, now: i64) -> Result<u64, StoreError> {
        in_tx!(self, |tx| sweep_groups_tx(&mut tx, now))
    }
}

#[async_trait]
impl LinkStore for PgStore {
    async fn create_link_code(
        &self,
        user_id: &str,
        code_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| create_link_code_tx(
            &mut tx,
            user_id.to_owned(),
            *code_hash,
            now,
            expires_at
        ))
    }

    async fn link_device(
        &self,
        code_hash: &[u8; 32],
        registration_id: u32,
        token_hash: &[u8; 32],
        now: i64,
        max_devices: u32,
    ) -> Result<LinkOutcome, StoreError> {
        in_tx!(self, |tx| link_device_tx(
            &mut tx,
            *code_hash,
            registration_id,
            *token_hash,
            now,
            max_devices
        ))
    }

    async fn set_last_seen(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        in_tx!(self, |tx| set_last_seen_tx(&mut tx, user_id.to_owned(), at))
    }

    async fn last_seen(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        on_conn!(self, |conn| last_seen_tx(&mut conn, user_id))
    }
}

// Group sends: on SQLite they run on its writer thread (`sqlite_writer.rs`).

async fn prior_send(
    conn: &mut PgConnection,
    b: &GroupSendBatch,
) -> Result<Option<GroupSendOutcome>, StoreError> {
    let prior = sqlx::query(
            "SELECT server_message_id, server_ts, digest FROM sent_messages WHERE device_pk = $1 AND client_message_id = $2",
        )
        .bind(b.sender.pk)
        .bind(&b.client_message_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(p) = prior else { return Ok(None) };
    let stored: Option<Vec<u8>> = p.try_get("digest")?;
    if stored.is_some_and(|d| d.as_slice() != b.digest.as_slice()) {
        return Ok(Some(GroupSendOutcome::Reused));
    }
    Ok(Some(GroupSendOutcome::Duplicate {
        server_message_id: p.try_get("server_message_id")?,
        server_timestamp: p.try_get("server_ts")?,
    }))
}

async fn group_send_tx(
    conn: &mut PgConnection,
    b: &GroupSendBatch,
) -> Result<GroupSendOutcome, StoreError> {
    // The sender's row (key-share: only a removal waits for it), then every member
    // device the send bumps, in `pk` order before anything is read: a device removed
    // concurrently is either gone from the reads below or removed after this commit.
    let sender: Option<i64> = sqlx::query_scalar(if LOCKS {
        "SELECT pk FROM devices WHERE pk = $1 FOR KEY SHARE"
    } else {
        "SELECT pk FROM devices WHERE pk = $1"
    })
    .bind(b.sender.pk)
    .fetch_optional(&mut *conn)
    .await?;
    if sender.is_none() {
        return Ok(GroupSendOutcome::SenderRemoved);
    }
    if let Some(dup) = prior_send(conn, b).await? {
        return Ok(dup);
    }
    if member_role(conn, &b.group_id, &b.sender.user_id)
        .await?
        .is_none()
    {
        return Ok(GroupSendOutcome::NotMember);
    }
    if LOCKS {
        sqlx::query(concat!(
            "SELECT d.pk FROM devices d JOIN group_members m ON m.user_id = d.user_id \
                 WHERE m.group_id = $1 AND d.pk <> $2 ORDER BY d.pk ",
            "FOR NO KEY UPDATE",
            " OF d"
        ))
        .bind(&b.group_id)
        .bind(b.sender.pk)
        .fetch_all(&mut *conn)
        .await?;
    }
    // Pairwise targets must be current devices of members (the sender's own included).
    let mut pks = std::collections::BTreeMap::new();
    if !b.targets.is_empty() {
        let rows = sqlx::query(
                "SELECT d.pk, d.user_id, d.device_id, d.registration_id FROM devices d \
                 JOIN group_members m ON m.user_id = d.user_id WHERE m.group_id = $1 AND d.pk <> $2",
            )
            .bind(&b.group_id)
            .bind(b.sender.pk)
            .fetch_all(&mut *conn)
            .await?;
        let mut current = std::collections::BTreeMap::new();
        for row in &rows {
            let key = (
                row.try_get::<String, _>("user_id")?,
                to_u32(row.try_get("device_id")?, "device_id")?,
            );
            current.insert(
                key.clone(),
                to_u32(row.try_get("registration_id")?, "registration_id")?,
            );
            pks.insert(key, row.try_get::<i64, _>("pk")?);
        }
        if let Err(mismatch) = crate::store::check_pairwise(&current, &b.targets) {
            return Ok(GroupSendOutcome::Mismatch(mismatch));
        }
    }
    let claimed = sqlx::query(
            "INSERT INTO sent_messages (device_pk, client_message_id, server_message_id, server_ts, digest) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_pk, client_message_id) DO NOTHING",
        )
        .bind(b.sender.pk)
        .bind(&b.client_message_id)
        .bind(&b.server_message_id)
        .bind(b.now)
        .bind(b.digest.as_slice())
        .execute(&mut *conn)
        .await?;
    if claimed.rows_affected() == 0 {
        // A concurrent retry won the race.
        if let Some(dup) = prior_send(conn, b).await? {
            return Ok(dup);
        }
    }
    let mut notify = Vec::new();
    // Pairwise envelopes first, so a new member has the sender key before the message.
    for t in &b.targets {
        let Some(&pk) = pks.get(&(t.user_id.clone(), t.device_id)) else {
            return Err(StoreError::Corrupt("device vanished during group send"));
        };
        let seq: i64 = sqlx::query_scalar(
            "UPDATE devices SET last_seq = last_seq + 1 WHERE pk = $1 RETURNING last_seq",
        )
        .bind(pk)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
                "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
                 client_message_id, server_ts, expires_at, content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(pk)
            .bind(seq)
            .bind(ENVELOPE_MESSAGE)
            .bind(&b.sender.user_id)
            .bind(i64::from(b.sender.device_id))
            .bind(&b.server_message_id)
            .bind(&b.client_message_id)
            .bind(b.now)
            .bind(b.expires_at)
            .bind(&t.content)
            .execute(&mut *conn)
            .await?;
        notify.push(pk);
    }
    let message_id: i64 = sqlx::query_scalar(
        "INSERT INTO group_messages (group_id, content, created_at, expires_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&b.group_id)
    .bind(&b.content)
    .bind(b.now)
    .bind(b.expires_at)
    .fetch_one(&mut *conn)
    .await?;
    // Fan-out on write of references: two set-based statements whatever the member count
    // (one on PostgreSQL, so the devices bumped are exactly the devices written).
    let sql = if LOCKS {
        "WITH bumped AS (UPDATE devices SET last_seq = last_seq + 1 WHERE pk IN \
             (SELECT d.pk FROM devices d JOIN group_members m ON m.user_id = d.user_id \
             WHERE m.group_id = $1 AND d.pk <> $2) RETURNING pk, last_seq) \
             INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
             client_message_id, server_ts, expires_at, content, group_message_id) \
             SELECT pk, last_seq, $3, $4, $5, $6, $7, $8, $9, NULL, $10 FROM bumped RETURNING device_pk, seq"
    } else {
        sqlx::query(
                "UPDATE devices SET last_seq = last_seq + 1 WHERE pk IN (SELECT d.pk FROM devices d \
                 JOIN group_members m ON m.user_id = d.user_id WHERE m.group_id = $1 AND d.pk <> $2)",
            )
            .bind(&b.group_id)
            .bind(b.sender.pk)
            .execute(&mut *conn)
            .await?;
        "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
             client_message_id, server_ts, expires_at, content, group_message_id) \
             SELECT d.pk, d.last_seq, $3, $4, $5, $6, $7, $8, $9, NULL, $10 FROM devices d \
             JOIN group_members m ON m.user_id = d.user_id WHERE m.group_id = $1 AND d.pk <> $2 \
             RETURNING device_pk, seq"
    };
    let references: Vec<(i64, i64)> = sqlx::query_as(sql)
        .bind(&b.group_id)
        .bind(b.sender.pk)
        .bind(ENVELOPE_GROUP_MESSAGE)
        .bind(&b.sender.user_id)
        .bind(i64::from(b.sender.device_id))
        .bind(&b.server_message_id)
        .bind(&b.client_message_id)
        .bind(b.now)
        .bind(b.expires_at)
        .bind(message_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(GroupSendOutcome::Accepted {
        server_message_id: b.server_message_id.clone(),
        server_timestamp: b.now,
        notify,
        references,
    })
}
