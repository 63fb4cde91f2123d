//! [`GroupStore`] and [`LinkStore`] for PostgreSQL: one transaction per operation, committed
//! when the operation returns `Ok` (every refusal is decided before anything is written).

use async_trait::async_trait;
use sqlx::PgConnection;

use super::PgStore;

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
