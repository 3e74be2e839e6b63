//! A JSON extractor whose rejections use the same error body as every other error.

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::unprocessable(e.body_text()),
                JsonRejection::MissingJsonContentType(e) => {
                    ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.body_text())
                }
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::too_large()
                }
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
