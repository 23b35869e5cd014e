//! Certificates replaced without a restart: the files are read again on a timer, and
//! new connections get a configuration built from the new files. Connections already
//! open keep the certificate they were made with.
//!
//! A file that does not load (half written, a key that does not match the new
//! certificate yet) keeps the configuration that works and logs an error once per
//! distinct content; the next tick tries again, so writing the certificate and then
//! the key, in either order, ends with both in use.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::ServerConfig;

use super::config::{build, PemFiles, ServerConfigs, TlsError, TlsOptions};

/// What one look at the files found.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The files are the ones in use.
    Unchanged,
    /// The files changed and the new configuration is in use.
    Reloaded,
    /// The files changed but do not load; the previous configuration stays in use.
    Failed(TlsError),
}

/// The TLS configuration of a running server, kept in step with its files.
pub struct TlsReloader {
    options: TlsOptions,
    configs: RwLock<ServerConfigs>,
    /// The contents the configuration in use was built from.
    loaded: Mutex<LoadedFiles>,
}

struct LoadedFiles {
    in_use: PemFiles,
    /// The last contents that failed to load, so a bad file is reported once.
    failed: Option<PemFiles>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads the files `options` names; they must load now (a server does not start
    /// without a certificate).
    pub fn load(options: TlsOptions) -> Result<TlsReloader, TlsError> {
        let files = PemFiles::read(&options)?;
        let configs = build(&files, &options)?;
        Ok(TlsReloader {
            options,
            configs: RwLock::new(configs),
            loaded: Mutex::new(LoadedFiles {
                in_use: files,
                failed: None,
            }),
        })
    }

    /// The options the files were named by.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    fn configs(&self) -> ServerConfigs {
        // A panic while swapping cannot leave a half-written value: the lock guards a
        // plain assignment.
        self.configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The configuration for the next gRPC connection.
    pub fn grpc_config(&self) -> Arc<ServerConfig> {
        self.configs().grpc
    }

    /// The configuration for the next HTTP connection.
    pub fn http_config(&self) -> Arc<ServerConfig> {
        self.configs().http
    }

    /// Reads the files again and, if they changed and load, puts them in use.
    pub fn check(&self) -> ReloadOutcome {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let files = match PemFiles::read(&self.options) {
            Ok(files) => files,
            // A file missing for a moment (replaced by a rename) is not news each tick.
            Err(error) => return ReloadOutcome::Failed(error),
        };
        if files == loaded.in_use {
            loaded.failed = None;
            return ReloadOutcome::Unchanged;
        }
        match build(&files, &self.options) {
            Ok(configs) => {
                *self.configs.write().unwrap_or_else(PoisonError::into_inner) = configs;
                loaded.in_use = files;
                loaded.failed = None;
                ReloadOutcome::Reloaded
            }
            Err(error) => {
                if loaded.failed.as_ref() == Some(&files) {
                    return ReloadOutcome::Unchanged;
                }
                loaded.failed = Some(files);
                ReloadOutcome::Failed(error)
            }
        }
    }

    /// Checks the files every `reload_interval` until `stop` resolves, logging what
    /// changed. Never logs the files' contents.
    pub async fn watch(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.options.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        let mut missing_reported = false;
        loop {
            tokio::select! {
                () = stop.as_mut() => return,
                _ = ticks.tick() => {}
            }
            // Reading two or three small files: short enough for a runtime thread.
            match self.check() {
                ReloadOutcome::Unchanged => missing_reported = false,
                ReloadOutcome::Reloaded => {
                    missing_reported = false;
                    tracing::info!(
                        cert = %self.options.cert.display(),
                        key = %self.options.key.display(),
                        ca = ?self.options.ca,
                        "TLS certificate files changed: new connections use them"
                    );
                }
                ReloadOutcome::Failed(TlsError::Read { .. }) if missing_reported => {}
                ReloadOutcome::Failed(error) => {
                    missing_reported = matches!(error, TlsError::Read { .. });
                    tracing::error!(
                        %error,
                        cert = %self.options.cert.display(),
                        key = %self.options.key.display(),
                        "TLS certificate files changed but do not load: keeping the previous certificate"
                    );
                }
            }
        }
    }
}
