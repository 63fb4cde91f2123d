//! The bus on PostgreSQL LISTEN/NOTIFY, on the relay's own database.
//!
//! One channel, `sotto_cluster`. A payload over 7,900 bytes is written to the
//! `cluster_spill` table and the notification carries `@<row id>`; receivers read the row. Each
//! publish is one autocommit statement outside any writing transaction (`pg_notify` inside one
//! would hold PostgreSQL's global notification lock until its commit).

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::{Bus, BusError, Received};

/// The LISTEN/NOTIFY channel.
pub const CHANNEL: &str = "sotto_cluster";
/// Payloads up to this size go in the notification itself (PostgreSQL's limit is 8,000 bytes).
const MAX_NOTIFY_BYTES: usize = 7_900;
/// How long a spilled payload is kept.
const SPILL_TTL_MS: i64 = 60_000;

/// PostgreSQL LISTEN/NOTIFY.
#[derive(Debug, Clone)]
pub struct PgBus {
    pool: PgPool,
}

impl PgBus {
    /// The bus on its own small pool to the relay's database (the listener holds one connection;
    /// publishes share the others), so that busy store connections never delay it.
    pub async fn connect(database_url: &str) -> Result<Self, sqlx::Error> {
        let options =
            <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(database_url)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl Bus for PgBus {
    async fn publish(&self, payload: Vec<u8>) -> Result<(), BusError> {
        let text = String::from_utf8_lossy(&payload).into_owned();
        let text = if text.len() <= MAX_NOTIFY_BYTES {
            text
        } else {
            let now = crate::now_ms();
            let id: i64 = sqlx::query_scalar(
                "WITH gone AS (DELETE FROM cluster_spill WHERE created_at < $2) \
                 INSERT INTO cluster_spill (body, created_at) VALUES ($1, $3) RETURNING id",
            )
            .bind(text)
            .bind(now.saturating_sub(SPILL_TTL_MS))
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
            format!("@{id}")
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<Received>, BusError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let pool = self.pool.clone();
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let received = match listener.try_recv().await {
                    Ok(Some(n)) => match n.payload().strip_prefix('@') {
                        None => Received::Payload(n.payload().as_bytes().to_vec()),
                        Some(id) => {
                            let Ok(id) = id.parse::<i64>() else { continue };
                            match sqlx::query_scalar::<_, String>(
                                "SELECT body FROM cluster_spill WHERE id = $1",
                            )
                            .bind(id)
                            .fetch_optional(&pool)
                            .await
                            {
                                Ok(Some(body)) => Received::Payload(body.into_bytes()),
                                Ok(None) => continue,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cluster spill read failed");
                                    Received::Gap
                                }
                            }
                        }
                    },
                    // The connection dropped and was re-established: anything may be missed.
                    Ok(None) => Received::Gap,
                    Err(e) => {
                        tracing::warn!(error = %e, "postgres listener failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Received::Gap
                    }
                };
                if tx.send(received).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bus that goes nowhere (encoding tests).
    #[derive(Debug)]
    pub(crate) struct Null;

    #[async_trait::async_trait]
    impl Bus for Null {
        async fn publish(&self, _: Vec<u8>) -> Result<(), BusError> {
            Ok(())
        }
        async fn subscribe(&self) -> Result<mpsc::Receiver<Received>, BusError> {
            Ok(mpsc::channel(1).1)
        }
        fn name(&self) -> &'static str {
            "null"
        }
    }
}
