//! The Oracle Primavera Administration connector (`https://<host>/cloudapi/restapi`, HTTP
//! Basic): users are created, modified and deleted through jobs (`POST /user` with a
//! `UserDataStore`, then `GET /user/status/{jobId}` until it answers 200), enabled and disabled
//! through `PUT /user/change-status`, listed with `GET /user`.
//!
//! # Jobs
//!
//! - One job at a time per target: every job (submit + polling) runs under one lock
//!   ([`PrimaveraConnector::job`]), whatever the engine runs concurrently. A submit the server
//!   refuses because another job runs (409, or a 400 whose body says a job is running or in
//!   progress — [`busy`]) waits and is sent again, until `job_timeout`.
//! - Creates are batched by the engine (`create_many`, `batch_size` per job). Updates and role
//!   changes arrive one account at a time, concurrently: they are gathered into `modified`
//!   jobs ([`ModifyQueue`]): calls arriving within [`GATHER_WINDOW`] (or until `batch_size`)
//!   share one job, and each caller gets its own user's result.
//! - Polling starts at `job_poll_interval` and doubles up to [`MAX_POLL_INTERVAL`]. A job that
//!   has not finished `job_timeout` after it was submitted fails its operations with an
//!   `Unavailable` error naming the job (their outcome is unknown: updates, role changes and
//!   deletes are re-planned by the next run; a create is looked up first — see
//!   [`PrimaveraConnector::confirm_added`]). `settle_time` is `job_timeout`, so that after a
//!   crash the engine keeps looking for a sent create until its job would have finished instead
//!   of submitting it again.
//!
//! # Assumptions where the contract is silent
//!
//! Each is kept in one place:
//! - **Modifications** (`wire::user_body`): a `modified` user is sent whole (id, every mapped
//!   field, `organization`, `disabled`) because the `User` schema marks those fields required;
//!   `roles` is sent only by a role change (a user without `roles` keeps its roles). A role
//!   change of an account whose fields this process has not seen lists the users first
//!   (`GET /user`, once per job).
//! - **Deletions** (`wire::delete_item`): `{loginId, id}`. A deletion that fails for a user the
//!   server no longer has is a success (the engine's rule).
//! - **Results** (`wire::outcome`): users are matched by `id`, else by `loginId`
//!   (case-insensitive). A user absent from its list failed, with the parts of
//!   `exception`/`message` that name it (or all of them); duplicate wording on an addition is
//!   a `Conflict`. `statusInfo` is a note unless `statusInfoOK` is true.
//! - **Change-status** ([`PrimaveraConnector::change_status`]): an id missing from the answer
//!   (or answered with a non-empty text) is checked against `GET /user`: a user that already
//!   has the wanted status succeeded (the server may leave unchanged users out), a user the
//!   server does not have is `NotFound`, anything else failed.
//! - **Lookup** ([`Connector::find_account`]): `GET /user/{loginId}`, 404 meaning absent.

pub mod settings;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use url::Url;

use crate::connector::TargetConfig;
use crate::connector::api::{
    Capabilities, Connector, Created, OpError, RemoteAccount, RoleSemantics, StatusAction,
    StatusItem,
};
use crate::connector::http::{HttpClient, HttpError, Request, Response, UrlBuilder};
use crate::mapping::Account;
use crate::model::email_eq;
use crate::plan::FieldChange;
use crate::secret::Secret;
use settings::PrimaveraSettings;

use wire::{ListKind, Sent, UserOutcome};

/// How long concurrent updates / role changes are gathered into one `modified` job.
pub const GATHER_WINDOW: Duration = Duration::from_millis(50);
/// The longest delay between two polls of a job's status.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// What is known of a user's fields on the server (to send a role change as a whole user).
#[derive(Debug, Clone)]
struct Known {
    fields: BTreeMap<String, String>,
    enabled: bool,
}

/// One update or role change waiting for its `modified` job.
struct Pending {
    remote_id: String,
    /// The user's fields and status, when the caller knows them (an update).
    base: Option<Known>,
    /// A role change: the complete set.
    roles: Option<BTreeSet<String>>,
    reply: oneshot::Sender<Result<(), OpError>>,
}

