//! Turning what a client presents (an `authorization` header, a TLS client
//! certificate) into a [`Principal`], the same way on both APIs.
//!
//! - `Basic base64(login:password)`: what the KurrentDB clients send in the gRPC
//!   `authorization` metadata, and HTTP clients in the header.
//! - `Bearer strata_<id>_<secret>`: a [token](super::tokens).
//! - A client certificate (verified by the TLS handshake against `--tls-ca`) whose
//!   subject common name is a login: used when no `authorization` is sent.
//!
//! A password check is an Argon2id hash (tens of milliseconds), so successful logins
//! are cached per credential: the next request with the same login and password costs
//! an HMAC. The cache re-reads the user record every [`RECHECK`], so a password
//! change, a disabled or deleted user, or a revoked token made on another server takes
//! effect within that time (on this server, at once: [`Authenticator::forget`]).
//!
//! Every failure looks the same to the client (unknown user, wrong password, disabled
//! user, bad token): the reason only goes to the audit log. An address that keeps
//! failing is answered more and more slowly ([`Throttle`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::hmac;
use ring::rand::SystemRandom;
use rustls_pki_types::CertificateDer;

use super::principal::{AuthMethod, Principal, UserIdentity};
use super::tokens::{self, Tokens};
use super::users::Users;

/// How long a cached login is trusted before the user record is read again.
pub const RECHECK: Duration = Duration::from_secs(2);
/// The most cached logins; past it the cache starts over.
pub const CACHE_ENTRIES_MAX: usize = 10_000;
/// The longest `authorization` value read, in bytes.
pub const AUTHORIZATION_BYTES_MAX: usize = 4096;

/// Why authentication failed. Clients are told only that it failed; this goes to the
/// audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The `authorization` value is not `Basic …` or `Bearer …`, or does not decode.
    Malformed,
    /// No such user.
    UnknownUser,
    /// The password does not match.
    WrongPassword,
    /// The user is disabled.
    Disabled,
    /// The token is unknown or its secret does not match.
    BadToken,
    /// The token expired.
    ExpiredToken,
    /// The token was revoked.
    RevokedToken,
    /// A client certificate names no user (or one that cannot log in).
    UnknownCertificateUser,
    /// The user records could not be read.
    Unavailable,
}

impl FailureReason {
    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            FailureReason::Malformed => "malformed",
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::WrongPassword => "wrong_password",
            FailureReason::Disabled => "disabled",
            FailureReason::BadToken => "bad_token",
            FailureReason::ExpiredToken => "expired_token",
            FailureReason::RevokedToken => "revoked_token",
            FailureReason::UnknownCertificateUser => "unknown_certificate_user",
            FailureReason::Unavailable => "unavailable",
        }
    }
}

/// Authentication failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthFailure {
    /// Why (for the audit log only).
    pub reason: FailureReason,
    /// The login tried, if one was given.
    pub login: Option<String>,
    /// The method tried.
    pub method: AuthMethod,
}

/// What a client presented.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The `authorization` header or metadata value.
    pub authorization: Option<&'a [u8]>,
    /// The leaf of the client's verified certificate chain.
    pub certificate: Option<&'a CertificateDer<'static>>,
}

enum Credentials {
    Basic { login: String, password: String },
    Bearer(String),
}

fn parse_authorization(value: &[u8]) -> Option<Credentials> {
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (login, password) = decoded.split_once(':')?;
        Some(Credentials::Basic {
            login: login.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Credentials::Bearer(rest.to_owned()))
    } else {
        None
    }
}

/// The login a client certificate names: its subject's common name.
pub fn certificate_login(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(name)
}

/// A login this server verified recently.
#[derive(Clone)]
struct CachedLogin {
    /// HMAC (with this process's random key) of the secret that was verified.
    proof: hmac::Tag,
    /// What the record said then: a different hash means the password changed.
    password_hash: String,
    identity: UserIdentity,
    checked_at: Instant,
}

/// Authenticates clients against the users and tokens of one store.
pub struct Authenticator {
    users: Users,
    tokens: Tokens,
    key: hmac::Key,
    cache: Mutex<HashMap<(AuthMethod, String), CachedLogin>>,
    throttle: Throttle,
}

