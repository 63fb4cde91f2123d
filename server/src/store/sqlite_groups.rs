//! [`GroupStore`] and [`LinkStore`] for SQLite: writes go through the group-committing writer,
//! reads through the reader pool. A child module of `sqlite`, so it can use the store's writer.

use async_trait::async_trait;
use sqlx::SqliteConnection;

use super::SqliteStore;

crate::store::groups::group_queries!(SqliteConnection, "");

/// Runs `$call` on a reader connection.
macro_rules! on_reader {
    ($self:ident, |$conn:ident| $call:expr) => {{
        let mut $conn = $self.readers.acquire().await?;
        $call.await
    }};
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(&self, group: NewGroup) -> Result<GroupWrite, StoreError> {
        self.write(move |conn| Box::pin(create_group_tx(conn, group)))
            .await
    }

    async fn groups_of(
        &self,
        user_id: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<GroupSummaryRow>, StoreError> {
        on_reader!(self, |conn| groups_of_tx(&mut conn, user_id, after, limit))
    }

    async fn group_view(
        &self,
        group_id: &str,
        asker: &str,
        now: i64,
    ) -> Result<Option<GroupView>, StoreError> {
        on_reader!(self, |conn| group_view_tx(&mut conn, group_id, asker, now))
    }

    async fn change_members(&self, change: MemberChange) -> Result<GroupWrite, StoreError> {
        self.write(move |conn| Box::pin(change_members_tx(conn, change)))
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
        let (group_id, actor, invite_id, token_hash) = (
            group_id.to_owned(),
            actor.to_owned(),
            invite_id.to_owned(),
            *token_hash,
        );
        self.write(move |conn| {
            Box::pin(create_invite_tx(
                conn, group_id, actor, invite_id, token_hash, now, expires_at,
            ))
        })
        .await
    }

    async fn revoke_invite(
        &self,
        group_id: &str,
        actor: &str,
        invite_id: &str,
    ) -> Result<GroupWrite, StoreError> {
        let (group_id, actor, invite_id) =
            (group_id.to_owned(), actor.to_owned(), invite_id.to_owned());
        self.write(move |conn| Box::pin(revoke_invite_tx(conn, group_id, actor, invite_id)))
            .await
    }

    async fn group_send(&self, batch: GroupSendBatch) -> Result<GroupSendOutcome, StoreError> {
        // Only an accepted send keeps its changes.
        self.write_direct(
            |outcome| matches!(outcome, GroupSendOutcome::Accepted { .. }),
            move |conn| super::writer::group_send(conn, batch),
        )
        .await
    }

    async fn group_devices(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<Option<Vec<(String, i64)>>, StoreError> {
        on_reader!(self, |conn| group_devices_tx(&mut conn, group_id, user_id))
    }

    async fn group_references(
        &self,
        device_pk: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        on_reader!(self, |conn| group_references_tx(
            &mut conn, device_pk, first, last
        ))
    }

    async fn delete_acked(&self, acks: Vec<(i64, i64)>) -> Result<Vec<(i64, i64)>, StoreError> {
        self.write_direct(
            |_| true,
            move |conn| super::writer::delete_acked(conn, acks),
        )
        .await
    }

    async fn co_members(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        on_reader!(self, |conn| co_members_tx(&mut conn, user_id))
    }

    async fn invitations_of(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<InvitationRow>, StoreError> {
        on_reader!(self, |conn| invitations_of_tx(&mut conn, user_id, now))
    }

    async fn invites_only(&self, user_id: &str) -> Result<bool, StoreError> {
        on_reader!(self, |conn| invites_only_tx(&mut conn, user_id))
    }

    async fn set_invites_only(&self, user_id: &str, on: bool) -> Result<(), StoreError> {
        let user_id = user_id.to_owned();
        self.write(move |conn| Box::pin(set_invites_only_tx(conn, user_id, on)))
            .await
    }

    async fn sweep_groups(&self, now: i64) -> Result<u64, StoreError> {
        self.write(move |conn| Box::pin(sweep_groups_tx(conn, now)))
            .await
    }
}

#[async_trait]
impl LinkStore for SqliteStore {
    async fn create_link_code(
        &self,
        user_id: &str,
        code_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (user_id, code_hash) = (user_id.to_owned(), *code_hash);
        self.write(move |conn| {
            Box::pin(create_link_code_tx(
                conn, user_id, code_hash, now, expires_at,
            ))
        })
        .await
    }

    async fn link_device(
        &self,
        code_hash: &[u8; 32],
        registration_id: u32,
        token_hash: &[u8; 32],
        now: i64,
        max_devices: u32,
    ) -> Result<LinkOutcome, StoreError> {
        let (code_hash, token_hash) = (*code_hash, *token_hash);
        self.write(move |conn| {
            Box::pin(link_device_tx(
                conn,
                code_hash,
                registration_id,
                token_hash,
                now,
                max_devices,
            ))
        })
        .await
    }

    async fn set_last_seen(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        let user_id = user_id.to_owned();
        self.write(move |conn| Box::pin(set_last_seen_tx(conn, user_id, at)))
            .await
    }

    async fn last_seen(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        on_reader!(self, |conn| last_seen_tx(&mut conn, user_id))
    }
}
