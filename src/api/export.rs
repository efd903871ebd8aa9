//! `POST /api/export`: validate, package, answer with the file.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::json::AppJson;
use crate::export::{self, Export, ExportParams, content_disposition};

pub async fn export(AppJson(params): AppJson<ExportParams>) -> Result<Response, ApiError> {
    let (content_type, file_name, body, warnings) = match export::export(params)? {
        Export::File {
            file_name,
            body,
            warnings,
        } => (
            "text/plain; charset=utf-8",
            file_name,
            Body::from(body),
            warnings,
        ),
        Export::Archive {
            file_name,
            body,
            warnings,
            ..
        } => ("application/zip", file_name, Body::from(body), warnings),
    };
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = HeaderValue::from_str(&content_disposition(&file_name))
        .map_err(|_| ApiError::Internal("unencodable Content-Disposition".into()))?;
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    super::set_warnings(&mut resp, &warnings);
    Ok(resp)
}
