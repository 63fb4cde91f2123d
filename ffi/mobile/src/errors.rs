//! One error enum per operation, mapped from the SDK's typed errors. Field names avoid `message`
//! (Kotlin's `Throwable.message`) so every language gets the fields as written.

use sotto_client::SendFailure as SdkFailure;

/// Why `Sotto::new` refused the configuration (nothing was contacted).
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The server URL is not `http(s)://host…` (or longer than 2048 bytes).
    #[error("invalid server URL")]
    InvalidUrl,
    /// The store path is empty, too long or contains NUL.
    #[error("invalid store path")]
    InvalidStorePath,
    /// A raw store key must be 32 bytes.
    #[error("the store key is {length} bytes, it must be 32")]
    InvalidStoreKey {
        /// The length given.
        length: u64,
    },
    /// The store passphrase is empty.
    #[error("the store passphrase is empty")]
    EmptyPassphrase,
    /// The runtime could not start.
    #[error("the runtime could not start: {reason}")]
    Runtime {
        /// The OS error.
        reason: String,
    },
}

/// Why registration failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The server URL is not valid.
    #[error("invalid server URL")]
    InvalidUrl,
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The username is taken.
    #[error("that username is taken")]
    UsernameTaken,
    /// The relay refused (invalid username, email or password, …).
    #[error("the relay refused: {reason}")]
    Rejected {
        /// The relay's message and code.
        reason: String,
    },
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client::RegisterError> for RegisterError {
    fn from(e: sotto_client::RegisterError) -> Self {
        use sotto_client::RegisterError as E;
        match e {
            E::InvalidUrl => Self::InvalidUrl,
            E::Unreachable => Self::Unreachable,
            E::UsernameTaken => Self::UsernameTaken,
            E::Rejected(reason) => Self::Rejected { reason },
            e => Self::Rejected {
                reason: e.to_string(),
            },
        }
    }
}

