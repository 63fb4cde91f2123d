//! The bus on NATS (`--nats-url`): one subject, core NATS publish/subscribe (no JetStream: nothing
//! on the bus needs to outlive a process).
//!
//! The client reconnects by itself; a reconnect, or the server dropping messages for a slow
//! subscriber, is reported to the relay as a [`Received::Gap`].

use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, Mutex};

use super::{Bus, BusError, Received};

/// The subject relay processes share unless configured otherwise.
pub const DEFAULT_SUBJECT: &str = "sotto.cluster";

/// NATS publish/subscribe.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    subject: String,
    /// Reconnects and slow-consumer reports, handed to the subscription task.
    gaps: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl NatsBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`); events go on `subject`.
    pub async fn connect(url: &str, subject: &str) -> Result<Self, BusError> {
        let (gap_tx, gap_rx) = mpsc::channel(16);
        let client = async_nats::ConnectOptions::new()
            .name("sotto-relay")
            .event_callback(move |event| {
                let gap_tx = gap_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected | async_nats::Event::SlowConsumer(_) => {
                            let _ = gap_tx.try_send(());
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("nats disconnected; reconnecting");
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        Ok(Self {
            client,
            subject: subject.to_owned(),
            gaps: Arc::new(Mutex::new(Some(gap_rx))),
        })
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, payload: Vec<u8>) -> Result<(), BusError> {
        self.client
            .publish(self.subject.clone(), payload.into())
            .await
            .map_err(|e| BusError::Nats(e.to_string()))
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<Received>, BusError> {
        let mut subscriber = self
            .client
            .subscribe(self.subject.clone())
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        // The subscription is registered with the server once this returns.
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        let mut gaps = self.gaps.lock().await.take();
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    m = subscriber.next() => match m {
                        Some(m) => Received::Payload(m.payload.to_vec()),
                        None => return,
                    },
                    Some(()) = async {
                        match gaps.as_mut() {
                            Some(g) => g.recv().await,
                            None => std::future::pending().await,
                        }
                    } => Received::Gap,
                };
                if tx.send(received).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}
