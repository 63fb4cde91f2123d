//! The bundled web chat page (`--web-dir`): static files from one folder at `/`, off unless
//! configured. The page runs the whole client in the browser (WASM); the relay only hands out
//! its files, so nothing here sees a key or a plaintext.
//!
//! Every file goes out with a Content-Security-Policy that allows only this origin's scripts
//! (and WASM compilation), this origin's HTTP and WebSocket endpoints, and `blob:` images for
//! decrypted attachments; anything else the folder does not hold is the API's JSON 404.

use std::path::Path;

use axum::http::{header, HeaderValue};
use axum::routing::any;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// What the page may load and connect to.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     connect-src 'self' ws: wss:; img-src 'self' blob: data:; media-src 'self' blob:; \
     style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The routes serving `dir` (with `index.html` for folders and the `.gz` twin of a file when the
/// browser accepts gzip); paths the folder does not hold get the API's JSON 404.
pub fn site<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    let files = ServeDir::new(dir)
        .precompressed_gzip()
        .append_index_html_on_directories(true)
        .fallback(any(crate::error::not_found));
    Router::new().fallback_service(files).layer(
        ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            )),
    )
}
