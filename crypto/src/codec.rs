//! The one binary encoding every Sotto key, record and message uses.
//!
//! Integers are big-endian. Variable-length byte strings carry a `u32` length prefix and every read of
//! one names the largest length the caller accepts, so a hostile length can never make us allocate or
//! read past what the format allows. A value is decoded with [`Reader::finish`] at the end, which
//! rejects trailing bytes: every encoding has exactly one valid byte string.
//!
//! Secret-bearing records are written with [`Writer::into_zeroizing`] so the serialized copy is wiped
//! when dropped.

use zeroize::Zeroizing;

/// Why bytes could not be decoded. Deliberately coarse: it names the shape problem, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value was complete.
    #[error("input is truncated")]
    Truncated,
    /// Bytes remained after a complete value.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A length prefix exceeded what this field allows.
    #[error("field length {len} exceeds the maximum of {max}")]
    TooLong {
        /// The length the input claimed.
        len: u64,
        /// The largest length the field accepts.
        max: u64,
    },
    /// The leading version byte is not one this build understands.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The leading type tag is not the one expected here.
    #[error("unexpected type tag {0}")]
    UnexpectedTag(u8),
    /// A field held a value outside its domain (an invalid key, an unknown enum value, ...).
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
}

/// Appends encoded values to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl core::fmt::Debug for Writer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The buffer may hold secret material; show only its size.
        f.debug_struct("Writer")
            .field("len", &self.buf.len())
            .finish()
    }
}

#[allow(dead_code)]
impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Fixed-size field: no length prefix, the reader knows the size.
    pub(crate) fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Variable-size field with a `u32` length prefix.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        // Lengths beyond u32 never occur: every caller's field is capped far below 4 GiB.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(bytes);
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// For records that contain secrets: the caller gets a buffer that wipes itself on drop.
    pub(crate) fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.buf)
    }
}

/// Reads encoded values from a byte slice, never past its end.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

#[allow(dead_code)]
impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue("boolean")),
        }
    }

    /// Expects `tag` as the next byte.
    pub(crate) fn tag(&mut self, tag: u8) -> Result<(), DecodeError> {
        match self.u8()? {
            t if t == tag => Ok(()),
            t => Err(DecodeError::UnexpectedTag(t)),
        }
    }

    /// Expects `version` as the next byte.
    pub(crate) fn version(&mut self, version: u8) -> Result<(), DecodeError> {
        match self.u8()? {
            v if v == version => Ok(()),
            v => Err(DecodeError::UnknownVersion(v)),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn fixed(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }

    /// A length-prefixed field of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        let len_usize = usize::try_from(len).map_err(|_| DecodeError::TooLong {
            len: u64::from(len),
            max: max as u64,
        })?;
        if len_usize > max {
            return Err(DecodeError::TooLong {
                len: u64::from(len),
                max: max as u64,
            });
        }
        self.take(len_usize)
    }

    /// A count prefix (`u32`) of at most `max` items; the caller then reads that many items.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
        if n_usize > max {
            return Err(DecodeError::TooLong {
                len: u64::from(n),
                max: max as u64,
            });
        }
        Ok(n_usize)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Everything that is left, consuming it.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Ends decoding: any bytes left over are an error.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .bool(true)
            .fixed(&[9; 4])
            .bytes(b"hello");
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 4);
        assert!(r.bool().unwrap());
        assert_eq!(r.array::<4>().unwrap(), [9; 4]);
        assert_eq!(r.bytes(5).unwrap(), b"hello");
        r.finish().unwrap();
    }

    #[test]
    fn rejects_hostile_lengths_and_trailing_bytes() {
        let mut w = Writer::new();
        w.bytes(&[0; 10]);
        let bytes = w.into_vec();
        assert_eq!(
            Reader::new(&bytes).bytes(9),
            Err(DecodeError::TooLong { len: 10, max: 9 })
        );
        assert_eq!(
            Reader::new(&bytes[..8]).bytes(10),
            Err(DecodeError::Truncated)
        );
        let mut r = Reader::new(&bytes);
        r.u8().unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(13)));
        assert_eq!(
            Reader::new(&[2]).bool(),
            Err(DecodeError::InvalidValue("boolean"))
        );
        assert_eq!(
            Reader::new(&[7]).version(1),
            Err(DecodeError::UnknownVersion(7))
        );
    }
}
