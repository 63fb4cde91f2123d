//! The Sotto relay binary.
#![forbid(unsafe_code)]

fn main() {}
