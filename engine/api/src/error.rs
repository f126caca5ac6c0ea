//! `ApiError`, the one error of the API, answered as RFC 9457 problem details
//! (`application/problem+json`): a stable machine-readable `code`, a human `message`, the
//! `status`, and for 5xx answers only a `request_id`. The cause of a 5xx goes to the log,
//! never to the client.
//!
//! The store's and the node's errors map to precise 4xx answers; extractor rejections
//! (malformed JSON, a wrong content type, an oversized body, a bad path or query) map to
//! the same shape through [`crate::extract`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyway_node::NodeError;
use keyway_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served, set by the request middleware.
    pub(crate) static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad path or query).
    #[error("{message}")]
    BadRequest {
        /// A stable code, e.g. `malformed_json`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No valid session or token was presented.
    #[error("sign in first: no valid session or API token was presented")]
    Unauthenticated,
    /// Wrong e-mail or password.
    #[error("the e-mail or password is wrong")]
    BadCredentials,
    /// The caller may not do this.
    #[error("{message}")]
    Forbidden {
        /// Why not.
        message: String,
    },
    /// The thing named does not exist (or is not visible to the caller).
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
    },
    /// The route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request clashes with the current state.
    #[error("{message}")]
    Conflict {
        /// A stable code, e.g. `duplicate`.
        code: &'static str,
        /// What clashes.
        message: String,
    },
    /// The body is larger than allowed.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not of the media type the route takes.
    #[error("the request body must be `{expected}`")]
    UnsupportedMediaType {
        /// The media type the route takes.
        expected: &'static str,
    },
    /// The input is well-formed but not acceptable.
    #[error("{message}")]
    Unprocessable {
        /// A stable code, e.g. `invalid`, `weak_password`, `voucher_cap`.
        code: &'static str,
        /// Why.
        message: String,
        /// Each broken rule, when there are several (password rules).
        details: Vec<String>,
    },
    /// A `Range` that starts at or past the end of what is asked for.
    #[error("the range starts at or past the end of the {size} bytes")]
    RangeNotSatisfiable {
        /// The whole size.
        size: u64,
    },
    /// Too many attempts; retry after this many seconds.
    #[error("too many attempts; retry in {retry_after} seconds")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// The node has not reached the revision asked for.
    #[error("this node has not reached revision `r{wanted}` yet (it is at `r{at}`)")]
    NotYet {
        /// The revision asked for.
        wanted: u64,
        /// The node's revision.
        at: u64,
    },
    /// The request took too long.
    #[error("the request took too long")]
    Timeout,
    /// The database is unavailable or refuses writes; retry later.
    #[error("the service is unavailable; retry later")]
    Unavailable {
        /// The cause, for the log only.
        cause: String,
    },
    /// The database is full.
    #[error("the service has no storage left")]
    StorageFull {
        /// The cause, for the log only.
        cause: String,
    },
    /// Anything else: a bug or an unexpected failure.
    #[error("internal error")]
    Internal {
        /// The cause, for the log only.
        cause: String,
    },
}

/// The problem-details body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the `code` says what happened.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// A stable machine-readable code.
    pub code: String,
    /// A human message.
    pub message: String,
    /// Each broken rule, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// The request id, for 5xx answers only: quote it when reporting the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    /// An internal error with its cause (logged, never sent).
    pub(crate) fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal {
            cause: cause.to_string(),
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::Forbidden {
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Unprocessable {
            code: "invalid",
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotYet { .. } | ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. } => code,
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::BadCredentials => "bad_credentials",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotYet { .. } => "revision_not_reached",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::StorageFull { .. } => "storage_full",
            ApiError::Internal { .. } => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // A refusal the database raised answers in the store's words; the database's own
        // text (tables, constraints, values) goes to the log only.
        if e.kind().is_client_error() && std::error::Error::source(&e).is_some() {
            tracing::debug!(error = %e.with_causes(), "the database refused the request");
        }
        match e {
            StoreError::Duplicate { .. } => ApiError::Conflict {
                code: "duplicate",
                message: e.to_string(),
            },
            StoreError::InUse { .. } => ApiError::Conflict {
                code: "in_use",
                message: e.to_string(),
            },
            StoreError::NotFound { .. } => ApiError::NotFound { message: e.to_string() },
            StoreError::ForeignKey { .. } => ApiError::Unprocessable {
                code: "unknown_reference",
                message: e.to_string(),
                details: Vec::new(),
            },
            StoreError::Invalid { .. } => ApiError::Unprocessable {
                code: "invalid",
                message: e.to_string(),
                details: Vec::new(),
            },
            StoreError::Busy { .. } => ApiError::RateLimited { retry_after: 1 },
            StoreError::Unavailable { .. } | StoreError::ReadOnly { .. } | StoreError::Closed => {
                ApiError::Unavailable { cause: e.with_causes() }
            }
            StoreError::StorageFull { .. } => ApiError::StorageFull { cause: e.with_causes() },
            StoreError::Corrupt { .. } | StoreError::Internal { .. } => ApiError::internal(e.with_causes()),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Store(e) => e.into(),
            NodeError::NotYet { wanted, at } => ApiError::NotYet { wanted, at },
            NodeError::UnknownRule { .. } | NodeError::Bundle(_) | NodeError::Attach(_) => ApiError::Unprocessable {
                code: "invalid_policy",
                message: e.to_string(),
                details: Vec::new(),
            },
            NodeError::RuleWouldDangle { .. } => ApiError::Conflict {
                code: "rule_would_dangle",
                message: e.to_string(),
            },
            NodeError::ConfigWouldBreak { .. } => ApiError::Conflict {
                code: "door_config_refused",
                message: e.to_string(),
            },
            NodeError::Feed(_) | NodeError::NoBundle | NodeError::Runtime(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = status.is_server_error().then(request_id);
        match &self {
            ApiError::Internal { cause } | ApiError::Unavailable { cause } | ApiError::StorageFull { cause } => {
                tracing::error!(request_id = ?request_id, code = self.code(), %cause, "request failed");
            }
            _ => tracing::debug!(code = self.code(), status = status.as_u16(), "request refused"),
        }
        let details = match &self {
            ApiError::Unprocessable { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            code: self.code().to_owned(),
            message: self.to_string(),
            details,
            request_id,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited { retry_after } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        if let ApiError::RangeNotSatisfiable { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        response
    }
}
