//! Attachments: the file is encrypted as it is read and uploaded as it is encrypted (a bounded
//! channel of 64 KiB chunks between the two), and downloaded, verified and decrypted chunk by
//! chunk into the destination file. Memory stays at a few chunks whatever the file size.

use std::path::Path;

use bytes::Bytes;
use sotto_client_core::AttachmentPointer;
use sotto_crypto::attachment::{
    ciphertext_len, AttachmentDigest, AttachmentKey, Decryptor, Encryptor, CHUNK_SIZE,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::http::Http;

/// Largest attachment the SDK sends (the relay's default limit).
pub const MAX_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;

/// Why an attachment could not be sent or fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// Over 50 MB, or empty.
    #[error("attachments must be 1 byte to 50 MB")]
    Size,
    /// The local file could not be read or written.
    #[error("file: {0}")]
    File(String),
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The relay refused (status).
    #[error("the relay refused the attachment (HTTP {0})")]
    Rejected(u16),
    /// The blob does not match the key and digest in the message (the file was removed).
    #[error("the attachment failed verification")]
    Corrupt,
    /// The message could not be sent.
    #[error("not sent: {0}")]
    Send(String),
}

/// Encrypts and uploads `path`; returns the pointer for the message.
pub(crate) async fn upload(
    http: &Http,
    path: &Path,
    content_type: &str,
) -> Result<AttachmentPointer, AttachmentError> {
    let file_err = |e: std::io::Error| AttachmentError::File(format!("{}: {e}", path.display()));
    let size = tokio::fs::metadata(path).await.map_err(file_err)?.len();
    if size == 0 || size > MAX_ATTACHMENT_BYTES {
        return Err(AttachmentError::Size);
    }
    let key = AttachmentKey::generate(&mut rand::rngs::OsRng);
    let mut encryptor = Encryptor::new(&key, &mut rand::rngs::OsRng);
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (digest_tx, digest_rx) = tokio::sync::oneshot::channel::<AttachmentDigest>();
    let mut file = tokio::fs::File::open(path).await.map_err(file_err)?;
    let producer = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut out = Vec::with_capacity(CHUNK_SIZE + 64);
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if n == 0 {
                break;
            }
            if encryptor
                .push(buf.get(..n).unwrap_or_default(), &mut out)
                .is_err()
            {
                return;
            }
            if !out.is_empty()
                && tx
                    .send(Ok(Bytes::from(std::mem::take(&mut out))))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if let Ok(digest) = encryptor.finish(&mut out) {
            let _ = tx.send(Ok(Bytes::from(out))).await;
            let _ = digest_tx.send(digest);
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let answer = http
        .post_stream(
            "/api/attachments",
            reqwest::Body::wrap_stream(stream),
            ciphertext_len(size),
        )
        .await;
    let _ = producer.await;
    let answer = answer.map_err(|_| AttachmentError::Unreachable)?;
    if answer.status != 201 {
        return Err(AttachmentError::Rejected(answer.status));
    }
    let uploaded: sotto_wire::AttachmentUploaded = serde_json::from_slice(&answer.body)
        .map_err(|_| AttachmentError::Rejected(answer.status))?;
    let digest = digest_rx
        .await
        .map_err(|_| AttachmentError::File("encryption failed".into()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("attachment")
        .to_owned();
    Ok(AttachmentPointer {
        attachment_id: uploaded.attachment_id,
        key: hex::encode(&key.to_bytes()[..]),
        digest: hex::encode(digest.0),
        size,
        file_name,
        content_type: content_type.to_owned(),
    })
}

/// Downloads, verifies and decrypts an attachment into `dest` (removed again if anything fails).
pub(crate) async fn download(
    http: &Http,
    pointer: &AttachmentPointer,
    dest: &Path,
) -> Result<u64, AttachmentError> {
    let key: [u8; 32] = hex::decode(&pointer.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(AttachmentError::Corrupt)?;
    let digest: [u8; 32] = hex::decode(&pointer.digest)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(AttachmentError::Corrupt)?;
    let key = AttachmentKey::from_bytes(&key);
    let mut decryptor = Decryptor::new(&key, &AttachmentDigest(digest));
    let mut resp = http
        .get_stream(&format!(
            "/api/attachments/{}",
            crate::http::segment(&pointer.attachment_id)
        ))
        .await
        .map_err(|s| match s {
            0 => AttachmentError::Unreachable,
            s => AttachmentError::Rejected(s),
        })?;
    let file_err = |e: std::io::Error| AttachmentError::File(format!("{}: {e}", dest.display()));
    let mut file = tokio::fs::File::create(dest).await.map_err(file_err)?;
    let mut out = Vec::with_capacity(CHUNK_SIZE);
    let mut written = 0u64;
    let result: Result<(), AttachmentError> = async {
        let limit = ciphertext_len(MAX_ATTACHMENT_BYTES);
        let mut received = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| AttachmentError::Unreachable)?
        {
            received += chunk.len() as u64;
            if received > limit {
                return Err(AttachmentError::Corrupt);
            }
            decryptor
                .push(&chunk, &mut out)
                .map_err(|_| AttachmentError::Corrupt)?;
            file.write_all(&out).await.map_err(file_err)?;
            written += out.len() as u64;
            out.clear();
        }
        decryptor
            .finish(&mut out)
            .map_err(|_| AttachmentError::Corrupt)?;
        file.write_all(&out).await.map_err(file_err)?;
        written += out.len() as u64;
        file.flush().await.map_err(file_err)?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        drop(file);
        let _ = tokio::fs::remove_file(dest).await;
        return Err(e);
    }
    Ok(written)
}