/// Why login or opening a profile failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The server URL is not valid.
    #[error("invalid server URL")]
    InvalidUrl,
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// Wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The account already has a device: link this one from it.
    #[error("this account already has a device")]
    DeviceExists,
    /// This pending link was already finished (or is being finished).
    #[error("this pending link was already used")]
    LinkAlreadyUsed,
    /// The store key or passphrase is wrong.
    #[error("wrong store key or passphrase")]
    WrongStoreKey,
    /// The store holds no account (log in first).
    #[error("no account in this store")]
    NoAccount,
    /// The store could not be opened or written.
    #[error("store: {reason}")]
    Store {
        /// What failed.
        reason: String,
    },
    /// The relay refused.
    #[error("the relay refused: {reason}")]
    Rejected {
        /// The relay's message and code.
        reason: String,
    },
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client::LoginError> for LoginError {
    fn from(e: sotto_client::LoginError) -> Self {
        use sotto_client::LoginError as E;
        match e {
            E::InvalidUrl => Self::InvalidUrl,
            E::Unreachable => Self::Unreachable,
            E::InvalidCredentials => Self::InvalidCredentials,
            E::DeviceExists => Self::DeviceExists,
            E::WrongStoreKey => Self::WrongStoreKey,
            E::NoAccount => Self::NoAccount,
            E::Store(reason) => Self::Store { reason },
            E::Rejected(reason) => Self::Rejected { reason },
            e => Self::Rejected {
                reason: e.to_string(),
            },
        }
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The text is empty.
    #[error("the text is empty")]
    EmptyText,
    /// The text is over the limit.
    #[error("the text is {length} characters, the limit is {max}")]
    TextTooLong {
        /// Its length in characters.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// The recipient is not a valid user id, or is this account.
    #[error("invalid recipient: {reason}")]
    InvalidRecipient {
        /// Which.
        reason: String,
    },
    /// The relay does not know the recipient.
    #[error("unknown user")]
    UnknownUser,
    /// The recipient has no device whose keys verify.
    #[error("the recipient has no verified device")]
    NoVerifiedDevices,
    /// The relay keeps listing devices that cannot be verified.
    #[error("the recipient's device list cannot be verified")]
    DeviceListUnresolved,
    /// The relay refused the message.
    #[error("the relay refused: {code}")]
    Rejected {
        /// The relay's error code.
        code: String,
    },
    /// The relay's answers made no sense.
    #[error("the relay's answer made no sense")]
    BadRelayAnswer,
    /// The client stopped before the relay answered.
    #[error("the client stopped")]
    Stopped,
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client::SendTextError> for SendError {
    fn from(e: sotto_client::SendTextError) -> Self {
        use sotto_client::SendTextError as E;
        match e {
            // Text is checked before the call (to report its length): a text the core still
            // refuses broke a rule the binding does not know.
            E::InvalidText => Self::Rejected {
                code: "invalid_text".into(),
            },
            E::InvalidRecipient => Self::InvalidRecipient {
                reason: "not a user id, or not a group this account is in".into(),
            },
            E::ToSelf => Self::InvalidRecipient {
                reason: "this account".into(),
            },
            E::Failed(SdkFailure::UnknownUser) => Self::UnknownUser,
            E::Failed(SdkFailure::NoVerifiedDevices) => Self::NoVerifiedDevices,
            E::Failed(SdkFailure::DeviceListUnresolved) => Self::DeviceListUnresolved,
            E::Failed(SdkFailure::Rejected { code }) => Self::Rejected { code },
            E::Failed(SdkFailure::BadRelayAnswer) => Self::BadRelayAnswer,
            E::Failed(other) => Self::Rejected {
                code: format!("{other:?}"),
            },
            E::Stopped => Self::Stopped,
            _ => Self::Stopped,
        }
    }
}

/// Why a relay query (devices, presence, typing, history) failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The relay does not know this user or device.
    #[error("unknown user or device")]
    Unknown,
    /// The relay refused.
    #[error("the relay refused: {reason}")]
    Rejected {
        /// The relay's message and code.
        reason: String,
    },
    /// The store failed.
    #[error("store: {reason}")]
    Store {
        /// What failed.
        reason: String,
    },
    /// A bad argument (limit, cursor, username, no session yet).
    #[error("invalid argument: {reason}")]
    Invalid {
        /// Which.
        reason: String,
    },
    /// Too many requests of this kind (e.g. username lookups); try again later.
    #[error("too many requests; try again later")]
    RateLimited,
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client::QueryError> for QueryError {
    fn from(e: sotto_client::QueryError) -> Self {
        use sotto_client::QueryError as E;
        match e {
            E::Unreachable => Self::Unreachable,
            E::Unknown => Self::Unknown,
            E::Rejected(reason) => Self::Rejected { reason },
            E::Store(reason) => Self::Store { reason },
            E::Invalid(reason) => Self::Invalid {
                reason: reason.to_owned(),
            },
            E::RateLimited => Self::RateLimited,
            e => Self::Rejected {
                reason: e.to_string(),
            },
        }
    }
}

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Nothing is known about this user yet.
    #[error("unknown contact")]
    UnknownContact,
    /// No identity change awaits approval.
    #[error("no identity change to approve")]
    NothingPending,
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client_core::IdentityError> for IdentityError {
    fn from(e: sotto_client_core::IdentityError) -> Self {
        use sotto_client_core::IdentityError as E;
        match e {
            E::UnknownContact => Self::UnknownContact,
            E::NothingPending => Self::NothingPending,
            _ => Self::UnknownContact,
        }
    }
}

/// Why `subscribe` failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The event thread could not start.
    #[error("the event thread could not start: {reason}")]
    Thread {
        /// The OS error.
        reason: String,
    },
}

/// Why an attachment was not sent or fetched.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// Empty, or over 50 MB.
    #[error("attachments must be 1 byte to 50 MB")]
    Size,
    /// The local file could not be read or written.
    #[error("file: {reason}")]
    File {
        /// What failed.
        reason: String,
    },
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The relay refused (HTTP status).
    #[error("the relay refused the attachment (HTTP {status})")]
    Rejected {
        /// The status.
        status: u16,
    },
    /// The blob does not match the message's key and digest.
    #[error("the attachment failed verification")]
    Corrupt,
    /// The message carrying it could not be sent.
    #[error("not sent: {reason}")]
    NotSent {
        /// Why.
        reason: String,
    },
    /// The task did not finish (the runtime stopped).
    #[error("interrupted")]
    Interrupted,
}

impl From<sotto_client::AttachmentError> for AttachmentError {
    fn from(e: sotto_client::AttachmentError) -> Self {
        use sotto_client::AttachmentError as E;
        match e {
            E::Size => Self::Size,
            E::File(reason) => Self::File { reason },
            E::Unreachable => Self::Unreachable,
            E::Rejected(status) => Self::Rejected { status },
            E::Corrupt => Self::Corrupt,
            E::Send(reason) => Self::NotSent { reason },
            e => Self::NotSent {
                reason: e.to_string(),
            },
        }
    }
}
