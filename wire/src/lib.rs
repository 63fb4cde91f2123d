//! Wire types shared by the Sotto relay and its clients.
#![forbid(unsafe_code)]
