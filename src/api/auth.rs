//! API keys with roles (`KEFU_API_KEYS=reader:KEY,editor:KEY`), sent as
//! `Authorization: Bearer KEY`. Readers may recommend, suggest, read
//! answers, the taxonomy and send feedback; editors may do everything (the
//! review queue, tag relations and analytics are editors' only). Keys are
//! never logged.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method, StatusCode};

use super::error::ApiError;

/// A key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Editor,
}

/// Parsed keys; empty when auth is off.
#[derive(Clone, Default)]
pub struct Keys(HashMap<String, Role>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} configured)", self.0.len())
    }
}

impl Keys {
    /// Parses `reader:KEY,editor:KEY,...`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, key) = part
                .split_once(':')
                .ok_or_else(|| "each API key entry must look like role:KEY".to_string())?;
            let role = match role.trim() {
                "reader" => Role::Reader,
                "editor" => Role::Editor,
                other => return Err(format!("unknown API key role '{other}' (reader or editor)")),
            };
            let key = key.trim();
            if key.len() < 8 {
                return Err("API keys must be at least 8 characters".into());
            }
            keys.insert(key.to_string(), role);
        }
        Ok(Self(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks a request against the role its route needs.
    pub fn check(&self, headers: &HeaderMap, needed: Role) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let role = token.and_then(|t| self.0.get(t)).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY)",
            )
        })?;
        if needed == Role::Editor && *role != Role::Editor {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an editor key",
            ));
        }
        Ok(())
    }
}

/// The role a route needs; `None` for public routes.
pub fn needed_role(method: &Method, path: &str) -> Option<Role> {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => None,
        "/v1/recommend" | "/v1/suggest" | "/v1/feedback" | "/metrics" => Some(Role::Reader),
        p if p.starts_with("/v1/answers") && *method == Method::GET => Some(Role::Reader),
        "/v1/taxonomy" if *method == Method::GET => Some(Role::Reader),
        _ => Some(Role::Editor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_roles_apply() {
        let keys = Keys::parse("reader:readerkey1, editor:editorkey1").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            keys.check(&h, Role::Reader).unwrap_err().code,
            "unauthorized"
        );
        h.insert("authorization", "Bearer readerkey1".parse().unwrap());
        assert!(keys.check(&h, Role::Reader).is_ok());
        assert_eq!(keys.check(&h, Role::Editor).unwrap_err().code, "forbidden");
        assert!(Keys::parse("admin:xxxxxxxxxx").is_err());
        assert!(Keys::parse("reader").is_err());
        assert!(format!("{keys:?}").find("readerkey1").is_none());
        assert_eq!(
            needed_role(&Method::GET, "/v1/answers/x"),
            Some(Role::Reader)
        );
        assert_eq!(
            needed_role(&Method::GET, "/v1/answers/{id}/related"),
            Some(Role::Reader)
        );
        assert_eq!(
            needed_role(&Method::PUT, "/v1/answers/{id}/related"),
            Some(Role::Editor)
        );
        assert_eq!(
            needed_role(&Method::DELETE, "/v1/answers/x"),
            Some(Role::Editor)
        );
        assert_eq!(needed_role(&Method::GET, "/healthz"), None);
        assert_eq!(
            needed_role(&Method::GET, "/v1/taxonomy"),
            Some(Role::Reader)
        );
        assert_eq!(
            needed_role(&Method::PUT, "/v1/taxonomy/tags/{tag}/related"),
            Some(Role::Editor)
        );
        assert_eq!(needed_role(&Method::GET, "/v1/review"), Some(Role::Editor));
        assert_eq!(
            needed_role(&Method::POST, "/v1/review/{id}"),
            Some(Role::Editor)
        );
        assert_eq!(
            needed_role(&Method::POST, "/v1/feedback"),
            Some(Role::Reader)
        );
        assert_eq!(
            needed_role(&Method::GET, "/v1/analytics/hot"),
            Some(Role::Editor)
        );
    }
}