impl std::fmt::Debug for Authenticator {
    // The cache holds password proofs and hashes: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cached_logins", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `users` and `tokens`.
    pub fn new(users: Users, tokens: Tokens) -> Authenticator {
        // An HMAC key that fails to generate falls back to a fixed key: the tags then
        // only lose their protection against someone reading this process's memory.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, b"strata-login-cache"));
        Authenticator {
            users,
            tokens,
            key,
            cache: Mutex::new(HashMap::new()),
            throttle: Throttle::default(),
        }
    }

    /// Drops what is cached for `login` (its password, groups or state changed).
    pub fn forget(&self, login: &str) {
        self.lock()
            .retain(|(_, cached), entry| cached != login && entry.identity.login != login);
    }

    /// Drops every cached login (a token was revoked).
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    /// The principal of a request from `peer`: a user if it presented valid
    /// credentials, anonymous if it presented none, an error if it presented invalid
    /// ones. `peer` is what the throttle counts failures by.
    pub async fn authenticate(
        &self,
        presented: Presented<'_>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, AuthFailure> {
        let attempt = match (presented.authorization, presented.certificate) {
            (None, None) => return Ok(Principal::Anonymous),
            (Some(value), _) => match parse_authorization(value) {
                None => Err(AuthFailure {
                    reason: FailureReason::Malformed,
                    login: None,
                    method: AuthMethod::Password,
                }),
                Some(Credentials::Basic { login, password }) => {
                    self.password(login, &password, peer).await
                }
                Some(Credentials::Bearer(token)) => self.token(&token, peer).await,
            },
            (None, Some(certificate)) => self.certificate(certificate).await,
        };
        match attempt {
            Ok(identity) => {
                if let Some(peer) = peer {
                    self.throttle.succeeded(peer);
                }
                Ok(Principal::User(identity))
            }
            Err(failure) => {
                // The next attempt from this address waits (see `password`, `token`).
                if let Some(peer) = peer {
                    self.throttle.failed(peer);
                }
                Err(failure)
            }
        }
    }