#[derive(Default)]
struct QueueState {
    items: Vec<Pending>,
    /// A caller is gathering and running jobs for the queue.
    leader: bool,
}

/// Gathers concurrent modifications into jobs. The first caller of a window becomes the
/// leader: it waits [`GATHER_WINDOW`] (or until a batch is full), runs the job for everyone
/// queued, and keeps doing so until the queue is empty. No task is spawned.
#[derive(Default)]
struct ModifyQueue {
    state: Mutex<QueueState>,
    full: Notify,
}

impl ModifyQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a job gave no result.
struct JobFailure {
    error: OpError,
    /// The job may have been applied (or may still be running).
    maybe_applied: bool,
}

/// The Primavera connector of one target.
pub struct PrimaveraConnector {
    http: HttpClient,
    base: Url,
    username: String,
    password: Secret,
    batch_size: usize,
    job_timeout: Duration,
    poll_interval: Duration,
    /// Held while a job is submitted and polled: one job at a time.
    jobs: tokio::sync::Mutex<()>,
    modify: ModifyQueue,
    /// Remote id → the user's fields as last sent or listed.
    known: Mutex<HashMap<String, Known>>,
}

impl fmt::Debug for PrimaveraConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimaveraConnector")
            .field("http", &self.http)
            .field("base", &self.base.as_str())
            .field("username", &self.username)
            .field("batch_size", &self.batch_size)
            .field("job_timeout", &self.job_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Whether a submit was refused because another job is running (409, or a 400 saying so).
fn busy(e: &HttpError) -> bool {
    match e.status() {
        Some(409) => true,
        Some(400) => e.body().is_some_and(|b| {
            let lc = b.to_lowercase();
            lc.contains("job") && (lc.contains("running") || lc.contains("in progress"))
        }),
        _ => false,
    }
}

/// Whether a failed submit may nevertheless have started a job.
fn maybe_sent(e: &HttpError) -> bool {
    match e {
        HttpError::Transport { not_sent, .. } => !not_sent,
        HttpError::Status { status, .. } => *status >= 500,
        HttpError::Decode { .. } => true,
        _ => false,
    }
}

impl PrimaveraConnector {
    /// A connector for `target` (base URL, username/password, HTTP settings, `batch_size`,
    /// `job_timeout`, `job_poll_interval`). Nothing is sent until the first call.
    pub fn new(
        target: &TargetConfig,
        s: &PrimaveraSettings,
    ) -> Result<PrimaveraConnector, HttpError> {
        let missing = |what: &str| HttpError::Setup {
            target: target.name.clone(),
            message: format!("primavera needs the setting {what}"),
        };
        let username = Some(s.username.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("username"))?;
        let password = super::read_secret(target, &s.password)?;
        let http = HttpClient::new(&target.name, &target.http)?;
        Ok(PrimaveraConnector {
            http,
            base: target.base_url.clone(),
            username,
            password,
            batch_size: target.batch_size.max(1),
            job_timeout: s.job_timeout,
            poll_interval: s.job_poll_interval.max(Duration::from_millis(10)),
            jobs: tokio::sync::Mutex::new(()),
            modify: ModifyQueue::default(),
            known: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self, path: &str, id: Option<&str>) -> Result<Url, OpError> {
        let mut b = UrlBuilder::new(&self.base).path(path);
        if let Some(id) = id {
            b = b.id(id);
        }
        Ok(self.http.url(b)?)
    }

    fn authed(&self, req: Request) -> Request {
        req.basic_auth(&self.username, self.password.clone())
    }

    fn known(&self) -> MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one job: submits `body` (waiting while another job runs), then polls its status
    /// until it is done or `job_timeout` has passed. Holds the job lock throughout.
    async fn job(&self, body: Value) -> Result<(String, wire::JobResult), JobFailure> {
        let not_applied = |error: OpError| JobFailure {
            error,
            maybe_applied: false,
        };
        let submit_url = self.url("user", None).map_err(not_applied)?;
        let _one_job = self.jobs.lock().await;
        let started = Instant::now();
        let mut delay = self.poll_interval;
        let resp = loop {
            let req = self.authed(Request::post(submit_url.clone()).json(body.clone()));
            match self.http.send(req).await {
                Ok(r) => break r,
                Err(e) if busy(&e) && started.elapsed() + delay < self.job_timeout => {
                    tracing::info!(target = %self.http.target(), delay_ms = delay.as_millis() as u64, "another user job is running; waiting to submit");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_POLL_INTERVAL);
                }
                Err(e) if busy(&e) => {
                    // Not a conflict of the users sent: nothing was submitted.
                    return Err(not_applied(OpError::Unavailable {
                        message: format!(
                            "another user job was still running after the job_timeout of {}, \
                             so nothing was submitted: {e}",
                            humantime::format_duration(self.job_timeout)
                        ),
                    }));
                }
                Err(e) => {
                    let maybe_applied = maybe_sent(&e);
                    return Err(JobFailure {
                        error: e.into(),
                        maybe_applied,
                    });
                }
            }
        };
        let location = resp
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        let Some(job) = wire::job_id(&resp.body, location) else {
            return Err(JobFailure {
                error: OpError::Unavailable {
                    message: format!(
                        "POST /user answered HTTP {} without a job id: {}",
                        resp.status,
                        crate::connector::http::truncate_body(&resp.body)
                    ),
                },
                maybe_applied: true,
            });
        };
        tracing::debug!(target = %self.http.target(), job = %job, "user job submitted");
        let submitted = Instant::now();
        let status_url = self
            .url("user/status", Some(&job))
            .map_err(|error| JobFailure {
                error,
                maybe_applied: true,
            })?;
        let mut delay = self.poll_interval;
        loop {
            let left = self.job_timeout.saturating_sub(submitted.elapsed());
            if left.is_zero() {
                return Err(JobFailure {
                    error: OpError::Unavailable {
                        message: format!(
                            "user job {job} did not finish within the job_timeout of {} \
                             (GET /user/status/{job} still answers 202); its outcome is \
                             unknown and the next run reconciles it",
                            humantime::format_duration(self.job_timeout)
                        ),
                    },
                    maybe_applied: true,
                });
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(MAX_POLL_INTERVAL);
            let resp = self
                .http
                .send(self.authed(Request::get(status_url.clone())))
                .await
                .map_err(|e| JobFailure {
                    error: job_context(e.into(), &job),
                    maybe_applied: true,
                })?;
            if resp.status == 202 {
                continue;
            }
            let result = parse_job(&resp).map_err(|error| JobFailure {
                error: job_context(error, &job),
                maybe_applied: true,
            })?;
            tracing::debug!(target = %self.http.target(), job = %job, "user job done");
            return Ok((job, result));
        }
    }

    /// After a create job with an unknown outcome: the users the server has are created (with
    /// a note), the others fail with `error`.
    async fn confirm_added(
        &self,
        accounts: &[Account],
        error: &OpError,
    ) -> Vec<Result<Created, OpError>> {
        let listed = match self.list_accounts().await {
            Ok(l) => l,
            Err(_) => return accounts.iter().map(|_| Err(error.clone())).collect(),
        };
        accounts
            .iter()
            .map(|a| {
                let login = a.fields.get("loginId");
                let found = login.and_then(|l| {
                    listed
                        .iter()
                        .find(|r| r.login.as_deref().is_some_and(|x| email_eq(x, l)))
                });
                match found {
                    Some(r) => Ok(Created {
                        remote_id: r.remote_id.clone(),
                        note: Some(format!(
                            "the job's outcome was not known ({error}), but the user is on the \
                             server"
                        )),
                    }),
                    None => Err(error.clone()),
                }
            })
            .collect()
    }

    /// One `added` job for at most `batch_size` accounts.
    async fn create_batch(&self, accounts: &[Account]) -> Vec<Result<Created, OpError>> {
        let added: Vec<Value> = accounts
            .iter()
            .map(|a| wire::user_body(&a.fields, true, None, Some(&a.roles)))
            .collect();
        let (job, result) = match self.job(wire::store_body(added, vec![], vec![])).await {
            Ok(r) => r,
            Err(f) if f.maybe_applied => return self.confirm_added(accounts, &f.error).await,
            Err(f) => return accounts.iter().map(|_| Err(f.error.clone())).collect(),
        };
        accounts
            .iter()
            .map(|a| {
                let sent = Sent {
                    kind: ListKind::Added,
                    login: a.fields.get("loginId").cloned(),
                    id: None,
                };
                match wire::outcome(&job, &result, &sent) {
                    UserOutcome::Done { user, note } => match wire::user_id(&user) {
                        Some(remote_id) => {
                            self.known().insert(
                                remote_id.clone(),
                                Known {
                                    fields: a.fields.clone(),
                                    enabled: true,
                                },
                            );
                            Ok(Created { remote_id, note })
                        }
                        None => Err(OpError::Unavailable {
                            message: format!(
                                "job {job}: the user was created but the result has no id for it"
                            ),
                        }),
                    },
                    UserOutcome::Failed(e) => Err(e),
                }
            })
            .collect()
    }

    /// Queues a modification and waits for its job (see [`ModifyQueue`]).
    async fn modify(
        &self,
        remote_id: &str,
        base: Option<Known>,
        roles: Option<BTreeSet<String>>,
    ) -> Result<(), OpError> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut st = self.modify.lock();
            st.items.push(Pending {
                remote_id: remote_id.to_string(),
                base,
                roles,
                reply,
            });
            if st.items.len() >= self.batch_size {
                self.modify.full.notify_one();
            }
            !std::mem::replace(&mut st.leader, true)
        };
        if lead {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(GATHER_WINDOW) => {}
                    () = self.modify.full.notified() => {}
                }
                let batch: Vec<Pending> = {
                    let mut st = self.modify.lock();
                    let n = st.items.len().min(self.batch_size);
                    st.items.drain(..n).collect()
                };
                if !batch.is_empty() {
                    self.modify_batch(batch).await;
                }
                let mut st = self.modify.lock();
                if st.items.is_empty() {
                    st.leader = false;
                    break;
                }
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(OpError::Unavailable {
                message: "the modification was not sent (its batch was abandoned)".into(),
            })
        })
    }

    /// Runs one `modified` job for queued modifications and answers each caller.
    async fn modify_batch(&self, batch: Vec<Pending>) {
        let need_lookup = batch
            .iter()
            .any(|p| p.base.is_none() && !self.known().contains_key(&p.remote_id));
        let listed: Option<Result<Vec<RemoteAccount>, OpError>> = if need_lookup {
            Some(self.list_accounts().await)
        } else {
            None
        };
        let mut jobs: Vec<(Pending, Known)> = Vec::new();
        for p in batch {
            let base = p
                .base
                .clone()
                .or_else(|| self.known().get(&p.remote_id).cloned());
            let base = match (base, &listed) {
                (Some(b), _) => b,
                (None, Some(Err(e))) => {
                    let _ = p.reply.send(Err(e.clone()));
                    continue;
                }
                (None, _) => {
                    let _ = p.reply.send(Err(OpError::NotFound {
                        message: format!(
                            "the server has no user with id {} (GET /user)",
                            p.remote_id
                        ),
                    }));
                    continue;
                }
            };
            jobs.push((p, base));
        }
        if jobs.is_empty() {
            return;
        }
        let modified: Vec<Value> = jobs
            .iter()
            .map(|(p, b)| {
                wire::user_body(&b.fields, b.enabled, Some(&p.remote_id), p.roles.as_ref())
            })
            .collect();
        match self.job(wire::store_body(vec![], modified, vec![])).await {
            Ok((job, result)) => {
                for (p, b) in jobs {
                    let sent = Sent {
                        kind: ListKind::Modified,
                        login: b.fields.get("loginId").cloned(),
                        id: Some(p.remote_id.clone()),
                    };
                    let r = match wire::outcome(&job, &result, &sent) {
                        UserOutcome::Done { .. } => {
                            self.known().insert(p.remote_id.clone(), b);
                            Ok(())
                        }
                        UserOutcome::Failed(e) => Err(e),
                    };
                    let _ = p.reply.send(r);
                }
            }
            Err(f) => {
                for (p, _) in jobs {
                    let _ = p.reply.send(Err(f.error.clone()));
                }
            }
        }
    }

    /// One `deleted` job for at most `batch_size` accounts.
    async fn delete_batch(&self, items: &[StatusItem]) -> Vec<Result<(), OpError>> {
        let deleted: Vec<Value> = items
            .iter()
            .map(|i| wire::delete_item(i.login.as_deref(), &i.remote_id))
            .collect();
        let (job, result) = match self.job(wire::store_body(vec![], vec![], deleted)).await {
            Ok(r) => r,
            Err(f) => return items.iter().map(|_| Err(f.error.clone())).collect(),
        };
        let mut out: Vec<Result<(), OpError>> = items
            .iter()
            .map(|i| {
                let sent = Sent {
                    kind: ListKind::Deleted,
                    login: i.login.clone(),
                    id: Some(i.remote_id.clone()),
                };
                match wire::outcome(&job, &result, &sent) {
                    UserOutcome::Done { .. } => Ok(()),
                    UserOutcome::Failed(e) => Err(e),
                }
            })
            .collect();
        if out.iter().any(Result::is_err)
            && let Ok(listed) = self.list_accounts().await
        {
            for (i, r) in items.iter().zip(out.iter_mut()) {
                if r.is_err() && !listed.iter().any(|a| a.remote_id == i.remote_id) {
                    *r = Ok(());
                }
            }
        }
        for (i, r) in items.iter().zip(&out) {
            if r.is_ok() {
                self.known().remove(&i.remote_id);
            }
        }
        out
    }

    /// One `PUT /user/change-status` for at most `batch_size` accounts.
    async fn change_status(
        &self,
        items: &[StatusItem],
        disabled: bool,
    ) -> Vec<Result<(), OpError>> {
        let fail_all = |e: OpError| items.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
        let url = match self.url("user/change-status", None) {
            Ok(u) => u,
            Err(e) => return fail_all(e),
        };
        let pairs: Vec<(Option<&str>, &str)> = items
            .iter()
            .map(|i| (i.login.as_deref(), i.remote_id.as_str()))
            .collect();
        let req = self.authed(Request::put(url).json(wire::status_body(&pairs, disabled)));
        let resp = match self.http.send(req).await {
            Ok(r) => r,
            Err(e) => return fail_all(e.into()),
        };
        let answer = match resp
            .json::<Value>()
            .map_err(OpError::from)
            .and_then(|v| wire::status_answer(&v).map_err(|m| resp.decode_error(m).into()))
        {
            Ok(a) => a,
            Err(e) => return fail_all(e),
        };
        let mut out: Vec<Result<(), OpError>> = items
            .iter()
            .map(|i| match answer.get(&i.remote_id).map(String::as_str) {
                Some("") => Ok(()),
                Some(text) => Err(OpError::Rejected {
                    status: resp.status,
                    message: format!("change-status answered for id {}: {text}", i.remote_id),
                }),
                None => Err(OpError::Rejected {
                    status: resp.status,
                    message: format!(
                        "the change-status answer has no entry for id {} (user {})",
                        i.remote_id,
                        i.login.as_deref().unwrap_or("?")
                    ),
                }),
            })
            .collect();
        if out.iter().any(Result::is_err) {
            match self.list_accounts().await {
                Ok(listed) => {
                    for (i, r) in items.iter().zip(out.iter_mut()) {
                        if r.is_ok() {
                            continue;
                        }
                        match listed.iter().find(|a| a.remote_id == i.remote_id) {
                            Some(a) if a.enabled != disabled => *r = Ok(()),
                            Some(_) => {}
                            None => {
                                *r = Err(OpError::NotFound {
                                    message: format!(
                                        "the server has no user with id {}",
                                        i.remote_id
                                    ),
                                })
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(target = %self.http.target(), error = %e, "could not check users missing from the change-status answer");
                }
            }
        }
        for (i, r) in items.iter().zip(&out) {
            if r.is_ok()
                && let Some(k) = self.known().get_mut(&i.remote_id)
            {
                k.enabled = !disabled;
            }
        }
        out
    }

    /// Role names from `roles` that the tenant does not have (`GET /roles`), for
    /// `dirsync check`.
    pub async fn validate_roles(&self, roles: &[String]) -> Result<Vec<String>, OpError> {
        let resp = self
            .http
            .send(self.authed(Request::get(self.url("roles", None)?)))
            .await?;
        let body: Value = resp.json()?;
        let known = wire::role_names(&body).map_err(|m| OpError::from(resp.decode_error(m)))?;
        Ok(roles
            .iter()
            .filter(|r| !known.iter().any(|k| k == *r))
            .cloned()
            .collect())
    }
}

fn parse_job(resp: &Response) -> Result<wire::JobResult, OpError> {
    let body: Value = resp.json()?;
    wire::job_result(&body).map_err(|m| OpError::from(resp.decode_error(m)))
}

/// The same error, saying which job it is about.
fn job_context(e: OpError, job: &str) -> OpError {
    e.map_message(|m| format!("user job {job} (outcome unknown; the next run reconciles): {m}"))
}

#[async_trait::async_trait]
impl Connector for PrimaveraConnector {
    /// Nothing: every request carries the credentials (HTTP Basic), so the first job's 401 or
    /// refused connection is the target-fatal error that stops the target, and a read here
    /// would cost each run a request.
    async fn preflight(&self) -> Result<(), OpError> {
        Ok(())
    }

    async fn unknown_roles(&self, roles: &[String]) -> Result<Option<Vec<String>>, OpError> {
        self.validate_roles(roles).await.map(Some)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bulk_status_batch: Some(self.batch_size),
            bulk_create_batch: Some(self.batch_size),
            can_list: true,
            roles: RoleSemantics::Replace,
            settle_time: Some(self.job_timeout),
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        self.create_batch(std::slice::from_ref(account))
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(OpError::Unavailable {
                    message: "no result for this account".into(),
                })
            })
    }

    async fn create_many(&self, accounts: &[Account]) -> Vec<Result<Created, OpError>> {
        let mut out = Vec::with_capacity(accounts.len());
        for chunk in accounts.chunks(self.batch_size) {
            out.extend(self.create_batch(chunk).await);
        }
        out
    }

    async fn update(
        &self,
        remote_id: &str,
        changes: &[FieldChange],
        desired: &Account,
    ) -> Result<(), OpError> {
        if changes.is_empty() {
            return Ok(());
        }
        let base = Known {
            fields: desired.fields.clone(),
            enabled: desired.enabled,
        };
        self.modify(remote_id, Some(base), None).await
    }

    async fn set_roles(
        &self,
        remote_id: &str,
        _add: &[String],
        _remove: &[String],
        roles: &[String],
    ) -> Result<(), OpError> {
        let roles: BTreeSet<String> = roles.iter().cloned().collect();
        self.modify(remote_id, None, Some(roles)).await
    }

    async fn set_status(
        &self,
        action: StatusAction,
        items: &[StatusItem],
    ) -> Vec<Result<(), OpError>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.batch_size) {
            out.extend(match action {
                StatusAction::Enable => self.change_status(chunk, false).await,
                StatusAction::Disable => self.change_status(chunk, true).await,
                StatusAction::Delete => self.delete_batch(chunk).await,
            });
        }
        out
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        let resp = self
            .http
            .send(self.authed(Request::get(self.url("user", None)?)))
            .await?;
        let body: Value = resp.json()?;
        let all = wire::users(&body).map_err(|m| OpError::from(resp.decode_error(m)))?;
        let mut known = self.known();
        for a in &all {
            known.insert(
                a.remote_id.clone(),
                Known {
                    fields: a.fields.clone(),
                    enabled: a.enabled,
                },
            );
        }
        Ok(all)
    }

    async fn find_account(&self, login: &str) -> Result<Option<RemoteAccount>, OpError> {
        let url = self.url("user", Some(login))?;
        let resp = match self.http.send(self.authed(Request::get(url))).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body: Value = resp.json()?;
        let candidates: Vec<&Value> = match &body {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        Ok(candidates
            .into_iter()
            .filter_map(wire::remote_account)
            .find(|a| a.login.as_deref().is_some_and(|l| email_eq(l, login))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::connector::{HttpSettings, TargetKind, VendorSettings};
    use crate::mapping::{TargetMapping, UserFilter};

    fn target() -> TargetConfig {
        TargetConfig {
            name: "p6".into(),
            kind: TargetKind::Primavera,
            enabled: true,
            base_url: Url::parse("https://p6.example/cloudapi/restapi").unwrap(),
            mapping: TargetMapping {
                group_rules: vec![],
                default_groups: vec![],
                fields: vec![],
                role_rules: vec![],
                default_roles: vec![],
                filter: UserFilter::default(),
                login_field: "loginId".into(),
            },
            on_missing: Default::default(),
            delete_after: Duration::ZERO,
            http: HttpSettings::default(),
            batch_size: 200,
            recreate_deleted: false,
            vendor: VendorSettings::Primavera(PrimaveraSettings {
                username: "svc".into(),
                password: crate::secret::SecretRef::inline("target[0].password", "pw-hunter2"),
                job_timeout: Duration::from_secs(120),
                job_poll_interval: Duration::from_secs(1),
            }),
        }
    }

    /// The connector of a test target.
    fn connector(t: &TargetConfig) -> Result<PrimaveraConnector, HttpError> {
        match &t.vendor {
            VendorSettings::Primavera(s) => PrimaveraConnector::new(t, s),
            other => panic!("not a Primavera target: {other:?}"),
        }
    }

    fn settings(t: &mut TargetConfig) -> &mut PrimaveraSettings {
        match &mut t.vendor {
            VendorSettings::Primavera(s) => s,
            other => panic!("not a Primavera target: {other:?}"),
        }
    }

    #[test]
    fn capabilities_and_urls() {
        let c = connector(&target()).unwrap();
        assert_eq!(
            c.capabilities(),
            Capabilities {
                bulk_status_batch: Some(200),
                bulk_create_batch: Some(200),
                can_list: true,
                roles: RoleSemantics::Replace,
                settle_time: Some(Duration::from_secs(120)),
            }
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert_eq!(
            c.url("user", Some("a b/c@x")).unwrap().as_str(),
            "https://p6.example/cloudapi/restapi/user/a%20b%2Fc%40x"
        );
        assert_eq!(
            c.url("user/status", Some("40870")).unwrap().as_str(),
            "https://p6.example/cloudapi/restapi/user/status/40870"
        );
    }

    #[test]
    fn missing_credentials_are_named() {
        let mut t = target();
        settings(&mut t).password = crate::secret::SecretRef::inline("target[0].password", " ");
        let e = connector(&t).unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        let mut t = target();
        settings(&mut t).username = String::new();
        let e = connector(&t).unwrap_err();
        assert!(e.to_string().contains("username"), "{e}");
    }

    fn status(status: u16, body: &str) -> HttpError {
        HttpError::Status {
            target: "p6".into(),
            method: "POST".into(),
            path: "/user".into(),
            status,
            body: body.into(),
            attempts: 1,
        }
    }

    #[test]
    fn busy_and_maybe_sent() {
        assert!(busy(&status(409, "")));
        assert!(busy(&status(400, "Another user job is running")));
        assert!(!busy(&status(400, "loginId is required")));
        assert!(!busy(&status(500, "job running")));
        assert!(maybe_sent(&status(500, "")));
        assert!(!maybe_sent(&status(400, "")));
    }
}
