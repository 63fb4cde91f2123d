//! The OpenAPI 3.1 document of the relay, served at `/openapi.json`.
//!
//! It is generated, not written: every route is registered through [`routes`], which takes each
//! handler's `#[utoipa::path]` (method, path, success and error answers), infers path and query
//! parameters and the JSON request body from the handler's extractors, and takes the schemas from
//! the `sotto-wire` types. [`finish`] then adds the answers the extractors and middleware give on
//! every route of a kind (a JSON body: 400/408/413/415/422; a bearer token: 401; a path parameter:
//! 400 `invalid_path`; a query: 400 `invalid_query`), the `Error` body of every error answer and
//! `Retry-After` on every 429. The test suite checks every answer it gets against this document.

use std::sync::OnceLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::OpenApi as _;

/// The document's fixed parts: info, the bearer scheme, the error schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Sotto relay",
        description = "Stores and forwards opaque end-to-end encrypted envelopes. Binary values \
                       are standard base64; times are ms since the Unix epoch. Every error is \
                       {code, message}; the codes each status can carry are listed in its \
                       description."
    ),
    components(schemas(sotto_wire::ErrorBody))
)]
struct Base;

/// The body of a 409 on a send: either the devices do not match (`MismatchedDevices`, code
/// `mismatched_devices`) or the `clientMessageId` was used for another message (a plain error,
/// `client_message_id_reused`). Only for the document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SendConflict {
    /// `mismatched_devices`.
    Mismatched(sotto_wire::MismatchedDevices),
    /// `client_message_id_reused`.
    Reused(sotto_wire::ErrorBody),
}

/// The routes of the relay, each with its operation in the document.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<crate::AppState> {
    use crate::{api, ws};
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(Base::openapi())
        .routes(routes!(api::users::register))
        .routes(routes!(api::users::login))
        .routes(routes!(api::users::logout))
        .routes(routes!(api::users::devices))
        .routes(routes!(api::users::lookup))
        .routes(routes!(api::users::profile))
        .routes(routes!(api::users::settings, api::users::set_settings))
        .routes(routes!(api::keys::upload))
        .routes(routes!(api::keys::count))
        .routes(routes!(api::keys::bundles))
        .routes(routes!(api::keys::device_bundle))
        .routes(routes!(api::messages::send))
        .routes(routes!(api::messages::unread))
        .routes(routes!(api::messages::fetch))
        .routes(routes!(api::messages::ack))
        .routes(routes!(api::attachments::upload))
        .routes(routes!(api::attachments::download))
        .routes(routes!(api::groups::create, api::groups::list))
        .routes(routes!(api::groups::members))
        .routes(routes!(api::groups::invitations))
        .routes(routes!(
            api::groups::accept_invitation,
            api::groups::decline_invitation
        ))
        .routes(routes!(api::groups::cancel_invitation))
        .routes(routes!(api::groups::join))
        .routes(routes!(api::groups::leave))
        .routes(routes!(api::groups::remove, api::groups::set_role))
        .routes(routes!(api::groups::create_invite))
        .routes(routes!(api::groups::revoke_invite))
        .routes(routes!(api::groups::send))
        .routes(routes!(api::presence::status))
        .routes(routes!(api::presence::set))
        .routes(routes!(api::presence::subscribe))
        .routes(routes!(api::presence::ephemeral))
        .routes(routes!(api::provisioning::open))
        .routes(routes!(
            api::provisioning::deliver,
            api::provisioning::receive
        ))
        .routes(routes!(api::provisioning::create_code))
        .routes(routes!(api::provisioning::link))
        .routes(routes!(api::provisioning::remove_device))
        .routes(routes!(ws::upgrade))
        .routes(routes!(api::health))
        .routes(routes!(api::metrics))
        .routes(routes!(document))
}

/// The generated document.
pub fn document_value() -> serde_json::Value {
    let (_, doc) = routes().split_for_parts();
    serde_json::to_value(finish(doc)).unwrap_or_default()
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    static JSON: OnceLock<bytes::Bytes> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        serde_json::to_vec(&document_value())
            .unwrap_or_default()
            .into()
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json.clone(),
    )
        .into_response()
}

fn error_body() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "ErrorBody",
        ))))
        .build()
}

/// Adds `code` to the description of `status` (creating the answer if the handler did not
/// declare it).
fn declare(op: &mut Operation, status: &str, what: &str) {
    let entry = op
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(ResponseBuilder::new().description("").build()));
    if let RefOr::T(resp) = entry {
        if !resp.description.contains(what) {
            if resp.description.is_empty() {
                resp.description = what.to_owned();
            } else {
                resp.description = format!("{}; {what}", resp.description);
            }
        }
    }
}

fn finish_operation(op: &mut Operation, has_bearer: bool) {
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")));
    let raw_body = op.request_body.is_some() && !json_body;
    let params: Vec<ParameterIn> = op
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some(p.parameter_in.clone()),
            RefOr::Ref(_) => None,
        })
        .collect();
    if json_body {
        declare(op, "400", "`invalid_json`: the body is not JSON");
        declare(op, "408", "`body_timeout`: the body stopped arriving");
        declare(
            op,
            "413",
            "`payload_too_large`: the body is over the request limit",
        );
        declare(
            op,
            "415",
            "`unsupported_media_type`: no `Content-Type: application/json`",
        );
        declare(
            op,
            "422",
            "`invalid_fields`: a field is missing, unknown or of the wrong type",
        );
    }
    if raw_body {
        declare(op, "408", "`body_timeout`: the body stopped arriving");
        declare(op, "413", "`payload_too_large`: the body is over the limit");
    }
    if params.contains(&ParameterIn::Path) {
        declare(
            op,
            "400",
            "`invalid_path`: a path parameter has the wrong type",
        );
    }
    if params.contains(&ParameterIn::Query) {
        declare(
            op,
            "400",
            "`invalid_query`: an unknown or ill-typed query parameter",
        );
    }
    if has_bearer {
        declare(
            op,
            "401",
            "`unauthorized`: missing, invalid or revoked bearer token",
        );
    }
    for (status, resp) in op.responses.responses.iter_mut() {
        let RefOr::T(resp) = resp else { continue };
        let error = !status.starts_with('1') && !status.starts_with('2');
        if error && resp.content.is_empty() {
            resp.content
                .insert("application/json".into(), RefOr::T(error_body()));
        }
        if status == "429" {
            resp.headers.insert(
                "Retry-After".into(),
                RefOr::T(
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        ))
                        .description(Some("seconds until the request can succeed"))
                        .build(),
                ),
            );
        }
    }
}

/// Completes a generated document: the bearer scheme, the answers common to a kind of
/// operation, error bodies and `Retry-After`.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let has_bearer = op.security.as_ref().is_some_and(|s| !s.is_empty());
            finish_operation(op, has_bearer);
        }
    }
    doc
}