    async fn password(
        &self,
        login: String,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<UserIdentity, AuthFailure> {
        let fail = |reason| AuthFailure {
            reason,
            login: Some(login.clone()),
            method: AuthMethod::Password,
        };
        let proof = hmac::sign(&self.key, password.as_bytes());
        let key = (AuthMethod::Password, login.clone());
        let cached = self.lock().get(&key).cloned();
        if let Some(cached) = &cached {
            if cached.checked_at.elapsed() < RECHECK && tags_equal(&cached.proof, &proof) {
                return Ok(cached.identity.clone());
            }
        }
        // A throttled address waits before its guess is even checked.
        self.throttle.wait(peer).await;
        let record = match self.users.get(&login).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                // Spend what a real check costs, so that timing does not tell which
                // logins exist.
                let _ = self.users.hasher().verify(password, DUMMY_HASH).await;
                return Err(fail(FailureReason::UnknownUser));
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the user records to authenticate");
                return Err(fail(FailureReason::Unavailable));
            }
        };
        if record.disabled {
            self.forget(&login);
            return Err(fail(FailureReason::Disabled));
        }
        let same_as_cached = cached.as_ref().is_some_and(|cached| {
            cached.password_hash == record.password_hash && tags_equal(&cached.proof, &proof)
        });
        if !same_as_cached {
            match self
                .users
                .hasher()
                .verify(password, &record.password_hash)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Err(fail(FailureReason::WrongPassword)),
                Err(error) => {
                    tracing::error!(%error, user = %login, "cannot check a password");
                    return Err(fail(FailureReason::Unavailable));
                }
            }
        }
        let identity = UserIdentity {
            login: login.clone(),
            groups: record.groups.clone(),
            method: AuthMethod::Password,
        };
        self.remember(
            key,
            CachedLogin {
                proof,
                password_hash: record.password_hash,
                identity: identity.clone(),
                checked_at: Instant::now(),
            },
        );
        Ok(identity)
    }

    async fn token(&self, token: &str, peer: Option<IpAddr>) -> Result<UserIdentity, AuthFailure> {
        let fail = |reason, login: Option<String>| AuthFailure {
            reason,
            login,
            method: AuthMethod::Token,
        };
        let Some(presented) = tokens::parse(token) else {
            return Err(fail(FailureReason::BadToken, None));
        };
        let proof = hmac::sign(&self.key, presented.secret.as_bytes());
        let key = (AuthMethod::Token, presented.id.to_owned());
        if let Some(cached) = self.lock().get(&key).cloned() {
            if cached.checked_at.elapsed() < RECHECK && tags_equal(&cached.proof, &proof) {
                return Ok(cached.identity);
            }
        }
        self.throttle.wait(peer).await;
        let record = match self.tokens.get(presented.id).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(fail(FailureReason::BadToken, None)),
            Err(error) => {
                tracing::error!(%error, "cannot read the token records to authenticate");
                return Err(fail(FailureReason::Unavailable, None));
            }
        };
        let digest = tokens::digest(presented.secret);
        if !bytes_equal(digest.as_bytes(), record.secret_sha256.as_bytes()) {
            return Err(fail(FailureReason::BadToken, None));
        }
        let login = Some(record.login.clone());
        if record.revoked {
            return Err(fail(FailureReason::RevokedToken, login));
        }
        if record
            .expires_ms
            .is_some_and(|expires| super::users::now_ms() >= expires)
        {
            return Err(fail(FailureReason::ExpiredToken, login));
        }
        let user = self.user_for(&record.login, AuthMethod::Token).await?;
        let mut entry = CachedLogin {
            proof,
            password_hash: String::new(),
            identity: user,
            checked_at: Instant::now(),
        };
        // An expiring token is never trusted from the cache past its expiry.
        if let Some(expires) = record.expires_ms {
            let left = expires.saturating_sub(super::users::now_ms());
            if left < u64::try_from(RECHECK.as_millis()).unwrap_or(u64::MAX) {
                entry.checked_at = Instant::now()
                    .checked_sub(RECHECK.saturating_sub(Duration::from_millis(left)))
                    .unwrap_or_else(Instant::now);
            }
        }
        let identity = entry.identity.clone();
        self.remember(key, entry);
        Ok(identity)
    }

    async fn certificate(
        &self,
        certificate: &CertificateDer<'static>,
    ) -> Result<UserIdentity, AuthFailure> {
        let Some(login) = certificate_login(certificate) else {
            return Err(AuthFailure {
                reason: FailureReason::UnknownCertificateUser,
                login: None,
                method: AuthMethod::Certificate,
            });
        };
        let proof = hmac::sign(&self.key, certificate.as_ref());
        let key = (AuthMethod::Certificate, login.clone());
        if let Some(cached) = self.lock().get(&key).cloned() {
            if cached.checked_at.elapsed() < RECHECK && tags_equal(&cached.proof, &proof) {
                return Ok(cached.identity);
            }
        }
        let identity = self
            .user_for(&login, AuthMethod::Certificate)
            .await
            .map_err(|failure| AuthFailure {
                reason: match failure.reason {
                    FailureReason::UnknownUser => FailureReason::UnknownCertificateUser,
                    other => other,
                },
                ..failure
            })?;
        self.remember(
            key,
            CachedLogin {
                proof,
                password_hash: String::new(),
                identity: identity.clone(),
                checked_at: Instant::now(),
            },
        );
        Ok(identity)
    }

    /// The identity of an existing, enabled user.
    async fn user_for(&self, login: &str, method: AuthMethod) -> Result<UserIdentity, AuthFailure> {
        let fail = |reason| AuthFailure {
            reason,
            login: Some(login.to_owned()),
            method,
        };
        match self.users.get(login).await {
            Ok(Some(record)) if record.disabled => Err(fail(FailureReason::Disabled)),
            Ok(Some(record)) => Ok(UserIdentity {
                login: login.to_owned(),
                groups: record.groups,
                method,
            }),
            Ok(None) => Err(fail(FailureReason::UnknownUser)),
            Err(error) => {
                tracing::error!(%error, "cannot read the user records to authenticate");
                Err(fail(FailureReason::Unavailable))
            }
        }
    }

    fn remember(&self, key: (AuthMethod, String), entry: CachedLogin) {
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES_MAX && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.insert(key, entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AuthMethod, String), CachedLogin>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The users this authenticator reads.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The tokens this authenticator reads.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

fn tags_equal(a: &hmac::Tag, b: &hmac::Tag) -> bool {
    bytes_equal(a.as_ref(), b.as_ref())
}

/// Compares in time independent of where the inputs differ.
fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Argon2id hash of a random password, checked against when the user does not
/// exist, so that an unknown login takes as long to refuse as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c3RyYXRhLWR1bW15LXNhbHQ$0lfgOvuhCEHWnYRt7a4Z3cpBHxE0vCDMbG5Qv1HTLds";

/// Slows down addresses that keep failing to authenticate: after
/// [`Throttle::FREE_FAILURES`] failures within [`Throttle::WINDOW`], each further
/// attempt from the address waits twice as long as the one before, up to
/// [`Throttle::DELAY_MAX`]. A success clears the address. At most
/// [`Throttle::ADDRESSES_MAX`] addresses are tracked.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Throttle {
    /// Failures allowed before attempts are slowed.
    pub const FREE_FAILURES: u32 = 5;
    /// How long a failure is remembered.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// The longest wait.
    pub const DELAY_MAX: Duration = Duration::from_secs(5);
    /// The first wait.
    pub const DELAY_FIRST: Duration = Duration::from_millis(100);
    /// The most addresses tracked.
    pub const ADDRESSES_MAX: usize = 65_536;

    /// How long the next attempt from `peer` waits.
    pub fn delay(&self, peer: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&peer) {
            Some(f) if f.last.elapsed() < Self::WINDOW => Self::delay_for(f.count),
            _ => Duration::ZERO,
        }
    }

    fn delay_for(count: u32) -> Duration {
        if count < Self::FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (count - Self::FREE_FAILURES).min(16);
        Self::DELAY_FIRST
            .saturating_mul(1 << doublings)
            .min(Self::DELAY_MAX)
    }

    /// Waits as long as the next attempt from `peer` must (not at all for an unknown
    /// address).
    pub async fn wait(&self, peer: Option<IpAddr>) {
        let delay = peer.map_or(Duration::ZERO, |peer| self.delay(peer));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Records a failure from `peer`; returns how long its next attempt waits.
    pub fn failed(&self, peer: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= Self::ADDRESSES_MAX && !failures.contains_key(&peer) {
            failures.retain(|_, f| f.last.elapsed() < Self::WINDOW);
            if failures.len() >= Self::ADDRESSES_MAX {
                // Too many addresses failing at once to track another: every new one
                // waits the longest.
                return Self::DELAY_MAX;
            }
        }
        let entry = failures.entry(peer).or_insert(Failures {
            count: 0,
            last: Instant::now(),
        });
        if entry.last.elapsed() >= Self::WINDOW {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = Instant::now();
        Self::delay_for(entry.count)
    }

    /// Forgets `peer`'s failures.
    pub fn succeeded(&self, peer: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.is_empty() {
            failures.remove(&peer);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_and_bearer() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:change:it")
        );
        match parse_authorization(basic.as_bytes()) {
            Some(Credentials::Basic { login, password }) => {
                assert_eq!(login, "admin");
                assert_eq!(password, "change:it", "only the first ':' separates");
            }
            _ => panic!("not parsed"),
        }
        assert!(matches!(
            parse_authorization(b"bearer strata_x"),
            Some(Credentials::Bearer(t)) if t == "strata_x"
        ));
        for bad in [
            &b"Basic !!!"[..],
            b"Digest abc",
            b"Basic",
            b"\xff\xfe",
            b"Basic YWRtaW4=",
        ] {
            assert!(parse_authorization(bad).is_none(), "{bad:?}");
        }
        assert!(parse_authorization(&vec![b'a'; AUTHORIZATION_BYTES_MAX + 1]).is_none());
    }

    #[test]
    fn the_dummy_hash_is_a_valid_argon2id_hash() {
        argon2::password_hash::PasswordHash::new(DUMMY_HASH).unwrap();
    }

    #[test]
    fn throttle_doubles_after_free_failures_and_clears_on_success() {
        let throttle = Throttle::default();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..Throttle::FREE_FAILURES - 1 {
            assert_eq!(throttle.failed(peer), Duration::ZERO);
        }
        assert_eq!(throttle.failed(peer), Throttle::DELAY_FIRST);
        assert_eq!(throttle.failed(peer), Throttle::DELAY_FIRST * 2);
        for _ in 0..20 {
            throttle.failed(peer);
        }
        assert_eq!(throttle.delay(peer), Throttle::DELAY_MAX);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(throttle.delay(other), Duration::ZERO);
        throttle.succeeded(peer);
        assert_eq!(throttle.delay(peer), Duration::ZERO);
    }
}
