//! `uniffi-bindgen generate <library> --language kotlin|swift|python --out-dir <dir>`: library
//! mode reads the `UNIFFI_META_*` symbols of an unstripped build of `sotto-ffi`.
#![forbid(unsafe_code)]

fn main() {
    uniffi::uniffi_bindgen_main()
}
