//! Who a session talks to: a relay user id plus a device id.
//!
//! The canonical encoding ([`DeviceAddress::to_bytes`]) is what every KDF input and every AEAD
//! associated-data string uses, so two implementations agree on it byte for byte:
//!
//! ```text
//! u32 BE  len(user)     (1 ..= 64)
//! bytes   user          (UTF-8, exactly as the relay spells the user id)
//! u32 BE  device
//! ```

use crate::codec::{Reader, Writer};
use crate::DecodeError;

/// The longest user id, in bytes, an address accepts.
pub const MAX_USER_ID_LEN: usize = 64;

/// One device of one account: the relay's user id string and the device's number.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct DeviceAddress {
    user: String,
    device: u32,
}

/// Why a [`DeviceAddress`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The user id was empty.
    #[error("user id is empty")]
    EmptyUser,
    /// The user id was longer than [`MAX_USER_ID_LEN`] bytes.
    #[error("user id is {0} bytes, longer than {MAX_USER_ID_LEN}")]
    UserTooLong(usize),
}

impl DeviceAddress {
    /// An address for `device` of `user`; the user id must be 1..=64 bytes.
    pub fn new(user: impl Into<String>, device: u32) -> Result<Self, AddressError> {
        let user = user.into();
        if user.is_empty() {
            return Err(AddressError::EmptyUser);
        }
        if user.len() > MAX_USER_ID_LEN {
            return Err(AddressError::UserTooLong(user.len()));
        }
        Ok(Self { user, device })
    }

    /// The relay's user id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The device number within the account.
    pub fn device(&self) -> u32 {
        self.device
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.bytes(self.user.as_bytes()).u32(self.device);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let user = r.bytes(MAX_USER_ID_LEN)?;
        let user = core::str::from_utf8(user)
            .map_err(|_| DecodeError::InvalidValue("user id is not UTF-8"))?;
        let device = r.u32()?;
        Self::new(user, device).map_err(|_| DecodeError::InvalidValue("user id"))
    }

    /// The canonical encoding used in associated data and KDF inputs (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(8 + self.user.len());
        self.write(&mut w);
        w.into_vec()
    }

    /// Decodes [`DeviceAddress::to_bytes`]; rejects empty or over-long user ids and trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let address = Self::read(&mut r)?;
        r.finish()?;
        Ok(address)
    }
}

impl core::fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.user, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_round_trips() {
        let a = DeviceAddress::new("alice", 7).unwrap();
        let bytes = a.to_bytes();
        assert_eq!(
            bytes,
            [0, 0, 0, 5, b'a', b'l', b'i', b'c', b'e', 0, 0, 0, 7]
        );
        assert_eq!(DeviceAddress::from_bytes(&bytes).unwrap(), a);
        assert_eq!(a.to_string(), "alice.7");
    }

    #[test]
    fn rejects_bad_user_ids() {
        assert_eq!(DeviceAddress::new("", 1), Err(AddressError::EmptyUser));
        assert_eq!(
            DeviceAddress::new("x".repeat(65), 1),
            Err(AddressError::UserTooLong(65))
        );
        assert!(DeviceAddress::new("x".repeat(64), 1).is_ok());
        assert!(DeviceAddress::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(DeviceAddress::from_bytes(&[0, 0, 0, 1, 0xff, 0, 0, 0, 1]).is_err());
        assert!(DeviceAddress::from_bytes(&[0, 0, 0, 1, b'a', 0, 0, 0, 1, 0]).is_err());
    }
}
