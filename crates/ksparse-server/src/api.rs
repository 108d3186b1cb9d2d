//! The envelope every JSON answer travels in, and the one error type every route returns.
//!
//! Shapes are Qdrant's, so its clients parse them: success is
//! `{"result": …, "status": "ok", "time": seconds}`, failure is
//! `{"status": {"error": "what was wrong"}, "time": seconds}` with the HTTP status saying
//! which kind of wrong (400 bad input, 401/403 keys, 404 unknown, 409 conflict, 413 too
//! large, 422 unreadable JSON, 500 ours).

use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A route's failure: an HTTP status and a message for the person who sent the request.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was wrong, naming the field or value.
    pub message: String,
}

impl ApiError {
    /// 400: the request is well-formed JSON but asks for something invalid.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such collection, point or snapshot.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: conflicts with the current state (exists already, busy).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Library errors are data errors unless they say otherwise: the request's content made
/// them (bad codes, wrong widths); the message chain names the field.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::bad(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        let body = serde_json::json!({
            "status": {"error": self.message},
            "time": 0.0,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A successful answer: `result` in the envelope, with the time the route took.
pub struct Answer<T>(pub T, pub Instant);

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "result": self.0,
            "status": "ok",
            "time": self.1.elapsed().as_secs_f64(),
        });
        axum::Json(body).into_response()
    }
}

/// What every route returns.
pub type Reply<T> = Result<Answer<T>, ApiError>;

/// A JSON request body whose rejections are [`ApiError`]s in the envelope: 413 when the
/// body is over the size limit, 422 when it is not the expected JSON (with serde's
/// message naming the field, line and column), 400 without a JSON content type.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(r: JsonRejection) -> ApiError {
    let status = r.status();
    let message = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            "the body must be JSON with the header content-type: application/json".to_string()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than the server's body size limit".to_string()
        }
        _ => format!("invalid request body: {}", r.body_text()),
    };
    ApiError::new(status, message)
}
