//! The two error vocabularies the filter speaks: RFC 6749 §5.2 at the token
//! endpoint and RFC 6750 §3 at the bearer guard. Each variant knows its status,
//! its registered error code and its challenge; causes are typed all the way
//! to the wire (tests match variants, a count by cause is one `match`), and
//! their descriptions are fixed strings, so no client input (let alone a
//! secret) is ever echoed back or logged.

use crate::jwt::JwtError;
use crate::media_type::MediaTypeError;
use crate::params::ParamsError;

/// Why a token request is malformed, ambiguous or unsupported (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidRequest {
    QueryMalformed,
    CredentialsInQuery,
    ContentTypeMissing,
    ContentType(MediaTypeError),
    Body(ParamsError),
    GrantTypeMissing,
    TwoAuthenticationMethods,
    BasicMalformed,
}

impl InvalidRequest {
    pub fn description(self) -> &'static str {
        match self {
            Self::QueryMalformed => "the query string is malformed",
            Self::CredentialsInQuery => "client credentials must not be sent in the query string",
            Self::ContentTypeMissing => "the Content-Type header is required",
            Self::ContentType(e) => e.description(),
            Self::Body(e) => e.description(),
            Self::GrantTypeMissing => "the grant_type parameter is required",
            Self::TwoAuthenticationMethods => "use only one client authentication method: Basic or the request body",
            Self::BasicMalformed => "the Basic credentials are malformed",
        }
    }
}

/// Why client authentication failed (401). One description for every
/// failure of presented credentials, so none tells which part was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidClient {
    /// No client id or no secret.
    NoCredentials,
    /// An `Authorization` scheme other than Basic.
    NotBasic,
    /// Unknown client id, wrong secret, disabled profile, or an id longer
    /// than any profile's.
    Failed,
}

impl InvalidClient {
    pub fn description(self) -> &'static str {
        match self {
            Self::NoCredentials => "client credentials are required",
            Self::NotBasic => "the token endpoint accepts only HTTP Basic client authentication",
            Self::Failed => "client authentication failed",
        }
    }
}

/// A token endpoint failure (RFC 6749 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Anything but POST. 405 with `Allow: POST`.
    MethodNotAllowed,
    /// Malformed, ambiguous or unsupported request (400).
    InvalidRequest(InvalidRequest),
    /// Body larger than the configured limit (413, still `invalid_request`).
    BodyTooLarge,
    /// `grant_type` present but not `client_credentials` (400).
    UnsupportedGrantType,
    /// Client authentication failed (401). `basic` says whether the client
    /// tried HTTP Basic, which earns a `WWW-Authenticate: Basic` challenge.
    InvalidClient { cause: InvalidClient, basic: bool },
    /// No profile snapshot, or it is too old: refuse rather than mint on
    /// unknown data (503).
    Unavailable(&'static str),
    /// Too many failed authentications for this client id (or, for unknown
    /// client ids, this source): 429 with `Retry-After`, decided before the
    /// secret is looked at, so the right secret gets it too.
    LockedOut { retry_after: u64 },
}

impl TokenError {
    pub fn status(&self) -> u32 {
        match self {
            Self::MethodNotAllowed => 405,
            Self::InvalidRequest(_) | Self::UnsupportedGrantType => 400,
            Self::BodyTooLarge => 413,
            Self::InvalidClient { .. } => 401,
            Self::Unavailable(_) => 503,
            Self::LockedOut { .. } => 429,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed | Self::InvalidRequest(_) | Self::BodyTooLarge => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidClient { .. } => "invalid_client",
            // RFC 6749 §5.2 has no code for throttling; this is the one
            // client libraries map to "try again later".
            Self::Unavailable(_) | Self::LockedOut { .. } => "temporarily_unavailable",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "the token endpoint accepts only POST",
            Self::InvalidRequest(cause) => cause.description(),
            Self::InvalidClient { cause, .. } => cause.description(),
            Self::Unavailable(d) => d,
            Self::BodyTooLarge => "the request body exceeds the configured limit",
            Self::UnsupportedGrantType => "only grant_type=client_credentials is supported",
            Self::LockedOut { .. } => "too many failed client authentications; retry later",
        }
    }
}

/// A bearer guard failure (RFC 6750 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerError {
    /// No bearer credentials at all: 401 with a bare challenge (§3.1 says no
    /// error code in that case).
    Missing,
    /// Present but unusable: malformed, wrong algorithm, unknown key, bad
    /// signature, expired, not yet valid, revoked (401).
    InvalidToken(JwtError),
    /// Valid token, but the path is outside the profile's allowed prefixes (403).
    InsufficientScope,
    /// No profile snapshot, or it is too old (503).
    Unavailable(&'static str),
}

impl BearerError {
    pub fn status(&self) -> u32 {
        match self {
            Self::Missing | Self::InvalidToken(_) => 401,
            Self::InsufficientScope => 403,
            Self::Unavailable(_) => 503,
        }
    }

    /// The error code, in the challenge and the JSON body. RFC 6750 §3.1: a
    /// request without credentials gets none, only the challenge.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::InvalidToken(_) => Some("invalid_token"),
            Self::InsufficientScope => Some("insufficient_scope"),
            Self::Unavailable(_) => Some("temporarily_unavailable"),
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "a bearer access token is required",
            Self::InvalidToken(cause) => cause.description(),
            Self::Unavailable(d) => d,
            Self::InsufficientScope => "the access token does not grant access to this path",
        }
    }
}
